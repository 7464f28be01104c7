//! Environment: a service principal from `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`
//! and `AZURE_CLIENT_SECRET`, through `azure_identity`'s `ClientSecretCredential`.

use std::sync::Arc;
use std::time::Duration;

use azbroker_proto::{CredentialSpec, Secret};
use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core::credentials::TokenCredential;
use azure_core::error::ErrorKind;
use azure_identity::{ClientSecretCredential, ClientSecretCredentialOptions};

use super::{error_chain, tidy, SourceContext, SourceError, SourceRequest, Token, TokenSource};

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

#[async_trait::async_trait]
impl TokenSource for EnvironmentSource {
    async fn acquire(&self, request: &SourceRequest) -> Result<Token, SourceError> {
        let CredentialSpec::Environment {
            tenant_id,
            client_id,
            client_secret,
            certificate_path,
            ..
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
        let Some(secret) = client_secret else {
            return Err(SourceError::Unavailable(if certificate_path.is_some() {
                "AZURE_CLIENT_CERTIFICATE_PATH is not supported yet; set AZURE_CLIENT_SECRET".into()
            } else {
                "environment variables not set: AZURE_CLIENT_SECRET or AZURE_CLIENT_CERTIFICATE_PATH"
                    .into()
            }));
        };
        if request.claims.is_some() {
            return Err(SourceError::failed(
                "a service principal cannot answer a claims challenge; the resource's conditional access policy must allow it",
            ));
        }
        let tenant = request.tenant.as_deref().unwrap_or(tenant_id);

        let mut cloud = CustomConfiguration::default();
        cloud.authority_host = self.ctx.authority_host.clone();
        let mut client_options = self.ctx.http.client_options();
        client_options.cloud = Some(Arc::new(CloudConfiguration::Custom(cloud)));
        // A fresh credential per acquisition: ClientSecretCredential keeps its own
        // token cache, which would hand a proactive refresh the token it replaces.
        let credential = ClientSecretCredential::new(
            tenant,
            client_id.clone(),
            azure_core::credentials::Secret::new(secret.expose().to_string()),
            Some(ClientSecretCredentialOptions { client_options }),
        )
        .map_err(|e| SourceError::failed(format!("invalid settings: {e}")))?;

        let scopes: Vec<&str> = request.scopes.iter().map(String::as_str).collect();
        match credential.get_token(&scopes, None).await {
            Ok(token) => Ok(Token {
                access_token: Secret::new(token.token.secret()),
                expires_on: token.expires_on.unix_timestamp(),
                refresh_in: None,
                tenant: Some(tenant.to_string()),
            }),
            Err(e) => Err(classify(&e, &self.ctx.authority_host)),
        }
    }
}

fn classify(err: &azure_core::Error, authority: &str) -> SourceError {
    // azure_identity wraps the pipeline's error in a Credential error; the HTTP
    // details live on the inner one.
    let http = std::iter::successors(Some(err), |e| {
        e.get_ref()
            .and_then(|inner| inner.downcast_ref::<azure_core::Error>())
    })
    .find(|e| matches!(e.kind(), ErrorKind::HttpResponse { .. }));
    let Some(http) = http else {
        return SourceError::failed(format!("cannot reach {authority}: {}", error_chain(err)));
    };
    let ErrorKind::HttpResponse {
        status,
        raw_response,
        ..
    } = http.kind()
    else {
        unreachable!("matched above");
    };
    let retry_after = raw_response
        .as_ref()
        .and_then(|r| r.headers().get_optional_str(&"retry-after".into()))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    // Entra's error_description, e.g. "AADSTS7000215: Invalid client secret provided. ...".
    SourceError::Failed {
        message: format!("{} (HTTP {})", tidy(&http.to_string()), u16::from(*status)),
        retry_after,
    }
}
