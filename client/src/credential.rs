//! `BrokerCredential`: the broker as an `azure_core` `TokenCredential`.

use std::sync::Arc;

use azbroker_proto::GetToken;
use azure_core::credentials::{AccessToken, Secret, TokenCredential, TokenRequestOptions};
use azure_core::error::{Error, ErrorKind};
use azure_core::time::OffsetDateTime;

use crate::{Client, ClientError};

/// Gets tokens from `azbrokerd` instead of authenticating in this process.
/// Every Azure SDK for Rust client that takes an `Arc<dyn TokenCredential>`
/// can use it; all of them then share the daemon's login and cache.
#[derive(Clone)]
pub struct BrokerCredential {
    client: Arc<Client>,
    tenant: Option<String>,
}

impl std::fmt::Debug for BrokerCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerCredential")
            .field("socket", &self.client.options().socket)
            .field("tenant", &self.tenant)
            .finish()
    }
}

impl BrokerCredential {
    /// A credential using the chain this process's environment selects.
    pub fn from_env() -> Result<Arc<BrokerCredential>, ClientError> {
        Ok(Arc::new(BrokerCredential::new(Arc::new(Client::from_env(
            "azbroker-credential",
        )?))))
    }

    pub fn new(client: Arc<Client>) -> BrokerCredential {
        BrokerCredential {
            client,
            tenant: None,
        }
    }

    /// Requests tokens in this tenant instead of the credential's own.
    pub fn with_tenant(mut self, tenant: impl Into<String>) -> Self {
        self.tenant = Some(tenant.into());
        self
    }
}

#[async_trait::async_trait]
impl TokenCredential for BrokerCredential {
    async fn get_token(
        &self,
        scopes: &[&str],
        _options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        let reply = self
            .client
            .get_token(GetToken {
                scopes: scopes.iter().map(|s| s.to_string()).collect(),
                tenant: self.tenant.clone(),
                claims: None,
                min_validity_secs: 0,
            })
            .await
            .map_err(|e| Error::with_message(ErrorKind::Credential, e.to_string()))?;
        let expires_on = OffsetDateTime::from_unix_timestamp(reply.expires_on)
            .map_err(|e| Error::with_message(ErrorKind::DataConversion, e.to_string()))?;
        Ok(AccessToken::new(
            Secret::new(reply.access_token.expose().to_string()),
            expires_on,
        ))
    }
}
