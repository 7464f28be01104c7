//! User logins (browser, device code) and the accounts they leave behind.
//!
//! - [`account_key`]: who a login is for ([`AccountKey`]).
//! - [`store`]: what a login leaves behind ([`store::AccountRecord`]: the refresh token) and
//!   where it survives a restart (OS secret store or a 0600 file).
//! - [`oauth`]: the grants (authorization code + PKCE, refresh, device code) over our HTTP client.
//! - [`flows`]: a whole browser login ([`loopback`] listener + [`opener`]) or device-code login.
//! - [`Accounts`] (here): account key -> the one actor that owns its refresh token
//!   (`login/account_actor.rs`), started on first use and stopped when idle
//!   ([`Accounts::stop_idle`]; the refresh token stays in the store).

pub mod account_actor;
pub mod account_key;
pub mod flows;
pub mod loopback;
pub mod oauth;
pub mod opener;
pub mod store;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor::rpc::CallResult;
use ractor::{Actor, ActorRef, ActorStatus};
use tokio::sync::mpsc;

pub use account_key::AccountKey;

use crate::actors::activity::Activity;
use crate::cache::TokenCache;
use crate::http::HttpClient;
use crate::identity::CredentialId;
use crate::token_source::{SourceError, SourceRequest, Token};
use account_actor::{AccountActor, AccountArgs, AccountMsg, LoggedIn, LoginKind};
use store::Store;

/// Beyond a login's own limit, time for the redemptions queued behind it.
const QUEUE_ALLOWANCE: Duration = Duration::from_secs(120);
/// A device code lives 15 minutes at most.
const DEVICE_CODE_LIMIT: Duration = Duration::from_secs(20 * 60);
/// The longest a browser login may wait for the user, whatever a client asks
/// (`AZURE_MCP_BROWSER_AUTH_TIMEOUT_SECONDS`, `Login.timeout_secs`): as long
/// as a device code lives. A pending login holds its loopback listener and
/// every waiting request.
pub const MAX_BROWSER_TIMEOUT_SECS: u32 = 15 * 60;

/// A client's browser-login timeout, bounded: 0 means the default (300 s),
/// more than [`MAX_BROWSER_TIMEOUT_SECS`] is taken as that.
pub fn browser_timeout(secs: u32) -> Duration {
    let secs = match secs {
        0 => azbroker_proto::chain::DEFAULT_BROWSER_TIMEOUT_SECS,
        secs => secs.min(MAX_BROWSER_TIMEOUT_SECS),
    };
    Duration::from_secs(u64::from(secs))
}

/// Each account's actor and what the idle sweep reads of it.
type AccountActors = HashMap<AccountKey, (ActorRef<AccountMsg>, Arc<Activity>)>;

/// The account actors, and which credential actors use which account.
pub struct Accounts {
    http: HttpClient,
    store: Arc<Store>,
    actors: tokio::sync::Mutex<AccountActors>,
    users: Mutex<HashMap<CredentialId, AccountKey>>,
}

impl Accounts {
    pub fn new(http: HttpClient, store: Store) -> Arc<Accounts> {
        Arc::new(Accounts {
            http,
            store: Arc::new(store),
            actors: tokio::sync::Mutex::new(HashMap::new()),
            users: Mutex::new(HashMap::new()),
        })
    }

    /// Where refresh tokens are persisted, for status.
    pub fn store_description(&self) -> String {
        self.store.describe().to_string()
    }

    /// Records that credential `id` gets its tokens from account `key`, so a
    /// logout can drop exactly those cached tokens.
    pub fn link(&self, id: CredentialId, key: AccountKey) {
        self.users
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, key);
    }

    /// Forgets which credentials used an account, for those `keep` rejects
    /// (their actors stopped and their cached tokens are gone).
    pub fn forget_links(&self, keep: impl Fn(&CredentialId) -> bool) {
        self.users
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|id, _| keep(id));
    }

    pub fn has_links(&self) -> bool {
        !self
            .users
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }

    /// Stops the account actors with no pending login, no unsaved refresh
    /// token and no request for `idle_after`; returns how many.
    pub async fn stop_idle(&self, idle_after: Duration, now_ms: i64) -> usize {
        let mut actors = self.actors.lock().await;
        let before = actors.len();
        actors.retain(|key, (actor, activity)| {
            let stopped = matches!(
                actor.get_status(),
                ActorStatus::Stopping | ActorStatus::Stopped
            );
            if !stopped && !activity.is_idle(idle_after, now_ms) {
                return true;
            }
            tracing::debug!(account = %key, "account actor idle; stopping it");
            actor.stop(Some("idle".into()));
            false
        });
        before - actors.len()
    }

    /// How many account actors run.
    pub async fn actor_count(&self) -> usize {
        self.actors.lock().await.len()
    }

    async fn actor(&self, key: &AccountKey) -> Result<ActorRef<AccountMsg>, SourceError> {
        let mut actors = self.actors.lock().await;
        if let Some((actor, activity)) = actors.get(key) {
            if !matches!(
                actor.get_status(),
                ActorStatus::Stopping | ActorStatus::Stopped
            ) {
                // Counts as use now: the sweep must not stop it before our message arrives.
                activity.touch();
                return Ok(actor.clone());
            }
        }
        let activity = Arc::new(Activity::default());
        let args = AccountArgs {
            key: key.clone(),
            http: self.http.clone(),
            store: self.store.clone(),
            activity: activity.clone(),
        };
        let (actor, _) = Actor::spawn(None, AccountActor, args)
            .await
            .map_err(|e| SourceError::failed(format!("cannot start the account actor: {e}")))?;
        actors.insert(key.clone(), (actor.clone(), activity));
        Ok(actor)
    }

    /// A token from `key`'s login; `browser` allows (and bounds) a browser login when needed.
    pub async fn acquire(
        &self,
        key: &AccountKey,
        request: &SourceRequest,
        browser: Option<Duration>,
    ) -> Result<Token, SourceError> {
        let actor = self.actor(key).await?;
        let limit = browser.unwrap_or_default() + QUEUE_ALLOWANCE;
        let call = actor
            .call(
                |reply| AccountMsg::Acquire {
                    request: request.clone(),
                    browser,
                    reply,
                },
                Some(limit),
            )
            .await;
        flatten(call, limit)
    }

    /// An explicit login; device-code messages go to `progress`.
    pub async fn login(
        &self,
        key: &AccountKey,
        device_code: bool,
        scopes: Vec<String>,
        browser_timeout: Duration,
        progress: mpsc::UnboundedSender<String>,
    ) -> Result<LoggedIn, SourceError> {
        let actor = self.actor(key).await?;
        let (kind, limit) = if device_code {
            (LoginKind::DeviceCode { progress }, DEVICE_CODE_LIMIT)
        } else {
            (
                LoginKind::Browser {
                    timeout: browser_timeout,
                },
                browser_timeout + QUEUE_ALLOWANCE,
            )
        };
        let call = actor
            .call(
                |reply| AccountMsg::Login {
                    kind,
                    scopes,
                    reply,
                },
                Some(limit),
            )
            .await;
        flatten(call, limit)
    }

    /// Forgets each account in `keys` (every known one when `None`) and drops
    /// the cached tokens of the credentials that used them. Returns
    /// (accounts forgotten, tokens dropped).
    pub async fn logout(
        &self,
        keys: Option<Vec<AccountKey>>,
        cache: &TokenCache,
    ) -> Result<(u64, u64), String> {
        let keys = match keys {
            Some(keys) => keys,
            None => {
                let mut keys = self.store.keys().await?;
                keys.extend(self.actors.lock().await.keys().cloned());
                keys.sort();
                keys.dedup();
                keys
            }
        };
        let mut forgotten = 0;
        let mut dropped = 0;
        for key in keys {
            let actor = self
                .actor(&key)
                .await
                .map_err(|e| e.message().to_string())?;
            let call = actor
                .call(|reply| AccountMsg::Logout { reply }, Some(QUEUE_ALLOWANCE))
                .await;
            match call {
                Ok(CallResult::Success(Ok(true))) => forgotten += 1,
                Ok(CallResult::Success(Ok(false))) => {}
                Ok(CallResult::Success(Err(e))) => return Err(e),
                _ => return Err(format!("the actor of {key} is not answering")),
            }
            let users: Vec<CredentialId> = self
                .users
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .filter(|(_, k)| **k == key)
                .map(|(id, _)| id.clone())
                .collect();
            dropped += cache.invalidate_credentials(&users).await;
            tracing::info!(account = %crate::log_escape::Escaped(&key), "logged out");
        }
        Ok((forgotten, dropped))
    }
}

fn flatten<T>(
    call: Result<CallResult<Result<T, SourceError>>, ractor::MessagingErr<AccountMsg>>,
    limit: Duration,
) -> Result<T, SourceError> {
    match call {
        Ok(CallResult::Success(result)) => result,
        Ok(CallResult::Timeout) => Err(SourceError::Timeout(format!(
            "the account did not answer within {} s",
            limit.as_secs()
        ))),
        _ => Err(SourceError::failed(
            "the account's actor stopped while handling the request",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn browser_timeouts_are_bounded() {
        assert_eq!(browser_timeout(0), Duration::from_secs(300));
        assert_eq!(browser_timeout(2), Duration::from_secs(2));
        assert_eq!(browser_timeout(u32::MAX), Duration::from_secs(15 * 60));
    }
}
