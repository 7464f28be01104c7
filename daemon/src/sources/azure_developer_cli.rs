//! AzureDeveloperCli: `azd auth token --output json --scope S [--tenant-id T]
//! --no-prompt`, through `azure_identity`'s `AzureDeveloperCliCredential`,
//! with a time limit and bounded output around it. `azd` takes several
//! scopes at once, so a multi-scope request is passed on as it is.

use std::sync::Arc;
use std::time::Duration;

use azbroker_proto::{Secret, ToolSpec};
use azure_core::credentials::TokenCredential;
use azure_identity::{AzureDeveloperCliCredential, AzureDeveloperCliCredentialOptions};

use super::process::{classify_tool_error, not_on_requesters_path, BoundedExecutor, ToolNames};
use super::{SourceError, SourceRequest, Token, TokenSource};

/// The Azure MCP Server's limit for `azd` (`docs/spec/authentication.md`, "Each credential").
pub const TIMEOUT: Duration = Duration::from_secs(13);

pub struct AzureDeveloperCliSource {
    timeout: Duration,
    /// Runs `azd` as the requester that defined this credential would.
    executor: Option<Arc<BoundedExecutor>>,
}

impl AzureDeveloperCliSource {
    pub fn new(spec: &ToolSpec, timeout: Duration) -> Self {
        AzureDeveloperCliSource {
            timeout,
            executor: spec
                .executable
                .is_some()
                .then(|| Arc::new(BoundedExecutor::new(spec))),
        }
    }
}

#[async_trait::async_trait]
impl TokenSource for AzureDeveloperCliSource {
    async fn acquire(&self, request: &SourceRequest) -> Result<Token, SourceError> {
        if request.claims.is_some() {
            // azure_identity 1.0 cannot hand azd a claims challenge.
            return Err(SourceError::failed(format!(
                "the Azure Developer CLI cannot satisfy a claims challenge through azbroker; sign in again with: azd auth login --scope {}",
                request.scopes.join(" --scope ")
            )));
        }
        let Some(executor) = &self.executor else {
            return Err(not_on_requesters_path(&NAMES));
        };
        // One credential object per acquisition: it carries the tenant, and it
        // is only a few fields (AzureDeveloperCliCredential has no cache).
        let credential =
            AzureDeveloperCliCredential::new(Some(AzureDeveloperCliCredentialOptions {
                tenant_id: request.tenant.clone(),
                executor: Some(executor.clone()),
            }))
            .map_err(|e| SourceError::failed(crate::error_chain::tidy(&e.to_string())))?;

        let scopes: Vec<&str> = request.scopes.iter().map(String::as_str).collect();
        let result = tokio::time::timeout(self.timeout, credential.get_token(&scopes, None)).await;
        match result {
            Err(_) => Err(SourceError::Timeout(format!(
                "azd auth token did not answer within {} s",
                self.timeout.as_secs()
            ))),
            Ok(Ok(token)) => Ok(Token {
                access_token: Secret::new(token.token.secret()),
                expires_on: token.expires_on.unix_timestamp(),
                refresh_in: None,
                tenant: super::token_tenant::known_or_claimed(
                    request.tenant.as_deref(),
                    token.token.secret(),
                ),
            }),
            Ok(Err(e)) => Err(classify(&e.to_string())),
        }
    }
}

const NAMES: ToolNames = ToolNames {
    product: "Azure Developer CLI",
    executable: "azd",
    login: "azd auth login",
    command: "azd auth token",
};

fn classify(message: &str) -> SourceError {
    classify_tool_error(message, &NAMES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_azd_errors() {
        assert!(matches!(
            classify("AzureDeveloperCliCredential authentication failed. azd not found on PATH\nTo troubleshoot, visit x"),
            SourceError::Unavailable(m) if m.contains("not found on PATH")
        ));
        assert!(matches!(
            classify("AzureDeveloperCliCredential authentication failed.\nERROR: not logged in, run `azd auth login` to login\n\nTo troubleshoot, visit x"),
            SourceError::Unavailable(m) if m.starts_with("Azure Developer CLI is not logged in: run 'azd auth login'")
        ));
        assert!(matches!(
            classify("AzureDeveloperCliCredential authentication failed.\nERROR: fetching token: AADSTS70043: The refresh token has expired. Run azd auth login\nTo troubleshoot, visit x"),
            SourceError::Failed { message, .. } if message.starts_with("ERROR: fetching token: AADSTS70043")
        ));
    }
}
