//! `azbroker login` and `azbroker logout`: the account a request names, with
//! its inputs checked, handed to the account actors (`login/`).

use azbroker_proto::{cloud, ErrorKind, LoggedIn, Login, LoginMethod, Logout, WireError};
use tokio::sync::mpsc;

use super::Broker;
use crate::login::AccountKey;
use crate::scopes;
use crate::session::Session;
use crate::token_source::SourceError;

impl Broker {
    /// An explicit login (`azbroker login`) of the account that `login` selects
    /// under the session's authority; device-code messages go to `progress`.
    pub async fn login(
        &self,
        session: &Session,
        login: Login,
        progress: mpsc::UnboundedSender<String>,
    ) -> Result<LoggedIn, WireError> {
        let key = account_key(session, login.tenant.as_deref(), login.client_id.as_deref())?;
        let scopes = if login.scopes.is_empty() {
            vec![resource_manager_scope(&key.authority)]
        } else {
            login.scopes
        };
        let scopes = scopes::normalize_scopes(&scopes)
            .map_err(|e| WireError::new(ErrorKind::InvalidRequest, e))?;
        let timeout = crate::login::browser_timeout(login.timeout_secs);
        let device_code = login.method == LoginMethod::DeviceCode;
        tracing::info!(account = %crate::log_escape::Escaped(&key), device_code, client = %crate::log_escape::Escaped(&session.client), "login requested");
        let done = self
            .accounts
            .login(&key, device_code, scopes, timeout, progress)
            .await
            .map_err(|e| source_error(e, "login failed"))?;
        Ok(LoggedIn {
            username: done.username,
            tenant: done.tenant,
            store: self.accounts.store_description(),
        })
    }

    /// Forgets one account (or all) and drops their cached tokens; returns
    /// (accounts forgotten, tokens dropped).
    pub async fn logout(&self, session: &Session, logout: Logout) -> Result<(u64, u64), WireError> {
        let keys = if logout.all {
            None
        } else {
            Some(vec![account_key(
                session,
                logout.tenant.as_deref(),
                logout.client_id.as_deref(),
            )?])
        };
        let (accounts, tokens) = self
            .accounts
            .logout(keys, &self.cache)
            .await
            .map_err(|e| WireError::new(ErrorKind::Internal, format!("logout failed: {e}")))?;
        // Every other credential's tokens go too: after a logout nothing
        // cached before it is served (the tools' own logins are theirs to end,
        // and their next token is fetched fresh).
        let others = self.cache.invalidate(&[], &[]).await;
        Ok((accounts, tokens + others))
    }
}

/// The account a login or logout names, with its inputs checked.
fn account_key(
    session: &Session,
    tenant: Option<&str>,
    client_id: Option<&str>,
) -> Result<AccountKey, WireError> {
    let invalid = |e: String| WireError::new(ErrorKind::InvalidRequest, e);
    if let Some(tenant) = tenant {
        scopes::validate_tenant(tenant).map_err(invalid)?;
    }
    if let Some(client_id) = client_id {
        scopes::validate_tenant(client_id)
            .map_err(|_| invalid(format!("client id {client_id:?} is not an application id")))?;
    }
    Ok(AccountKey::new(
        &session.chain.authority_host,
        tenant,
        client_id,
    ))
}

/// Resource Manager's scope in the cloud of `authority` (public cloud otherwise).
fn resource_manager_scope(authority: &str) -> String {
    let cloud = cloud::by_authority(authority).unwrap_or(&cloud::AZURE_PUBLIC);
    cloud.resource_manager_scope()
}

fn source_error(error: SourceError, what: &str) -> WireError {
    let kind = match &error {
        SourceError::Unavailable(_) => ErrorKind::CredentialUnavailable,
        SourceError::Failed { .. } => ErrorKind::AuthenticationFailed,
        SourceError::Timeout(_) => ErrorKind::Timeout,
    };
    WireError::new(kind, format!("{what}: {}", error.message()))
}
