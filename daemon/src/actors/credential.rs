//! One actor per credential identity: acquires through its source and keeps
//! the tokens it minted fresh.
//!
//! Acquisitions run as spawned tasks that report back, so a slow `az` never
//! blocks this actor's mailbox (and so never blocks a refresh timer or another
//! scope). After the chain serves a token from this credential, the broker
//! sends [`CredentialMsg::Track`]; at the refresh point the actor acquires a
//! successor and puts it in the cache, provided a client used the key since the
//! last token was minted. A failed refresh leaves the old token in place and is
//! retried with jittered backoff while the old token lives.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use azbroker_proto::{CredentialKind, CredentialSpec};
use ractor::concurrency::JoinHandle;
use ractor::{Actor, ActorProcessingErr, ActorRef, MessagingErr, RpcReplyPort};
use rand::Rng;
use tracing::Instrument;

use super::registry::Health;
use super::ActorDeps;
use crate::cache::{CacheKey, CachedToken};
use crate::clock;
use crate::identity::CredentialId;
use crate::refresh;
use crate::sources::{self, SourceContext, SourceError, SourceRequest, Token, TokenSource};
use crate::stats::Stats;

pub struct CredentialActor;

pub struct CredentialArgs {
    pub id: CredentialId,
    pub spec: CredentialSpec,
    pub authority_host: String,
    pub deps: ActorDeps,
    pub health: Arc<Health>,
}

pub struct CredentialState {
    id: CredentialId,
    source: Arc<dyn TokenSource>,
    deps: ActorDeps,
    health: Arc<Health>,
    tracked: HashMap<CacheKey, Tracked>,
}

/// A cache key this actor keeps fresh.
struct Tracked {
    request: SourceRequest,
    timer: JoinHandle<Result<(), MessagingErr<CredentialMsg>>>,
    failures: u32,
}

pub enum CredentialMsg {
    /// Get a token now (a cache miss somewhere).
    Acquire {
        request: SourceRequest,
        reply: RpcReplyPort<Result<Token, SourceError>>,
    },
    /// The chain served `key` from this credential; refresh it at `refresh_on`.
    Track {
        key: CacheKey,
        request: SourceRequest,
        refresh_on: i64,
    },
    /// A refresh timer fired.
    RefreshDue { key: CacheKey },
    /// A refresh acquisition finished.
    Refreshed {
        key: CacheKey,
        result: Result<Token, SourceError>,
    },
    /// Panics in the handler, to test supervision.
    #[cfg(test)]
    Crash,
}

/// How long an "unavailable" answer is remembered before the credential is
/// tried again, so a chain of absent tools is not re-run on every request.
/// Short for the developer tools (a user who just ran `az login` is served
/// within seconds), longer for managed identity (probing IMDS off Azure costs
/// a second, and an identity does not appear mid-session). Interactive kinds
/// are never skipped this way.
pub fn negative_ttl(kind: CredentialKind) -> Option<Duration> {
    match kind {
        CredentialKind::Environment
        | CredentialKind::WorkloadIdentity
        | CredentialKind::AzureCli
        | CredentialKind::AzurePowerShell
        | CredentialKind::AzureDeveloperCli
        | CredentialKind::VisualStudio => Some(Duration::from_secs(5)),
        CredentialKind::ManagedIdentity => Some(Duration::from_secs(60)),
        CredentialKind::InteractiveBrowser | CredentialKind::DeviceCode => None,
    }
}

/// Turns a source's token into a cache entry.
pub fn cache_entry(id: &CredentialId, token: Token) -> Arc<CachedToken> {
    let now = clock::now_secs();
    Arc::new(CachedToken {
        refresh_on: refresh::refresh_on(now, token.expires_on, token.refresh_in),
        expires_on: token.expires_on,
        access_token: token.access_token,
        tenant: token.tenant,
        credential: id.kind,
        credential_id: id.clone(),
        minted_at_ms: clock::now_millis(),
        hits: AtomicU64::new(0),
        last_used_ms: AtomicI64::new(0),
    })
}

impl CredentialState {
    fn schedule(
        &mut self,
        myself: &ActorRef<CredentialMsg>,
        key: CacheKey,
        request: SourceRequest,
        delay: Duration,
        failures: u32,
    ) {
        let timer_key = key.clone();
        let timer = myself.send_after(delay, move || CredentialMsg::RefreshDue { key: timer_key });
        if let Some(old) = self.tracked.insert(
            key,
            Tracked {
                request,
                timer,
                failures,
            },
        ) {
            old.timer.abort();
        }
    }

    /// An acquisition as a future to spawn; `background` for proactive
    /// refreshes, which must never ask the user anything.
    fn spawn_acquire(
        &self,
        request: SourceRequest,
        background: bool,
    ) -> impl std::future::Future<Output = Result<Token, SourceError>> + Send + 'static {
        let source = self.source.clone();
        let health = self.health.clone();
        let stats = self.deps.stats.clone();
        let id = self.id.clone();
        let span = tracing::info_span!("acquire", credential = %id, scopes = ?request.scopes, tenant = ?request.tenant);
        async move {
            let result = if background {
                source.acquire_silently(&request).await
            } else {
                source.acquire(&request).await
            };
            health.record(&result);
            match &result {
                Ok(token) => {
                    Stats::bump(&stats.upstream_acquisitions);
                    tracing::info!(expires_on = token.expires_on, "token acquired");
                }
                Err(SourceError::Unavailable(reason)) => tracing::debug!(reason = %crate::log_escape::Escaped(reason), "unavailable"),
                Err(e) => tracing::warn!(reason = %crate::log_escape::Escaped(e.message()), "acquisition failed"),
            }
            result
        }
        .instrument(span)
    }
}

impl Actor for CredentialActor {
    type Msg = CredentialMsg;
    type State = CredentialState;
    type Arguments = CredentialArgs;

    async fn pre_start(
        &self,
        _: ActorRef<Self::Msg>,
        args: CredentialArgs,
    ) -> Result<CredentialState, ActorProcessingErr> {
        if let Some(account) = crate::login::AccountKey::of_spec(&args.spec, &args.authority_host) {
            args.deps.accounts.link(args.id.clone(), account);
        }
        let ctx = SourceContext {
            http: args.deps.http.clone(),
            authority_host: args.authority_host,
            accounts: args.deps.accounts.clone(),
        };
        Ok(CredentialState {
            source: sources::build(&args.spec, &ctx),
            id: args.id,
            deps: args.deps,
            health: args.health,
            tracked: HashMap::new(),
        })
    }

    async fn post_stop(
        &self,
        _: ActorRef<Self::Msg>,
        state: &mut CredentialState,
    ) -> Result<(), ActorProcessingErr> {
        // Timers are tasks of their own; dropping the handle would not cancel them.
        for (_, tracked) in state.tracked.drain() {
            tracked.timer.abort();
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: CredentialMsg,
        state: &mut CredentialState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            CredentialMsg::Acquire { request, reply } => {
                let remembered = negative_ttl(state.id.kind)
                    .and_then(|ttl| state.health.recently_unavailable(ttl));
                if let Some(reason) = remembered {
                    tracing::debug!(credential = %state.id, reason = %crate::log_escape::Escaped(&reason), "still unavailable (remembered)");
                    let _ = reply.send(Err(SourceError::Unavailable(reason)));
                    return Ok(());
                }
                let acquisition = state.spawn_acquire(request, false);
                tokio::spawn(async move {
                    let _ = reply.send(acquisition.await);
                });
            }
            CredentialMsg::Track {
                key,
                request,
                refresh_on,
            } => {
                state.schedule(&myself, key, request, clock::until(refresh_on), 0);
            }
            CredentialMsg::RefreshDue { key } => {
                let Some(tracked) = state.tracked.get(&key) else {
                    return Ok(());
                };
                let current = state.deps.cache.peek(&key).await;
                let wanted = current.as_ref().is_some_and(|token| {
                    token.credential_id == state.id && token.used_since_minted()
                });
                if !wanted {
                    // Expired, invalidated, served by another credential, or idle:
                    // let it lapse rather than keep minting tokens nobody uses.
                    state.tracked.remove(&key);
                    return Ok(());
                }
                let acquisition = state.spawn_acquire(tracked.request.clone(), true);
                let me = myself.clone();
                tokio::spawn(async move {
                    let result = acquisition.await;
                    let _ = me.send_message(CredentialMsg::Refreshed { key, result });
                });
            }
            #[cfg(test)]
            CredentialMsg::Crash => panic!("crash requested by a test"),
            CredentialMsg::Refreshed { key, result } => {
                let Some(tracked) = state.tracked.get(&key) else {
                    return Ok(());
                };
                let request = tracked.request.clone();
                let failures = tracked.failures;
                match result {
                    Ok(token) => {
                        Stats::bump(&state.deps.stats.refreshes);
                        let previous = state.deps.cache.peek(&key).await;
                        let entry = cache_entry(&state.id, token);
                        if let Some(previous) = previous {
                            entry.hits.store(previous.hits.load(Relaxed), Relaxed);
                            entry
                                .last_used_ms
                                .store(previous.last_used_ms.load(Relaxed), Relaxed);
                        }
                        let refresh_on = entry.refresh_on;
                        state.deps.cache.insert(key.clone(), entry).await;
                        state.schedule(&myself, key, request, clock::until(refresh_on), 0);
                    }
                    Err(e) => {
                        Stats::bump(&state.deps.stats.refresh_failures);
                        let retry_after = match &e {
                            SourceError::Failed { retry_after, .. } => *retry_after,
                            _ => None,
                        };
                        let attempt = failures + 1;
                        let delay =
                            refresh::retry_delay(attempt, retry_after, rand::thread_rng().gen());
                        let expires_on = state.deps.cache.peek(&key).await.map(|t| t.expires_on);
                        let retry_at = clock::now_secs() + delay.as_secs() as i64;
                        match expires_on {
                            Some(expires_on) if retry_at < expires_on => {
                                tracing::warn!(credential = %state.id, attempt, retry_in_secs = delay.as_secs(), "refresh failed; keeping the current token");
                                state.schedule(&myself, key, request, delay, attempt);
                            }
                            _ => {
                                tracing::warn!(credential = %state.id, "refresh failed and the token expires before a retry; letting it lapse");
                                state.tracked.remove(&key);
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }
}
