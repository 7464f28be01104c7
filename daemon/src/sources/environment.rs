//! Environment: a service principal from `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`
//! and either `AZURE_CLIENT_SECRET` (through `azure_identity`'s
//! `ClientSecretCredential`) or `AZURE_CLIENT_CERTIFICATE_PATH` with an
//! optional `AZURE_CLIENT_CERTIFICATE_PASSWORD` (PEM or PFX, through its
//! `ClientCertificateCredential`). The secret wins when both are set, as in
//! Azure.Identity.

use azbroker_proto::{CredentialSpec, Secret};
use azure_core::credentials::{SecretBytes, TokenCredential};
use azure_identity::{
    ClientCertificateCredential, ClientCertificateCredentialOptions, ClientSecretCredential,
    ClientSecretCredentialOptions,
};

use super::{certificate, entra, SourceContext, SourceError, SourceRequest, Token, TokenSource};

const NAME: &str = "EnvironmentCredential";

pub struct EnvironmentSource {
    spec: CredentialSpec,
    ctx: SourceContext,
}

impl EnvironmentSource {
    pub fn new(spec: CredentialSpec, ctx: &SourceContext) -> Self {
        EnvironmentSource {
            spec,
            ctx: ctx.clone(),
        }
    }
}

/// How the service principal proves who it is.
enum Proof<'a> {
    Secret(&'a Secret),
    Certificate {
        path: &'a str,
        password: Option<&'a Secret>,
    },
}

#[async_trait::async_trait]
impl TokenSource for EnvironmentSource {
    async fn acquire(&self, request: &SourceRequest) -> Result<Token, SourceError> {
        let CredentialSpec::Environment {
            tenant_id,
            client_id,
            client_secret,
            certificate_path,
            certificate_password,
        } = &self.spec
        else {
            unreachable!("EnvironmentSource is built from an Environment spec");
        };
        let (Some(tenant_id), Some(client_id)) = (tenant_id, client_id) else {
            let missing: Vec<&str> = [
                ("AZURE_TENANT_ID", tenant_id),
                ("AZURE_CLIENT_ID", client_id),
            ]
            .into_iter()
            .filter(|(_, v)| v.is_none())
            .map(|(name, _)| name)
            .collect();
            return Err(SourceError::Unavailable(format!(
                "environment variables not set: {}",
                missing.join(", ")
            )));
        };
        let proof = match (client_secret, certificate_path) {
            (Some(secret), _) => Proof::Secret(secret),
            (None, Some(path)) => Proof::Certificate {
                path,
                password: certificate_password.as_ref(),
            },
            (None, None) => {
                return Err(SourceError::Unavailable(
                    "environment variables not set: AZURE_CLIENT_SECRET or AZURE_CLIENT_CERTIFICATE_PATH"
                        .into(),
                ))
            }
        };
        let scope = entra::one_scope(request, NAME)?;
        entra::refuse_claims(request)?;
        let tenant = entra::tenant(request, tenant_id);
        let client_options = entra::client_options(&self.ctx);

        // A fresh credential per acquisition: azure_identity's credentials keep
        // their own token cache, which would hand a proactive refresh the token
        // it replaces. (It also picks up a renewed certificate file.)
        let credential: std::sync::Arc<dyn TokenCredential> = match proof {
            Proof::Secret(secret) => ClientSecretCredential::new(
                tenant,
                client_id.clone(),
                azure_core::credentials::Secret::new(secret.expose().to_string()),
                Some(ClientSecretCredentialOptions { client_options }),
            )
            .map_err(|e| SourceError::failed(format!("invalid settings: {e}")))?,
            Proof::Certificate { path, password } => {
                let loaded = certificate::load(path, password)
                    .await
                    .map_err(SourceError::failed)?;
                ClientCertificateCredential::new(
                    tenant.to_string(),
                    client_id.clone(),
                    SecretBytes::new(loaded.pkcs12),
                    Some(ClientCertificateCredentialOptions {
                        client_options,
                        password: loaded
                            .password
                            .map(|p| azure_core::credentials::Secret::new(p.expose().to_string())),
                    }),
                )
                .map_err(|e| SourceError::failed(format!("invalid certificate settings: {e}")))?
            }
        };
        match credential.get_token(&[scope], None).await {
            Ok(token) => Ok(entra::token(token, tenant)),
            Err(e) => Err(entra::classify(&e, &self.ctx.authority_host)),
        }
    }
}
