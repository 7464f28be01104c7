//! User logins (browser, device code) and the accounts they leave behind.
//!
//! - [`account`]: who a login is for ([`AccountKey`]) and what is persisted.
//! - [`store`]: where refresh tokens survive a restart (OS secret store or a 0600 file).
//! - [`oauth`]: the grants (authorization code + PKCE, refresh, device code) over our HTTP client.
//! - [`flows`]: a whole browser login ([`loopback`] listener + [`opener`]) or device-code login.
//! - [`Accounts`] (here): account key -> the one actor that owns its refresh token
//!   (`actors/account.rs`), started on first use.

pub mod account;
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

pub use account::AccountKey;

use crate::actors::account::{AccountActor, AccountArgs, AccountMsg, LoggedIn, LoginKind};
use crate::cache::TokenCache;
use crate::identity::CredentialId;
use crate::sources::http::HttpClient;
use crate::sources::{SourceError, SourceRequest, Token};
use store::Store;

/// Beyond a login's own limit, time for the redemptions queued behind it.
const QUEUE_ALLOWANCE: Duration = Duration::from_secs(120);
/// A device code lives 15 minutes at most.
const DEVICE_CODE_LIMIT: Duration = Duration::from_secs(20 * 60);

/// The account actors, and which credential actors use which account.
pub struct Accounts {
    http: HttpClient,
    store: Arc<Store>,
    actors: tokio::sync::Mutex<HashMap<AccountKey, ActorRef<AccountMsg>>>,
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

    async fn actor(&self, key: &AccountKey) -> Result<ActorRef<AccountMsg>, SourceError> {
        let mut actors = self.actors.lock().await;
        if let Some(actor) = actors.get(key) {
            if !matches!(
                actor.get_status(),
                ActorStatus::Stopping | ActorStatus::Stopped
            ) {
                return Ok(actor.clone());
            }
        }
        let args = AccountArgs {
            key: key.clone(),
            http: self.http.clone(),
            store: self.store.clone(),
        };
        let (actor, _) = Actor::spawn(None, AccountActor, args)
            .await
            .map_err(|e| SourceError::failed(format!("cannot start the account actor: {e}")))?;
        actors.insert(key.clone(), actor.clone());
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
