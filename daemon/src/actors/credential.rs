//! One actor per credential identity: acquires through its source and keeps
//! the tokens it minted fresh.
//!
//! Acquisitions run as spawned tasks that report back, so a slow `az` never
//! blocks this actor's mailbox (and so never blocks a refresh timer or another
//! scope). An acquisition for the cache carries its key, and when it yields a
//! token the actor stores it and schedules that key's refresh itself (the
//! broker sends one message, [`CredentialMsg::Acquire`], and gets the cache
//! entry back); at the
//! refresh point the actor acquires a successor and puts it in the cache,
//! provided a client used the key since the last token was minted. A failed refresh leaves the old token in place and is
//! retried with jittered backoff while the old token lives.
//!
//! A server's `Retry-After` holds every acquisition of the credential, client
//! requests included: they are answered with the remaining wait instead of
//! going upstream. Short of that, a client's failed acquisition of a tool
//! (`az`, `azd`, `pwsh`) or a login is remembered for a few seconds
//! ([`failure_ttl`]), so a storm of clients asking the same of a failing
//! credential costs one upstream attempt per window. A request the
//! credential cannot serve by construction (two scopes for `az`) is answered
//! "unavailable" without going upstream or counting against the credential.
//!
//! A refresh replaces only the very token it started from, so an
//! `Invalidate` (or a logout) while it runs is not undone.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use azbroker_proto::{CredentialKind, CredentialSpec};
use ractor::concurrency::JoinHandle;
use ractor::{Actor, ActorProcessingErr, ActorRef, MessagingErr, RpcReplyPort};
use rand::Rng;
use tracing::Instrument;

use super::activity::{Activity, Busy};
use super::health::{Health, Origin};
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
    pub activity: Arc<Activity>,
}

pub struct CredentialActorState {
    id: CredentialId,
    source: Arc<dyn TokenSource>,
    deps: ActorDeps,
    health: Arc<Health>,
    activity: Arc<Activity>,
    tracked: HashMap<CacheKey, Tracked>,
    /// Numbers each schedule, so that a refresh overtaken by a newer `Track`
    /// of the same key is recognised and dropped.
    rounds: u64,
}

/// A cache key this actor keeps fresh.
struct Tracked {
    request: SourceRequest,
    timer: JoinHandle<Result<(), MessagingErr<CredentialMsg>>>,
    failures: u32,
    round: u64,
}

pub enum CredentialMsg {
    /// Get a token now (a cache miss somewhere). With `track`, the cache key
    /// the token will be stored under: a token acquired for it is kept fresh.
    Acquire {
        request: SourceRequest,
        track: Option<CacheKey>,
        reply: RpcReplyPort<Result<Arc<CachedToken>, SourceError>>,
    },
    /// Sent by an acquisition to its own actor: keep `key` fresh from `refresh_on`.
    Track {
        key: CacheKey,
        request: SourceRequest,
        refresh_on: i64,
    },
    /// A refresh timer fired.
    RefreshDue { key: CacheKey, round: u64 },
    /// A refresh acquisition finished; `replaces` is the token it started from.
    Refreshed {
        key: CacheKey,
        round: u64,
        replaces: Arc<CachedToken>,
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

/// How long a client's failed acquisition (an error or a timeout, not
/// "unavailable") is remembered: the clients asking the same within it get
/// the same error instead of another upstream attempt. Background refreshes
/// keep their own retry backoff and are not held by it, and a failure that
/// came with `Retry-After` is held by that instead (the service said when).
///
/// - Developer tools: every attempt is a process (half a second to seconds),
///   so a storm against a broken `az` would be a storm of `az` runs.
/// - Interactive kinds: shorter. The clients that waited on the failed login
///   are answered together by its account actor anyway, so the window only
///   catches those right behind it (an SDK's immediate retry, the rest of a
///   burst of tool calls); a person reading the error and retrying
///   deliberately takes longer than that.
/// - Kinds that ask an HTTP service: not remembered. An attempt is one
///   request answered in milliseconds, a transient error (an IMDS 500, a
///   token file being rotated) is best retried at once, and the service
///   throttles with `Retry-After`, which holds every client.
pub fn failure_ttl(kind: CredentialKind) -> Option<Duration> {
    match kind {
        CredentialKind::AzureCli
        | CredentialKind::AzurePowerShell
        | CredentialKind::AzureDeveloperCli
        | CredentialKind::VisualStudio => Some(Duration::from_secs(5)),
        CredentialKind::InteractiveBrowser | CredentialKind::DeviceCode => {
            Some(Duration::from_secs(3))
        }
        CredentialKind::Environment
        | CredentialKind::WorkloadIdentity
        | CredentialKind::ManagedIdentity => None,
    }
}

/// The answer from a remembered failure: the same error, saying so and how
/// long until the credential is tried again (in whole seconds, rounded up).
fn remembered_failure(left: Duration, error: SourceError) -> SourceError {
    let secs = whole_secs(left);
    let note = |reason: &str| {
        format!("{reason} (the same request failed moments ago: not retried for another {secs} s)")
    };
    match error {
        SourceError::Failed { message, .. } => SourceError::failed(note(&message)),
        SourceError::Timeout(message) => SourceError::Timeout(note(&message)),
        SourceError::Unavailable(message) => SourceError::Unavailable(message),
    }
}

/// `wait` in whole seconds, rounded up.
fn whole_secs(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

/// The answer while the service's `Retry-After` lasts: its remaining wait,
/// in whole seconds (rounded up), and the failure that set it.
fn backing_off(wait: Duration, reason: &str) -> SourceError {
    let secs = whole_secs(wait);
    SourceError::Failed {
        message: format!(
            "{reason}; the identity service asked to wait: not retried for another {secs} s"
        ),
        retry_after: Some(wait),
    }
}

/// Turns a source's token into a cache entry.
/// Who a token was minted for, which decides whether it counts as used.
#[derive(Clone, Copy)]
enum Minted {
    /// A client's miss: that request is a use, so the token is refreshed at
    /// its refresh point even if nobody asks again before then.
    ForClient,
    /// A refresh: used only once a client asks for it.
    ByRefresh,
}

fn cache_entry(id: &CredentialId, token: Token, minted: Minted) -> Arc<CachedToken> {
    let now = clock::now_secs();
    let minted_at_ms = clock::now_millis();
    let last_used_ms = match minted {
        Minted::ForClient => minted_at_ms,
        Minted::ByRefresh => 0,
    };
    Arc::new(CachedToken {
        refresh_on: refresh::refresh_on(now, token.expires_on, token.refresh_in),
        expires_on: token.expires_on,
        access_token: token.access_token,
        tenant: token.tenant.map(Arc::from),
        credential: id.kind,
        credential_id: id.clone(),
        minted_at_ms,
        hits: AtomicU64::new(0),
        last_used_ms: AtomicI64::new(last_used_ms),
    })
}

impl CredentialActorState {
    fn schedule(
        &mut self,
        myself: &ActorRef<CredentialMsg>,
        key: CacheKey,
        request: SourceRequest,
        delay: Duration,
        failures: u32,
    ) {
        self.rounds += 1;
        let round = self.rounds;
        let timer_key = key.clone();
        let timer = myself.send_after(delay, move || CredentialMsg::RefreshDue {
            key: timer_key,
            round,
        });
        if let Some(old) = self.tracked.insert(
            key,
            Tracked {
                request,
                timer,
                failures,
                round,
            },
        ) {
            old.timer.abort();
        }
        self.activity.set_tracked(self.tracked.len());
    }

    fn untrack(&mut self, key: &CacheKey) {
        if let Some(old) = self.tracked.remove(key) {
            old.timer.abort();
        }
        self.activity.set_tracked(self.tracked.len());
    }

    /// The tracked entry for `key` if `round` is still its current schedule.
    fn current(&self, key: &CacheKey, round: u64) -> Option<&Tracked> {
        self.tracked.get(key).filter(|t| t.round == round)
    }

    /// An acquisition as a future to spawn; `background` for proactive
    /// refreshes, which (like requests that are not interactive) must never
    /// ask the user anything.
    fn spawn_acquire(
        &self,
        request: SourceRequest,
        background: bool,
    ) -> impl std::future::Future<Output = Result<Token, SourceError>> + Send + 'static {
        let source = self.source.clone();
        let health = self.health.clone();
        let stats = self.deps.stats.clone();
        let id = self.id.clone();
        let busy = Busy::start(&self.activity);
        let span = tracing::info_span!("acquire", credential = %id, scopes = ?request.scopes, tenant = ?request.tenant);
        async move {
            let _busy = busy;
            let result = if background || !request.interactive {
                source.acquire_silently(&request).await
            } else {
                source.acquire(&request).await
            };
            let origin = if background {
                Origin::Refresh
            } else {
                Origin::Client
            };
            health.record(&request, &result, origin);
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
    type State = CredentialActorState;
    type Arguments = CredentialArgs;

    async fn pre_start(
        &self,
        _: ActorRef<Self::Msg>,
        args: CredentialArgs,
    ) -> Result<CredentialActorState, ActorProcessingErr> {
        if let Some(account) = crate::login::AccountKey::of_spec(&args.spec, &args.authority_host) {
            args.deps.accounts.link(args.id.clone(), account);
        }
        if let Some((tool, spec)) = args.spec.tool() {
            if let Some(profile) = &spec.profile_dir {
                args.deps
                    .tool_logins
                    .watch(&args.id, tool, std::path::Path::new(profile));
            }
        }
        let ctx = SourceContext {
            http: args.deps.http.clone(),
            authority_host: args.authority_host,
            accounts: args.deps.accounts.clone(),
        };
        Ok(CredentialActorState {
            source: sources::build(&args.spec, &ctx),
            id: args.id,
            deps: args.deps,
            health: args.health,
            activity: args.activity,
            tracked: HashMap::new(),
            rounds: 0,
        })
    }

    async fn post_stop(
        &self,
        _: ActorRef<Self::Msg>,
        state: &mut CredentialActorState,
    ) -> Result<(), ActorProcessingErr> {
        // Timers are tasks of their own; dropping the handle would not cancel them.
        for (_, tracked) in state.tracked.drain() {
            tracked.timer.abort();
        }
        state.activity.set_tracked(0);
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: CredentialMsg,
        state: &mut CredentialActorState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            CredentialMsg::Acquire {
                request,
                track,
                reply,
            } => {
                state.activity.touch();
                if let Some(reason) = state.source.unsupported(&request) {
                    // The request is at fault, not the credential: its health stays as it is.
                    tracing::debug!(credential = %state.id, reason = %crate::log_escape::Escaped(&reason), "request not supported");
                    let _ = reply.send(Err(SourceError::Unavailable(reason)));
                    return Ok(());
                }
                if let Some((wait, reason)) = state.health.backoff() {
                    tracing::debug!(credential = %state.id, wait_secs = wait.as_secs(), "backing off (Retry-After)");
                    let _ = reply.send(Err(backing_off(wait, &reason)));
                    return Ok(());
                }
                let remembered = negative_ttl(state.id.kind)
                    .and_then(|ttl| state.health.recently_unavailable(ttl));
                if let Some(reason) = remembered {
                    tracing::debug!(credential = %state.id, reason = %crate::log_escape::Escaped(&reason), "still unavailable (remembered)");
                    let _ = reply.send(Err(SourceError::Unavailable(reason)));
                    return Ok(());
                }
                let remembered = failure_ttl(state.id.kind)
                    .and_then(|ttl| state.health.recently_failed(&request, ttl));
                if let Some((left, error)) = remembered {
                    tracing::debug!(credential = %state.id, reason = %crate::log_escape::Escaped(error.message()), "still failing (remembered)");
                    let _ = reply.send(Err(remembered_failure(left, error)));
                    return Ok(());
                }
                let acquisition = state.spawn_acquire(request.clone(), false);
                let (id, me, cache) = (state.id.clone(), myself.clone(), state.deps.cache.clone());
                tokio::spawn(async move {
                    let result = acquisition
                        .await
                        .map(|token| cache_entry(&id, token, Minted::ForClient));
                    if let (Ok(entry), Some(key)) = (&result, track) {
                        // Stored before its refresh is scheduled: a token whose refresh
                        // point is already here (a short-lived one) must be found by the
                        // timer, which can fire before the caller stores the same entry.
                        cache.insert(key.clone(), entry.clone()).await;
                        let _ = me.send_message(CredentialMsg::Track {
                            key,
                            request,
                            refresh_on: entry.refresh_on,
                        });
                    }
                    let _ = reply.send(result);
                });
            }
            CredentialMsg::Track {
                key,
                request,
                refresh_on,
            } => {
                state.schedule(&myself, key, request, clock::until(refresh_on), 0);
            }
            CredentialMsg::RefreshDue { key, round } => {
                let Some(tracked) = state.current(&key, round) else {
                    return Ok(());
                };
                let (request, failures) = (tracked.request.clone(), tracked.failures);
                let current = state.deps.cache.peek(&key).await;
                let current = current
                    .filter(|token| token.credential_id == state.id && token.used_since_minted());
                let Some(current) = current else {
                    // Expired, invalidated, served by another credential, or idle:
                    // let it lapse rather than keep minting tokens nobody uses.
                    state.untrack(&key);
                    return Ok(());
                };
                if let Some((wait, _)) = state.health.backoff() {
                    // The service asked us to wait; the current token is served meanwhile.
                    state.schedule(&myself, key, request, wait, failures);
                    return Ok(());
                }
                state.activity.touch();
                let acquisition = state.spawn_acquire(request, true);
                let me = myself.clone();
                tokio::spawn(async move {
                    let result = acquisition.await;
                    let _ = me.send_message(CredentialMsg::Refreshed {
                        key,
                        round,
                        replaces: current,
                        result,
                    });
                });
            }
            #[cfg(test)]
            CredentialMsg::Crash => panic!("crash requested by a test"),
            CredentialMsg::Refreshed {
                key,
                round,
                replaces,
                result,
            } => {
                let Some(tracked) = state.current(&key, round) else {
                    // A newer `Track` took the key over while this refresh ran.
                    return Ok(());
                };
                let request = tracked.request.clone();
                let failures = tracked.failures;
                match result {
                    Ok(token) => {
                        Stats::bump(&state.deps.stats.refreshes);
                        let entry = cache_entry(&state.id, token, Minted::ByRefresh);
                        entry.hits.store(replaces.hits.load(Relaxed), Relaxed);
                        entry
                            .last_used_ms
                            .store(replaces.last_used_ms.load(Relaxed), Relaxed);
                        let refresh_on = entry.refresh_on;
                        if state.deps.cache.replace(&key, &replaces, entry).await {
                            state.schedule(&myself, key, request, clock::until(refresh_on), 0);
                        } else {
                            // Invalidated (or logged out) while the refresh ran: stay
                            // gone. (Or a client's miss replaced the token: its
                            // acquisition is tracked on its own.)
                            tracing::info!(credential = %state.id, "the key was invalidated or replaced during its refresh; dropping the new token");
                            state.untrack(&key);
                        }
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
                                state.untrack(&key);
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token_source::scripted::{self, ScriptedSource};
    use azbroker_proto::ToolSpec;
    use ractor::rpc::CallResult;
    use std::sync::atomic::Ordering::SeqCst;

    /// A credential actor whose source is `source`, under an authority of its own.
    async fn start(
        authority: &str,
        source: &Arc<ScriptedSource>,
    ) -> (
        ActorRef<CredentialMsg>,
        ActorDeps,
        Arc<Activity>,
        tempfile::TempDir,
    ) {
        scripted::register(authority, source.clone());
        let (actor, deps, activity, _, dir) =
            start_as(CredentialSpec::AzureCli(ToolSpec::default()), authority).await;
        (actor, deps, activity, dir)
    }

    /// A credential actor of `spec` with the source `sources::build` gives it
    /// (the scripted one when the test registered one for `authority`).
    async fn start_as(
        spec: CredentialSpec,
        authority: &str,
    ) -> (
        ActorRef<CredentialMsg>,
        ActorDeps,
        Arc<Activity>,
        Arc<Health>,
        tempfile::TempDir,
    ) {
        let (deps, dir) = super::super::test_deps();
        let health = Arc::new(Health::new(spec.kind()));
        let activity = Arc::new(Activity::default());
        let args = CredentialArgs {
            id: CredentialId::of(&spec, authority),
            health: health.clone(),
            spec,
            authority_host: authority.into(),
            deps: deps.clone(),
            activity: activity.clone(),
        };
        let (actor, _) = Actor::spawn(None, CredentialActor, args).await.unwrap();
        (actor, deps, activity, health, dir)
    }

    fn request() -> SourceRequest {
        SourceRequest {
            scopes: vec!["https://management.azure.com/.default".into()],
            tenant: None,
            claims: None,
            interactive: true,
        }
    }

    fn key() -> CacheKey {
        CacheKey {
            credential: CredentialId::of(&CredentialSpec::AzureCli(ToolSpec::default()), "k"),
            target: Arc::new(crate::cache::Target {
                tenant: None,
                scopes: request().scopes,
            }),
        }
    }

    async fn acquire(
        actor: &ActorRef<CredentialMsg>,
        track: Option<CacheKey>,
    ) -> Result<Arc<CachedToken>, SourceError> {
        acquire_for(actor, request(), track).await
    }

    async fn acquire_for(
        actor: &ActorRef<CredentialMsg>,
        request: SourceRequest,
        track: Option<CacheKey>,
    ) -> Result<Arc<CachedToken>, SourceError> {
        let call = actor
            .call(
                |reply| CredentialMsg::Acquire {
                    request,
                    track,
                    reply,
                },
                Some(Duration::from_secs(5)),
            )
            .await
            .unwrap();
        match call {
            CallResult::Success(result) => result,
            _ => panic!("the actor did not answer"),
        }
    }

    async fn wait_for(what: &str, mut check: impl AsyncFnMut() -> bool) {
        for _ in 0..250 {
            if check().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("timed out waiting for {what}");
    }

    #[tokio::test]
    async fn acquire_answers_with_a_cache_entry_from_its_source() {
        let source = ScriptedSource::new();
        source.then(Ok(scripted::token("first", 3600, None)));
        source.then(Err(SourceError::failed("AADSTS50000 no luck")));
        let (actor, deps, activity, _dir) = start("https://credential-acquire.test", &source).await;

        let entry = acquire(&actor, None).await.unwrap();
        assert_eq!(entry.access_token.expose(), "first");
        assert_eq!(entry.credential, CredentialKind::AzureCli);
        assert!(entry.valid_for(3000));
        assert!(entry.refresh_on < entry.expires_on);
        assert_eq!(deps.stats.upstream_acquisitions.load(SeqCst), 1);
        // Untracked: nothing to refresh.
        assert!(activity.is_idle(Duration::ZERO, i64::MAX));

        let failed = acquire(&actor, None).await.unwrap_err();
        assert_eq!(failed.message(), "AADSTS50000 no luck");
        assert_eq!(source.calls(), 2);
        actor.stop(None);
    }

    /// Where a token living an hour, without a server hint, is refreshed:
    /// 6 minutes before it expires (`refresh::refresh_on`).
    const REFRESH_POINT: Duration = Duration::from_secs(3600 - 360);

    /// Lets every task that can run do so. On paused time the sleep ends only
    /// once the runtime is idle, and costs no real time.
    async fn settle() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The refresh tests run on paused time: `clock` follows tokio's clock in
    // tests, so advancing it moves token expiry and the refresh timers
    // (ractor's `send_after` is a tokio sleep) together, and an hour-long
    // token is refreshed without waiting.

    #[tokio::test(start_paused = true)]
    async fn a_tracked_key_is_refreshed_before_expiry_without_a_request() {
        let source = ScriptedSource::new();
        source.then(Ok(scripted::token("first", 3600, None)));
        let (actor, deps, _activity, _dir) =
            start("https://credential-refresh.test", &source).await;

        let first = acquire(&actor, Some(key())).await.unwrap();
        assert_eq!(first.refresh_on, first.expires_on - 360);
        // The actor stored it, and a client's hit counts on it.
        deps.cache.get_fresh(&key(), 300).await.unwrap();
        settle().await;

        // Short of the refresh point nothing happens (the script is empty:
        // an early refresh would count a call and a failure).
        tokio::time::advance(REFRESH_POINT - Duration::from_secs(2)).await;
        settle().await;
        assert_eq!(source.calls(), 1);
        assert_eq!(deps.stats.refresh_failures.load(SeqCst), 0);

        // The successor is minted at the refresh point: it lives an hour from there.
        source.then(Ok(scripted::token("second", 3600, None)));
        tokio::time::advance(Duration::from_secs(2)).await;
        wait_for("the refreshed token", async || {
            deps.cache
                .peek(&key())
                .await
                .is_some_and(|t| t.access_token.expose() == "second")
        })
        .await;
        assert_eq!(source.calls(), 2);
        assert_eq!(
            source.silent_calls(),
            1,
            "a refresh must never ask the user"
        );
        assert_eq!(deps.stats.refreshes.load(SeqCst), 1);
        assert_eq!(deps.stats.refresh_failures.load(SeqCst), 0);
        // The successor keeps the use counts of the token it replaced.
        let second = deps.cache.peek(&key()).await.unwrap();
        assert_eq!(second.hits.load(Relaxed), 1);
        assert!(second.expires_on >= first.expires_on + REFRESH_POINT.as_secs() as i64 - 2);
        assert!(second.valid_for(3000));
        actor.stop(None);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_key_is_not_refreshed() {
        let source = ScriptedSource::new();
        source.then(Ok(scripted::token("first", 3600, None)));
        source.then(Ok(scripted::token("second", 3600, None)));
        let (actor, deps, activity, _dir) = start("https://credential-idle.test", &source).await;

        // The miss that minted the first token was a use: it is refreshed once.
        acquire(&actor, Some(key())).await.unwrap();
        settle().await;
        tokio::time::advance(REFRESH_POINT).await;
        wait_for("the first refresh", async || {
            deps.stats.refreshes.load(SeqCst) == 1
        })
        .await;
        // Nobody asks for its successor: at the next refresh point the key lapses.
        tokio::time::advance(REFRESH_POINT).await;
        wait_for("the key to be untracked", async || {
            activity.is_idle(Duration::ZERO, i64::MAX)
        })
        .await;
        assert_eq!(source.calls(), 2);
        assert_eq!(deps.stats.refreshes.load(SeqCst), 1);
        assert_eq!(
            deps.cache.peek(&key()).await.unwrap().access_token.expose(),
            "second"
        );
        actor.stop(None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_token_due_for_refresh_when_minted_is_refreshed_before_its_caller_stores_it() {
        let source = ScriptedSource::new();
        // Six minutes is the lead before expiry: this token's refresh point is now.
        source.then(Ok(scripted::token("short", 303, None)));
        source.then(Ok(scripted::token("successor", 3600, None)));
        let (actor, deps, _activity, _dir) =
            start("https://credential-due-at-once.test", &source).await;

        let first = acquire(&actor, Some(key())).await.unwrap();
        assert_eq!(first.refresh_on, clock::now_secs());
        // The test, standing for the broker, has not stored the entry: the
        // timer finds it anyway and refreshes it.
        wait_for("the immediate refresh", async || {
            deps.stats.refreshes.load(SeqCst) == 1
        })
        .await;
        assert_eq!(source.calls(), 2);
        assert_eq!(
            deps.cache.peek(&key()).await.unwrap().access_token.expose(),
            "successor"
        );
        actor.stop(None);
    }

    #[tokio::test(start_paused = true)]
    async fn an_invalidate_during_a_refresh_is_not_undone() {
        let source = ScriptedSource::new();
        source.then(Ok(scripted::token("first", 3600, None)));
        let release = source.then_held(Ok(scripted::token("second", 3600, None)));
        let (actor, deps, activity, _dir) =
            start("https://credential-invalidate.test", &source).await;

        acquire(&actor, Some(key())).await.unwrap();
        settle().await;
        tokio::time::advance(REFRESH_POINT).await;
        wait_for("the refresh to start", async || source.calls() == 2).await;

        assert_eq!(deps.cache.invalidate(&[], &[]).await, 1);
        release.add_permits(1);
        // The refresh finishes, finds its key gone, and drops the key.
        wait_for("the key to be untracked", async || {
            activity.is_idle(Duration::ZERO, i64::MAX)
        })
        .await;
        assert!(deps.cache.peek(&key()).await.is_none());
        assert!(deps.cache.entries().is_empty());
        assert_eq!(deps.stats.refreshes.load(SeqCst), 1);
        actor.stop(None);
    }

    // Failure memory, on paused time too (`Health` reads tokio's clock).

    #[tokio::test(start_paused = true)]
    async fn a_failure_is_remembered_for_a_few_seconds_then_retried() {
        let source = ScriptedSource::new();
        let release = source.then_held(Err(SourceError::failed("ERROR: AADSTS50076: MFA")));
        let (actor, _deps, _activity, _dir) =
            start("https://credential-failure-memory.test", &source).await;

        // The attempt is in flight, then fails...
        let first = tokio::spawn({
            let actor = actor.clone();
            async move { acquire(&actor, None).await }
        });
        wait_for("the attempt to start", async || source.calls() == 1).await;
        release.add_permits(1);
        let failed = first.await.unwrap().unwrap_err();
        assert_eq!(failed.message(), "ERROR: AADSTS50076: MFA");

        // ...and the clients behind it get its failure instead of another attempt.
        tokio::time::advance(Duration::from_millis(1500)).await;
        let callers: Vec<_> = (0..20)
            .map(|_| {
                let actor = actor.clone();
                tokio::spawn(async move { acquire(&actor, None).await })
            })
            .collect();
        for caller in callers {
            let remembered = caller.await.unwrap().unwrap_err();
            assert!(matches!(remembered, SourceError::Failed { .. }));
            assert_eq!(
                remembered.message(),
                "ERROR: AADSTS50076: MFA (the same request failed moments ago: not retried for another 4 s)"
            );
        }
        assert_eq!(source.calls(), 1, "one upstream attempt per window");

        // Another request of the same credential is not held by it.
        let vault = SourceRequest {
            scopes: vec!["https://vault.azure.net/.default".into()],
            ..request()
        };
        let other = acquire_for(&actor, vault, None).await.unwrap_err();
        assert_eq!(other.message(), "the script has no answer left");
        assert_eq!(source.calls(), 2);

        // The window over, the credential is tried again.
        source.then(Ok(scripted::token("after", 3600, None)));
        tokio::time::advance(failure_ttl(CredentialKind::AzureCli).unwrap()).await;
        let entry = acquire(&actor, None).await.unwrap();
        assert_eq!(entry.access_token.expose(), "after");
        assert_eq!(source.calls(), 3);
        actor.stop(None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_remembered_timeout_is_still_a_timeout() {
        let source = ScriptedSource::new();
        source.then(Err(SourceError::Timeout(
            "az account get-access-token did not answer within 13 s".into(),
        )));
        let (actor, _deps, _activity, _dir) =
            start("https://credential-timeout-memory.test", &source).await;
        acquire(&actor, None).await.unwrap_err();
        let remembered = acquire(&actor, None).await.unwrap_err();
        assert!(
            matches!(&remembered, SourceError::Timeout(m) if m.starts_with("az account get-access-token did not answer within 13 s (the same request failed moments ago")),
            "{remembered:?}"
        );
        assert_eq!(source.calls(), 1);
        actor.stop(None);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_still_holds_clients_past_the_failure_window() {
        let source = ScriptedSource::new();
        source.then(Err(SourceError::Failed {
            message: "AADSTS50196 (HTTP 429)".into(),
            retry_after: Some(Duration::from_secs(20)),
        }));
        source.then(Ok(scripted::token("later", 3600, None)));
        let (actor, _deps, _activity, _dir) =
            start("https://credential-retry-after-memory.test", &source).await;
        acquire(&actor, None).await.unwrap_err();

        tokio::time::advance(Duration::from_secs(10)).await;
        let held = acquire(&actor, None).await.unwrap_err();
        assert_eq!(
            held.message(),
            "AADSTS50196 (HTTP 429); the identity service asked to wait: not retried for another 10 s"
        );
        assert_eq!(source.calls(), 1);

        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(
            acquire(&actor, None).await.unwrap().access_token.expose(),
            "later"
        );
        assert_eq!(source.calls(), 2);
        actor.stop(None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_browser_login_is_remembered_more_briefly() {
        let authority = "https://credential-interactive-memory.test";
        let source = ScriptedSource::new();
        source.then(Err(SourceError::failed("the browser login was cancelled")));
        source.then(Err(SourceError::failed(
            "the browser login was cancelled again",
        )));
        scripted::register(authority, source.clone());
        let spec = CredentialSpec::InteractiveBrowser {
            client_id: None,
            tenant_id: None,
            timeout_secs: 300,
            use_broker: false,
        };
        let (actor, _deps, _activity, _health, _dir) = start_as(spec, authority).await;
        acquire(&actor, None).await.unwrap_err();

        // The clients right behind the failed login do not prompt again...
        tokio::time::advance(Duration::from_secs(2)).await;
        let remembered = acquire(&actor, None).await.unwrap_err();
        assert!(
            remembered.message().starts_with(
                "the browser login was cancelled (the same request failed moments ago"
            ),
            "{remembered:?}"
        );
        assert_eq!(source.calls(), 1);
        // ...but a person who retries is not kept waiting as long as for a tool.
        tokio::time::advance(Duration::from_secs(1)).await;
        let again = acquire(&actor, None).await.unwrap_err();
        assert_eq!(again.message(), "the browser login was cancelled again");
        assert_eq!(source.calls(), 2);
        assert!(
            failure_ttl(CredentialKind::InteractiveBrowser) < failure_ttl(CredentialKind::AzureCli)
        );
        actor.stop(None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_refresh_neither_holds_clients_nor_loses_its_backoff() {
        let source = ScriptedSource::new();
        source.then(Ok(scripted::token("first", 3600, None)));
        let (actor, deps, _activity, _dir) =
            start("https://credential-refresh-memory.test", &source).await;
        acquire(&actor, Some(key())).await.unwrap();
        settle().await;

        source.then(Err(SourceError::failed("az failed in the background")));
        tokio::time::advance(REFRESH_POINT).await;
        wait_for("the refresh to fail", async || {
            deps.stats.refresh_failures.load(SeqCst) == 1
        })
        .await;
        assert_eq!(source.calls(), 2);

        // A client's miss right after still goes upstream.
        source.then(Ok(scripted::token("client", 3600, None)));
        let entry = acquire(&actor, None).await.unwrap();
        assert_eq!(entry.access_token.expose(), "client");
        assert_eq!(source.calls(), 3);

        // The refresh retries on its own backoff (30 s at least), not before.
        source.then(Ok(scripted::token("second", 3600, None)));
        tokio::time::advance(Duration::from_secs(29)).await;
        settle().await;
        assert_eq!(source.calls(), 3);
        tokio::time::advance(Duration::from_secs(120)).await;
        wait_for("the retried refresh", async || {
            deps.cache
                .peek(&key())
                .await
                .is_some_and(|t| t.access_token.expose() == "second")
        })
        .await;
        assert_eq!(source.silent_calls(), 2);
        actor.stop(None);
    }

    #[tokio::test]
    async fn a_two_scope_request_for_az_is_unsupported_not_a_failure() {
        // No scripted source: the real Azure CLI source, which refuses two
        // scopes before running anything.
        let (actor, _deps, _activity, health, _dir) = start_as(
            CredentialSpec::AzureCli(ToolSpec::default()),
            "https://credential-two-scopes.test",
        )
        .await;
        let two_scopes = SourceRequest {
            scopes: vec![
                "https://management.azure.com/.default".into(),
                "https://vault.azure.net/.default".into(),
            ],
            ..request()
        };
        for _ in 0..2 {
            let refused = acquire_for(&actor, two_scopes.clone(), None)
                .await
                .unwrap_err();
            assert!(
                matches!(&refused, SourceError::Unavailable(m) if m.contains("exactly one scope")),
                "{refused:?}"
            );
        }
        let id = CredentialId::of(
            &CredentialSpec::AzureCli(ToolSpec::default()),
            "https://credential-two-scopes.test",
        );
        let status = health.status(&id);
        assert_eq!(status.state, azbroker_proto::CredentialState::Idle);
        assert_eq!(status.last_error, None);
        assert_eq!(health.recently_unavailable(Duration::from_secs(60)), None);
        actor.stop(None);
    }
}
