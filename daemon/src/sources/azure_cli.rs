//! AzureCli: `az account get-access-token`, through `azure_identity`'s
//! `AzureCliCredential`, with a time limit and bounded output around it.

use std::sync::Arc;
use std::time::Duration;

use azbroker_proto::{Secret, ToolSpec};
use azure_core::credentials::TokenCredential;
use azure_identity::{AzureCliCredential, AzureCliCredentialOptions};
use base64::Engine as _;

use super::process::{classify_tool_error, not_on_requesters_path, BoundedExecutor, ToolNames};
use super::{SourceError, SourceRequest, Token, TokenSource};
use azbroker_proto::resource;

/// The Azure MCP Server's limit for `az` (`docs/spec/authentication.md`, "Each credential").
pub const TIMEOUT: Duration = Duration::from_secs(13);

/// Why a request for several scopes is not for `az` (see [`TokenSource::unsupported`]).
const ONE_SCOPE: &str =
    "AzureCliCredential takes exactly one scope per token; ask for each scope separately";

pub struct AzureCliSource {
    timeout: Duration,
    /// Runs `az` as the requester that defined this credential would.
    executor: Option<Arc<BoundedExecutor>>,
}

impl AzureCliSource {
    pub fn new(spec: &ToolSpec, timeout: Duration) -> Self {
        AzureCliSource {
            timeout,
            executor: spec
                .executable
                .is_some()
                .then(|| Arc::new(BoundedExecutor::new(spec))),
        }
    }
}

#[async_trait::async_trait]
impl TokenSource for AzureCliSource {
    fn unsupported(&self, request: &SourceRequest) -> Option<String> {
        (request.scopes.len() != 1).then(|| ONE_SCOPE.into())
    }

    async fn acquire(&self, request: &SourceRequest) -> Result<Token, SourceError> {
        let [scope] = request.scopes.as_slice() else {
            return Err(SourceError::failed(ONE_SCOPE));
        };
        let scope = resource::to_default_scope(scope);
        if let Some(claims) = &request.claims {
            // Requests carry claims decoded (Azure.Identity's convention);
            // `az login --claims-challenge` takes them base64-encoded.
            let encoded = base64::engine::general_purpose::STANDARD.encode(claims);
            return Err(SourceError::failed(format!(
                "the Azure CLI cannot satisfy a claims challenge by itself; run: az login --claims-challenge \"{encoded}\" --scope {scope}"
            )));
        }
        let Some(executor) = &self.executor else {
            return Err(not_on_requesters_path(&NAMES));
        };
        // One credential object per acquisition: it carries the tenant, and it
        // is only a few fields (AzureCliCredential has no cache to keep).
        let credential = AzureCliCredential::new(Some(AzureCliCredentialOptions {
            tenant_id: request.tenant.clone(),
            executor: Some(executor.clone()),
            ..Default::default()
        }))
        .map_err(|e| SourceError::failed(e.to_string()))?;

        let result =
            tokio::time::timeout(self.timeout, credential.get_token(&[&scope], None)).await;
        match result {
            Err(_) => Err(SourceError::Timeout(format!(
                "az account get-access-token did not answer within {} s",
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
    product: "Azure CLI",
    executable: "az",
    login: "az login",
    command: "az account get-access-token",
};

fn classify(message: &str) -> SourceError {
    classify_tool_error(message, &NAMES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_scopes_are_unsupported_by_construction() {
        let source = AzureCliSource::new(&ToolSpec::default(), TIMEOUT);
        let request = |scopes: &[&str]| SourceRequest {
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            tenant: None,
            claims: None,
            interactive: true,
        };
        let arm = "https://management.azure.com/.default";
        assert_eq!(source.unsupported(&request(&[arm])), None);
        let two = source.unsupported(&request(&[arm, "https://vault.azure.net/.default"]));
        assert!(two.is_some_and(|reason| reason.contains("exactly one scope")));
    }

    #[test]
    fn classifies_cli_errors() {
        assert!(matches!(
            classify("AzureCliCredential authentication failed. az not found on PATH\nTo troubleshoot, visit x"),
            SourceError::Unavailable(m) if m.contains("not found")
        ));
        assert!(matches!(
            classify("AzureCliCredential authentication failed. ERROR: Please run 'az login' to setup account.\n"),
            SourceError::Unavailable(m) if m.contains("az login")
        ));
        assert!(matches!(
            classify("AzureCliCredential authentication failed. ERROR: AADSTS70043: The refresh token has expired\nTo troubleshoot, visit x"),
            SourceError::Failed { message, .. } if message.starts_with("ERROR: AADSTS70043")
        ));
    }
}
