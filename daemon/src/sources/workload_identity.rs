//! WorkloadIdentity (Kubernetes): exchanges the service account token in
//! `AZURE_FEDERATED_TOKEN_FILE` for an Entra token of `AZURE_CLIENT_ID` in
//! `AZURE_TENANT_ID`, through `azure_identity`'s `ClientAssertionCredential`.
//!
//! Why not its `WorkloadIdentityCredential`: that one reads the file with no
//! size limit and keeps the content for ten minutes. Kubernetes rotates the
//! projected token (typically hourly, by swapping a symlink), so this source
//! reads the file again, bounded, at every acquisition: acquisitions are rare
//! (a miss or a refresh), and a rotated token is picked up at the next one.

use std::path::PathBuf;

use azbroker_proto::CredentialSpec;
use azure_core::credentials::TokenCredential;
use azure_core::http::ClientMethodOptions;
use azure_identity::{
    ClientAssertion, ClientAssertionCredential, ClientAssertionCredentialOptions,
};

use super::{entra, SourceContext, SourceError, SourceRequest, Token, TokenSource};

const NAME: &str = "WorkloadIdentityCredential";

/// Projected service account tokens are about 1-2 KiB.
const MAX_TOKEN_FILE: u64 = 64 * 1024;

pub struct WorkloadIdentitySource {
    spec: CredentialSpec,
    ctx: SourceContext,
}

impl WorkloadIdentitySource {
    pub fn new(spec: CredentialSpec, ctx: &SourceContext) -> Self {
        WorkloadIdentitySource {
            spec,
            ctx: ctx.clone(),
        }
    }
}

#[async_trait::async_trait]
impl TokenSource for WorkloadIdentitySource {
    async fn acquire(&self, request: &SourceRequest) -> Result<Token, SourceError> {
        let CredentialSpec::WorkloadIdentity {
            tenant_id,
            client_id,
            token_file,
        } = &self.spec
        else {
            unreachable!("WorkloadIdentitySource is built from a WorkloadIdentity spec");
        };
        let (Some(tenant_id), Some(client_id), Some(token_file)) =
            (tenant_id, client_id, token_file)
        else {
            let missing: Vec<&str> = [
                ("AZURE_TENANT_ID", tenant_id.is_none()),
                ("AZURE_CLIENT_ID", client_id.is_none()),
                ("AZURE_FEDERATED_TOKEN_FILE", token_file.is_none()),
            ]
            .into_iter()
            .filter(|(_, missing)| *missing)
            .map(|(name, _)| name)
            .collect();
            return Err(SourceError::Unavailable(format!(
                "environment variables not set: {}",
                missing.join(", ")
            )));
        };
        let scope = entra::one_scope(request, NAME)?;
        entra::refuse_claims(request)?;
        let tenant = entra::tenant(request, tenant_id);
        let assertion = FederatedTokenFile {
            path: PathBuf::from(token_file),
        };
        // Read once up front so that a missing or bad file is reported as such,
        // not as an HTTP error.
        assertion.read().await.map_err(SourceError::failed)?;
        let credential = ClientAssertionCredential::new(
            tenant.to_string(),
            client_id.clone(),
            assertion,
            Some(ClientAssertionCredentialOptions {
                client_options: entra::client_options(&self.ctx),
            }),
        )
        .map_err(|e| SourceError::failed(format!("invalid settings: {e}")))?;
        match credential.get_token(&[scope], None).await {
            Ok(token) => Ok(entra::token(token, tenant)),
            Err(e) => Err(entra::classify(&e, &self.ctx.authority_host)),
        }
    }
}

/// The federated token, read from its file each time it is needed.
#[derive(Debug)]
struct FederatedTokenFile {
    path: PathBuf,
}

impl FederatedTokenFile {
    async fn read(&self) -> Result<String, String> {
        let shown = self.path.display();
        // The path is the client's: it may name a FIFO or a device (see `bounded_file`).
        let bytes = crate::bounded_file::read(&self.path, MAX_TOKEN_FILE)
            .await
            .map_err(|e| format!("cannot read AZURE_FEDERATED_TOKEN_FILE {shown}: {e}"))?;
        let token = String::from_utf8(bytes)
            .ok()
            .map(|t| t.trim().to_string())
            .filter(|t| is_jwt_shaped(t))
            .ok_or_else(|| {
                format!("AZURE_FEDERATED_TOKEN_FILE {shown} does not hold a token (a JWT: three base64url parts)")
            })?;
        Ok(token)
    }
}

#[async_trait::async_trait]
impl ClientAssertion for FederatedTokenFile {
    async fn secret(&self, _: Option<ClientMethodOptions<'_>>) -> azure_core::Result<String> {
        self.read().await.map_err(|message| {
            azure_core::Error::with_message(azure_core::error::ErrorKind::Credential, message)
        })
    }
}

/// `header.payload.signature`, base64url characters only.
fn is_jwt_shaped(token: &str) -> bool {
    let parts: Vec<&str> = token.split('.').collect();
    parts.len() == 3
        && parts[..2].iter().all(|p| !p.is_empty())
        && token
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_the_current_file_each_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "aaa.bbb.ccc\n").unwrap();
        let file = FederatedTokenFile { path: path.clone() };
        assert_eq!(file.read().await.unwrap(), "aaa.bbb.ccc");
        std::fs::write(&path, "ddd.eee.fff").unwrap();
        assert_eq!(file.read().await.unwrap(), "ddd.eee.fff");
    }

    #[tokio::test]
    async fn rejects_what_is_not_a_token() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let file = FederatedTokenFile { path: path.clone() };
        let missing = file.read().await.unwrap_err();
        assert!(
            missing.starts_with("cannot read AZURE_FEDERATED_TOKEN_FILE"),
            "{missing}"
        );
        for bad in ["", "not a token", "a.b", "a.b.c d", "a\"b.c.d"] {
            std::fs::write(&path, bad).unwrap();
            assert!(
                file.read()
                    .await
                    .unwrap_err()
                    .contains("does not hold a token"),
                "{bad}"
            );
        }
        std::fs::write(&path, "a".repeat(65 * 1024)).unwrap();
        assert!(file
            .read()
            .await
            .unwrap_err()
            .contains("larger than 64 KiB"));
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let refused = FederatedTokenFile { path: fifo }.read().await.unwrap_err();
        assert!(
            refused.ends_with("it is a FIFO (named pipe), not a regular file"),
            "{refused}"
        );
    }
}
