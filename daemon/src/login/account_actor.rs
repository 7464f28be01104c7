//! One actor per logged-in account (authority + tenant + client id): the only
//! owner of that account's refresh token.
//!
//! Refresh-token redemptions run *inside* the handler, one message at a time,
//! so a rotated refresh token always replaces the one just presented before the
//! next redemption starts: rotation is safe by construction, and the old token
//! is never presented again. Logins (browser, device code) run as tasks, since
//! they take minutes; requests that arrive meanwhile wait for that one login
//! instead of starting their own, then get tokens through the new refresh token.
//! So however many clients ask at once, the user sees one browser prompt.
//!
//! An account actor with no pending login and no request for a while is
//! stopped by the idle sweep (`Accounts::stop_idle`); its refresh token is in
//! the store, so the next request starts a new actor that loads it.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::mpsc;

use super::account_key::AccountKey;
use super::flows;
use super::oauth::{GrantError, OAuth, TokenSet};
use super::store::{AccountRecord, Store};
use crate::actors::activity::{Activity, Busy};
use crate::clock;
use crate::http::HttpClient;
use crate::token_source::{SourceError, SourceRequest, Token};

/// Said when a silent request finds no usable login.
pub const NOT_LOGGED_IN: &str = "not logged in: run `azbroker login` (opens a browser) or `azbroker login --device-code` (SSH, WSL, containers)";

pub struct AccountActor;

pub struct AccountArgs {
    pub key: AccountKey,
    pub http: HttpClient,
    pub store: Arc<Store>,
    /// Read by the idle sweep (`Accounts::stop_idle`); a pending login keeps the actor busy.
    pub activity: Arc<Activity>,
}

/// How to log in.
pub enum LoginKind {
    Browser {
        timeout: Duration,
    },
    /// The device code message goes to `progress`.
    DeviceCode {
        progress: mpsc::UnboundedSender<String>,
    },
}

/// Who logged in, for `azbroker login`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedIn {
    pub username: Option<String>,
    pub tenant: Option<String>,
}

pub enum AccountMsg {
    /// A token for `request`. With `browser: Some(timeout)` a missing or dead
    /// login starts a browser login; with `None` (background refresh) it fails.
    Acquire {
        request: SourceRequest,
        browser: Option<Duration>,
        reply: RpcReplyPort<Result<Token, SourceError>>,
    },
    /// An explicit login (`azbroker login`), even when one is stored.
    Login {
        kind: LoginKind,
        scopes: Vec<String>,
        reply: RpcReplyPort<Result<LoggedIn, SourceError>>,
    },
    /// A login task finished.
    LoginDone {
        generation: u64,
        result: Result<TokenSet, SourceError>,
    },
    /// Forget the account; `true` when there was one.
    Logout {
        reply: RpcReplyPort<Result<bool, String>>,
    },
}

pub struct AccountState {
    key: AccountKey,
    oauth: OAuth,
    store: Arc<Store>,
    record: Option<AccountRecord>,
    login: Option<PendingLogin>,
    generation: u64,
    activity: Arc<Activity>,
    /// Held while the refresh token lives only here (no store, or saving
    /// failed): stopping this actor would lose the login.
    unsaved: Option<Busy>,
}

struct PendingLogin {
    generation: u64,
    /// Keeps the idle sweep away while the login runs (it holds waiters).
    _busy: Busy,
    task: tokio::task::JoinHandle<()>,
    browser: bool,
    /// What the login's own token is for: handed to the first waiter that asked exactly this.
    scopes: Vec<String>,
    claims: Option<String>,
    waiters: Vec<Waiter>,
}

enum Waiter {
    Token {
        request: SourceRequest,
        reply: RpcReplyPort<Result<Token, SourceError>>,
    },
    Login {
        reply: RpcReplyPort<Result<LoggedIn, SourceError>>,
    },
}

/// Why a redemption did not produce a token.
enum Redeem {
    /// Only a new interactive login can help.
    NeedsLogin(String),
    Failed(SourceError),
}

impl AccountState {
    /// Presents the current refresh token once and keeps its successor.
    async fn redeem(&mut self, request: &SourceRequest) -> Result<Token, Redeem> {
        let Some(record) = &self.record else {
            return Err(Redeem::NeedsLogin(NOT_LOGGED_IN.into()));
        };
        let result = self
            .oauth
            .refresh(
                &record.refresh_token,
                &request.scopes,
                request.tenant.as_deref(),
                request.claims.as_deref(),
            )
            .await;
        match result {
            Ok(set) => {
                let token = self.token(request, &set);
                self.absorb(set).await;
                Ok(token)
            }
            Err(GrantError::InvalidGrant(why)) => {
                tracing::warn!(account = %crate::log_escape::Escaped(&self.key), reason = %crate::log_escape::Escaped(&why), "refresh token rejected; the account must log in again");
                self.record = None;
                self.unsaved = None;
                if let Err(e) = self.store.remove(&self.key).await {
                    tracing::warn!(error = %e, "cannot remove the dead login from the store");
                }
                Err(Redeem::NeedsLogin(format!(
                    "the login has expired or was revoked ({why})"
                )))
            }
            Err(GrantError::InteractionRequired(why)) => Err(Redeem::NeedsLogin(format!(
                "the identity platform requires an interactive sign-in ({why})"
            ))),
            Err(other) => Err(Redeem::Failed(flows::from_grant(other, &self.oauth))),
        }
    }

    fn token(&self, request: &SourceRequest, set: &TokenSet) -> Token {
        let home = set
            .identity
            .as_ref()
            .and_then(|id| id.tenant.clone())
            .or_else(|| self.record.as_ref().and_then(|r| r.home_tenant.clone()));
        Token {
            access_token: set.access_token.clone(),
            expires_on: set.expires_on,
            refresh_in: set.refresh_in,
            tenant: request.tenant.clone().or(home),
        }
    }

    /// Keeps what a grant returned: the rotated refresh token replaces the
    /// presented one (in memory first, then in the store) and names the account.
    async fn absorb(&mut self, set: TokenSet) {
        let identity = set.identity.unwrap_or_default();
        let record = match (self.record.take(), set.refresh_token) {
            (Some(mut record), refresh_token) => {
                if let Some(refresh_token) = refresh_token {
                    record.refresh_token = refresh_token;
                }
                record.username = identity.username.or(record.username);
                record.home_tenant = identity.tenant.or(record.home_tenant);
                record.object_id = identity.object_id.or(record.object_id);
                record
            }
            (None, Some(refresh_token)) => AccountRecord {
                key: self.key.clone(),
                username: identity.username,
                home_tenant: identity.tenant,
                object_id: identity.object_id,
                refresh_token,
                updated_at: 0,
            },
            (None, None) => {
                tracing::warn!(account = %crate::log_escape::Escaped(&self.key), "the login returned no refresh token (offline_access not granted?); it will not be remembered");
                return;
            }
        };
        let record = AccountRecord {
            updated_at: clock::now_secs(),
            ..record
        };
        self.record = Some(record.clone());
        let saved = match self.store.save(record).await {
            Ok(()) => self.store.persists(),
            Err(e) => {
                tracing::error!(account = %crate::log_escape::Escaped(&self.key), error = %e, "cannot persist the refresh token; a daemon restart will need a new login");
                false
            }
        };
        self.unsaved = (!saved).then(|| Busy::start(&self.activity));
    }

    fn logged_in(&self) -> LoggedIn {
        LoggedIn {
            username: self.record.as_ref().and_then(|r| r.username.clone()),
            tenant: self.record.as_ref().and_then(|r| r.home_tenant.clone()),
        }
    }

    fn start_login(
        &mut self,
        myself: &ActorRef<AccountMsg>,
        kind: LoginKind,
        scopes: Vec<String>,
        claims: Option<String>,
        first: Waiter,
    ) {
        self.generation += 1;
        let generation = self.generation;
        let browser = matches!(kind, LoginKind::Browser { .. });
        let oauth = self.oauth.clone();
        let me = myself.clone();
        let (task_scopes, task_claims) = (scopes.clone(), claims.clone());
        let span =
            tracing::info_span!("login", account = %crate::log_escape::Escaped(&self.key), browser);
        let task = tokio::spawn(tracing::Instrument::instrument(
            async move {
                let result = match kind {
                    LoginKind::Browser { timeout } => {
                        flows::browser(&oauth, &task_scopes, task_claims.as_deref(), timeout).await
                    }
                    LoginKind::DeviceCode { progress } => {
                        flows::device_code(&oauth, &task_scopes, &progress).await
                    }
                };
                match &result {
                    Ok(_) => tracing::info!("login completed"),
                    Err(e) => {
                        tracing::warn!(reason = %crate::log_escape::Escaped(e.message()), "login failed")
                    }
                }
                let _ = me.send_message(AccountMsg::LoginDone { generation, result });
            },
            span,
        ));
        self.login = Some(PendingLogin {
            generation,
            _busy: Busy::start(&self.activity),
            task,
            browser,
            scopes,
            claims,
            waiters: vec![first],
        });
    }

    async fn finish_login(&mut self, login: PendingLogin, result: Result<TokenSet, SourceError>) {
        let set = match result {
            Ok(set) => set,
            Err(e) => {
                for waiter in login.waiters {
                    match waiter {
                        Waiter::Token { reply, .. } => drop(reply.send(Err(e.clone()))),
                        Waiter::Login { reply } => drop(reply.send(Err(e.clone()))),
                    }
                }
                return;
            }
        };
        let login_request = SourceRequest {
            scopes: login.scopes.clone(),
            tenant: None,
            claims: login.claims.clone(),
            // The login that just ran was the prompt.
            interactive: true,
        };
        let mut own_token = Some(self.token(&login_request, &set));
        self.absorb(set).await;
        for waiter in login.waiters {
            match waiter {
                Waiter::Login { reply } => {
                    let _ = reply.send(Ok(self.logged_in()));
                }
                Waiter::Token { request, reply } => {
                    let token = match own_token.take_if(|_| request == login_request) {
                        Some(token) => Ok(token),
                        None => self.redeem(&request).await.map_err(|e| match e {
                            Redeem::NeedsLogin(m) => SourceError::failed(m),
                            Redeem::Failed(e) => e,
                        }),
                    };
                    let _ = reply.send(token);
                }
            }
        }
    }
}

impl Actor for AccountActor {
    type Msg = AccountMsg;
    type State = AccountState;
    type Arguments = AccountArgs;

    async fn pre_start(
        &self,
        _: ActorRef<Self::Msg>,
        args: AccountArgs,
    ) -> Result<AccountState, ActorProcessingErr> {
        let record = match args.store.load(&args.key).await {
            Ok(record) => record,
            Err(e) => {
                tracing::warn!(account = %crate::log_escape::Escaped(&args.key), error = %e, "cannot read the account store");
                None
            }
        };
        if let Some(record) = &record {
            tracing::info!(account = %crate::log_escape::Escaped(&args.key), user = ?record.username, "restored a persisted login");
        }
        Ok(AccountState {
            oauth: OAuth::new(args.http, args.key.clone()),
            key: args.key,
            store: args.store,
            record,
            login: None,
            generation: 0,
            activity: args.activity,
            unsaved: None,
        })
    }

    async fn post_stop(
        &self,
        _: ActorRef<Self::Msg>,
        state: &mut AccountState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(login) = state.login.take() {
            login.task.abort();
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: AccountMsg,
        state: &mut AccountState,
    ) -> Result<(), ActorProcessingErr> {
        // Busy while handling: a redemption must finish (and persist the
        // rotated refresh token) before the sweep may stop this actor.
        let _busy = Busy::start(&state.activity);
        match message {
            AccountMsg::Acquire {
                request,
                browser,
                reply,
            } => {
                if let Some(login) = &mut state.login {
                    // One login for everyone: wait for it, then use its refresh token.
                    login.waiters.push(Waiter::Token { request, reply });
                    return Ok(());
                }
                let reason = if state.record.is_some() {
                    match state.redeem(&request).await {
                        Ok(token) => {
                            let _ = reply.send(Ok(token));
                            return Ok(());
                        }
                        Err(Redeem::Failed(e)) => {
                            let _ = reply.send(Err(e));
                            return Ok(());
                        }
                        Err(Redeem::NeedsLogin(reason)) => reason,
                    }
                } else {
                    NOT_LOGGED_IN.to_string()
                };
                match browser {
                    Some(timeout) => {
                        let (scopes, claims) = (request.scopes.clone(), request.claims.clone());
                        let waiter = Waiter::Token { request, reply };
                        state.start_login(
                            &myself,
                            LoginKind::Browser { timeout },
                            scopes,
                            claims,
                            waiter,
                        );
                    }
                    None => {
                        let message = if reason == NOT_LOGGED_IN {
                            reason
                        } else {
                            format!("{reason}; {NOT_LOGGED_IN}")
                        };
                        let _ = reply.send(Err(SourceError::Unavailable(message)));
                    }
                }
            }
            AccountMsg::Login {
                kind,
                scopes,
                reply,
            } => match &mut state.login {
                Some(login) if login.browser && matches!(kind, LoginKind::Browser { .. }) => {
                    login.waiters.push(Waiter::Login { reply });
                }
                Some(_) => {
                    let _ = reply.send(Err(SourceError::failed(
                        "another login of this account is in progress; complete it, or wait until it times out",
                    )));
                }
                None => state.start_login(&myself, kind, scopes, None, Waiter::Login { reply }),
            },
            AccountMsg::LoginDone { generation, result } => {
                let Some(login) = state.login.take_if(|l| l.generation == generation) else {
                    return Ok(());
                };
                state.finish_login(login, result).await;
            }
            AccountMsg::Logout { reply } => {
                if let Some(login) = state.login.take() {
                    login.task.abort();
                    let gone = SourceError::failed("the account was logged out during the login");
                    for waiter in login.waiters {
                        match waiter {
                            Waiter::Token { reply, .. } => drop(reply.send(Err(gone.clone()))),
                            Waiter::Login { reply } => drop(reply.send(Err(gone.clone()))),
                        }
                    }
                }
                let had = state.record.take().is_some();
                state.unsaved = None;
                let result = state
                    .store
                    .remove(&state.key)
                    .await
                    .map(|removed| had || removed);
                let _ = reply.send(result);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::Accounts;
    use super::*;
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper::{Request, Response};
    use hyper_util::rt::TokioIo;
    use std::sync::Mutex;

    /// A token endpoint on loopback that rotates refresh tokens like Entra:
    /// `rt-N` is redeemed once for `rt-N+1`; an older one is refused
    /// (`invalid_grant`), as a real server may when it sees reuse.
    struct RotatingEndpoint {
        /// Every refresh token presented, in order of arrival.
        presented: Mutex<Vec<String>>,
        current: Mutex<u32>,
    }

    async fn serve(endpoint: Arc<RotatingEndpoint>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let authority = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let endpoint = endpoint.clone();
                let service = hyper::service::service_fn(
                    move |request: Request<hyper::body::Incoming>| {
                        let endpoint = endpoint.clone();
                        async move {
                            let body = request.into_body().collect().await?.to_bytes();
                            let presented = form_urlencoded::parse(&body)
                                .find(|(name, _)| name == "refresh_token")
                                .map(|(_, value)| value.into_owned())
                                .unwrap_or_default();
                            endpoint.presented.lock().unwrap().push(presented.clone());
                            // A slow server widens any window for two redemptions to overlap.
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            let mut current = endpoint.current.lock().unwrap();
                            let (status, reply) = if presented == format!("rt-{current}") {
                                *current += 1;
                                (
                                    200,
                                    serde_json::json!({
                                        "access_token": format!("at-{current}"),
                                        "token_type": "Bearer",
                                        "expires_in": 3600,
                                        "refresh_token": format!("rt-{current}"),
                                    }),
                                )
                            } else {
                                (
                                    400,
                                    serde_json::json!({
                                        "error": "invalid_grant",
                                        "error_description": "AADSTS70000: the refresh token was already used",
                                    }),
                                )
                            };
                            Ok::<_, hyper::Error>(
                                Response::builder()
                                    .status(status)
                                    .header("content-type", "application/json")
                                    .body(Full::new(Bytes::from(reply.to_string())))
                                    .unwrap(),
                            )
                        }
                    },
                );
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        authority
    }

    #[tokio::test]
    async fn concurrent_requests_redeem_each_rotated_refresh_token_once_in_turn() {
        let endpoint = Arc::new(RotatingEndpoint {
            presented: Mutex::new(Vec::new()),
            current: Mutex::new(0),
        });
        let authority = serve(endpoint.clone()).await;
        let key = AccountKey::new(&authority, None, None);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("accounts.json");
        let seed = Arc::new(Store::file(path.clone()));
        seed.save(AccountRecord {
            key: key.clone(),
            username: None,
            home_tenant: None,
            object_id: None,
            refresh_token: azbroker_proto::Secret::new("rt-0"),
            updated_at: 0,
        })
        .await
        .unwrap();
        let http = HttpClient::from_env(None).unwrap();
        let accounts = Accounts::new(http, Store::file(path.clone()));

        let mut requests = Vec::new();
        for n in 0..10 {
            let (accounts, key) = (accounts.clone(), key.clone());
            requests.push(tokio::spawn(async move {
                let request = SourceRequest {
                    scopes: vec![format!("api://app-{n}/.default")],
                    tenant: None,
                    claims: None,
                    interactive: true,
                };
                accounts.acquire(&key, &request, None).await
            }));
        }
        let mut access_tokens = Vec::new();
        for request in requests {
            let token = request.await.unwrap().expect("every redemption succeeds");
            access_tokens.push(token.access_token.expose().to_string());
        }
        access_tokens.sort();
        access_tokens.dedup();
        assert_eq!(access_tokens.len(), 10, "each request got its own token");
        // Each refresh token was presented once, and only after its predecessor was redeemed.
        let expected: Vec<String> = (0..10).map(|n| format!("rt-{n}")).collect();
        assert_eq!(*endpoint.presented.lock().unwrap(), expected);
        // The newest refresh token is what survives a restart.
        let stored = seed.load(&key).await.unwrap().unwrap();
        assert_eq!(stored.refresh_token.expose(), "rt-10");
    }
}
