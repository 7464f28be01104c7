//! Who a login is for: [`AccountKey`] (authority, tenant, client id) and its defaults.

use azbroker_proto::CredentialSpec;
use serde::{Deserialize, Serialize};

/// Azure.Identity's public developer client (the one `InteractiveBrowserCredential`
/// and the Azure CLI use when no client id is configured).
pub const DEVELOPER_CLIENT_ID: &str = "04b07795-8ddb-461a-bbee-02f9e1bf7b46";
/// Tenant of a login when none is configured: any work or school account.
pub const DEFAULT_TENANT: &str = "organizations";

/// One account slot: a user logs in once per authority, tenant and client id,
/// and every credential (InteractiveBrowser with or without broker mode, a
/// device-code login) with the same three shares that login and its refresh token.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AccountKey {
    /// e.g. `https://login.microsoftonline.com` (no trailing slash).
    pub authority: String,
    pub tenant: String,
    pub client_id: String,
}

impl AccountKey {
    /// The key for `tenant`/`client_id` as a client sent them (`None` = defaults).
    pub fn new(authority: &str, tenant: Option<&str>, client_id: Option<&str>) -> AccountKey {
        AccountKey {
            authority: authority.trim_end_matches('/').to_string(),
            tenant: tenant.unwrap_or(DEFAULT_TENANT).to_string(),
            client_id: client_id.unwrap_or(DEVELOPER_CLIENT_ID).to_string(),
        }
    }

    /// The account a credential logs in to, for the kinds that log users in.
    pub fn of_spec(spec: &CredentialSpec, authority: &str) -> Option<AccountKey> {
        match spec {
            CredentialSpec::InteractiveBrowser {
                client_id,
                tenant_id,
                ..
            }
            | CredentialSpec::DeviceCode {
                client_id,
                tenant_id,
            } => Some(AccountKey::new(
                authority,
                tenant_id.as_deref(),
                client_id.as_deref(),
            )),
            _ => None,
        }
    }
}

impl std::fmt::Display for AccountKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "tenant {} at {} (client {})",
            self.tenant, self.authority, self.client_id
        )
    }
}
