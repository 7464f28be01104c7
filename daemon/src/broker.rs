//! The broker: shared state and the two paths of a token request.
//!
//! Tokens belong to credentials, not to chains: a chain is only the order in
//! which credentials are tried. Hit ([`Broker::lookup`]): validate, build the
//! request key, then two map reads (the credential this chain resolved to,
//! that credential's token). No actor hop, no lock. Miss
//! ([`Broker::acquire`]): [`Broker::resolve`] walks the client's chain in
//! order; for each credential, a token it already minted for this tenant and
//! scopes is served as is, else the cache's single-flight (one per credential
//! key, shared by every chain that reaches it) asks the credential's actor
//! with one message that carries the key. The first token wins, the chain's
//! resolution is remembered, and the actor, which built the cache entry,
//! keeps that key fresh.
//!
//! What else a client asks goes through the broker's state too, in modules of
//! their own: [`status`] (the report) and [`accounts`] (login, logout).

mod accounts;
mod status;

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use azbroker_netcheck::NetworkSettings;
use azbroker_proto::{
    AuditOutcome, ChainSpec, CredentialKind, CredentialReason, CredentialSpec, ErrorKind, GetToken,
    ManagedIdentityEndpoint, WireError,
};
use ractor::rpc::CallResult;
use ractor::ActorRef;
use tokio::sync::watch;

use crate::actors::credential::CredentialMsg;
use crate::actors::registry::Registry;
use crate::actors::supervisor::SupervisorMsg;
use crate::actors::ActorDeps;
use crate::audit::{Audit, Event};
use crate::cache::{CacheKey, CachedToken, HitMemo, Target, TokenCache};
use crate::clock;
use crate::identity::CredentialId;
use crate::login::Accounts;
use crate::policy::{Policy, PolicyMemo};
use crate::refresh::{DEFAULT_MIN_VALIDITY_SECS, MAX_MIN_VALIDITY_SECS, STALE_MIN_VALIDITY_SECS};
use crate::scopes;
use crate::session::Session;
use crate::sources::{self, SourceError, SourceRequest};
use crate::stats::Stats;

/// Backstop for one credential's acquisition; each source has a tighter limit of its own.
const ACQUIRE_BACKSTOP: Duration = Duration::from_secs(15 * 60);

pub struct Broker {
    pub cache: TokenCache,
    /// Who may have which scopes (exec grants, the policy file).
    pub policy: Arc<Policy>,
    pub stats: Arc<Stats>,
    /// The proxy and trust settings of the shared HTTP client (for diagnostics).
    pub network: Arc<NetworkSettings>,
    registry: Arc<Registry>,
    supervisor: ActorRef<SupervisorMsg>,
    accounts: Arc<Accounts>,
    started: Instant,
    socket_path: String,
    shutdown: watch::Sender<bool>,
    /// Where the managed-identity endpoint serves, set once when it does.
    mi_endpoint: OnceLock<ManagedIdentityEndpoint>,
    /// Every token request, who asked and what came of it (`azbroker audit`).
    pub audit: Arc<Audit>,
}

/// A validated token request. The key holds its normalized scopes and tenant;
/// a [`SourceRequest`] is built from it only on a miss.
pub struct Prepared {
    /// The session's chain fingerprint.
    chain: u128,
    target: Arc<Target>,
    claims: Option<String>,
    /// Whether a credential may ask the user (the session's chain says).
    interactive: bool,
    min_validity: i64,
    /// How long a token must still live to be served when no newer one can be
    /// had; `None` when the client asked for a validity of its own.
    fallback_validity: Option<i64>,
}

impl Prepared {
    fn source_request(&self) -> SourceRequest {
        SourceRequest {
            scopes: self.target.scopes.clone(),
            tenant: self.target.tenant.clone(),
            claims: self.claims.clone(),
            interactive: self.interactive,
        }
    }
}

/// How a request that was served came by its token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fetched {
    /// From the cache, or from another request's acquisition.
    Cached,
    /// Acquired for it, where the cache held no token of this credential.
    Acquired,
    /// Acquired for it, replacing a token the cache held (too close to expiry).
    Refreshed,
}

/// The scopes of a request the broker refused, as the audit keeps them:
/// bounded, since they were not validated.
fn audit_scopes(scopes: &[String]) -> Vec<String> {
    const MAX_SCOPES: usize = 8;
    const MAX_SCOPE_LEN: usize = 256;
    scopes
        .iter()
        .take(MAX_SCOPES)
        .map(|scope| {
            let mut end = scope.len().min(MAX_SCOPE_LEN);
            while !scope.is_char_boundary(end) {
                end -= 1;
            }
            scope[..end].to_owned()
        })
        .collect()
}

impl Broker {
    /// The broker over what the credential actors share (`deps`: cache,
    /// counters, HTTP client, accounts) and the actor tree.
    pub fn new(
        deps: &ActorDeps,
        registry: Arc<Registry>,
        supervisor: ActorRef<SupervisorMsg>,
        socket_path: String,
        shutdown: watch::Sender<bool>,
        audit: Arc<Audit>,
    ) -> Broker {
        Broker {
            cache: deps.cache.clone(),
            // No policy file unless the daemon sets one (tests use none).
            policy: Arc::new(Policy::new(None)),
            stats: deps.stats.clone(),
            network: deps.http.network.clone(),
            registry,
            supervisor,
            accounts: deps.accounts.clone(),
            started: Instant::now(),
            socket_path,
            shutdown,
            mi_endpoint: OnceLock::new(),
            audit,
        }
    }

    /// Records where the managed-identity endpoint serves (once).
    pub fn set_mi_endpoint(&self, endpoint: ManagedIdentityEndpoint) {
        let _ = self.mi_endpoint.set(endpoint);
    }

    /// The managed-identity endpoint, when this daemon serves one.
    pub fn mi_endpoint(&self) -> Option<ManagedIdentityEndpoint> {
        self.mi_endpoint.get().cloned()
    }

    /// Validates a request, checks it against the scope policy and builds its
    /// cache key. A refusal is recorded in the audit trail here, with what
    /// was asked (a success is recorded once it is served).
    pub fn prepare(&self, session: &Session, request: GetToken) -> Result<Prepared, WireError> {
        self.prepare_remembered(session, request, &mut PolicyMemo::default())
    }

    /// [`Broker::prepare`] for a connection that keeps `memo` of what its
    /// requester was allowed (see [`crate::policy::Policy::check_remembered`]).
    pub fn prepare_remembered(
        &self,
        session: &Session,
        request: GetToken,
        memo: &mut PolicyMemo,
    ) -> Result<Prepared, WireError> {
        let invalid = |e: String| WireError::new(ErrorKind::InvalidRequest, e);
        let GetToken {
            scopes,
            tenant,
            claims,
            min_validity_secs,
        } = request;
        let refuse = |scopes: Vec<String>, tenant: Option<String>, error: WireError| {
            let outcome = match error.kind {
                // The only refusal here is the policy's.
                ErrorKind::Refused => AuditOutcome::Denied,
                _ => AuditOutcome::Failed,
            };
            self.record(
                session,
                Arc::new(Target { tenant, scopes }),
                None,
                None,
                outcome,
            );
            error
        };
        // Checked before they are taken: what was asked is recorded as sent.
        if let Err(e) = scopes::check_all(&scopes) {
            return Err(refuse(audit_scopes(&scopes), None, invalid(e)));
        }
        let scopes = scopes::normalize_checked(scopes);
        if let Some(bad) = tenant
            .as_deref()
            .and_then(|t| scopes::validate_tenant(t).err())
        {
            return Err(refuse(scopes, None, invalid(bad)));
        }
        // Before the cache is read: a denial never tells whether a token was cached.
        if let Err(e) = self
            .policy
            .check_remembered(&session.requester, &scopes, memo)
        {
            return Err(refuse(scopes, tenant, e));
        }
        if claims
            .as_ref()
            .is_some_and(|claims| claims.len() > scopes::MAX_CLAIMS_LEN)
        {
            let e = invalid(format!(
                "claims longer than {} bytes",
                scopes::MAX_CLAIMS_LEN
            ));
            return Err(refuse(scopes, tenant, e));
        }
        let (min_validity, fallback_validity) = match min_validity_secs {
            0 => (DEFAULT_MIN_VALIDITY_SECS, Some(STALE_MIN_VALIDITY_SECS)),
            secs if i64::from(secs) > MAX_MIN_VALIDITY_SECS => {
                let e = invalid(format!(
                    "min_validity_secs {secs} is above the maximum of {MAX_MIN_VALIDITY_SECS} s: \
                     access tokens rarely live much longer, so no token would satisfy it and every request would go to the identity provider"
                ));
                return Err(refuse(scopes, tenant, e));
            }
            secs => (i64::from(secs), None),
        };
        Ok(Prepared {
            chain: session.chain_fingerprint,
            target: Arc::new(Target { tenant, scopes }),
            claims,
            interactive: session.chain.interactive,
            min_validity,
            fallback_validity,
        })
    }

    /// The fast path: a cached token, or `None` for a miss. `memo` is the
    /// connection's own (a fresh one for a single request).
    pub async fn lookup(
        &self,
        session: &Session,
        prepared: &Prepared,
        memo: &mut HitMemo,
    ) -> Option<Arc<CachedToken>> {
        if prepared.claims.is_some() {
            return None;
        }
        let token = self
            .cache
            .lookup_remembered(
                memo,
                prepared.chain,
                &prepared.target,
                prepared.min_validity,
            )
            .await?;
        Stats::bump(&self.stats.cache_hits);
        self.record_served(session, prepared, &token, AuditOutcome::Hit);
        Some(token)
    }

    /// The slow path: walks the chain; one acquisition per credential key,
    /// however many callers (of however many chains) wait. Returns the token
    /// and whether it came from the cache after all. When a credential's
    /// acquisition fails, a token it minted before that is still valid for the
    /// request's fallback validity is served instead (the reply's `stale`
    /// says so).
    pub async fn acquire(
        &self,
        session: &Session,
        prepared: Prepared,
    ) -> Result<(Arc<CachedToken>, bool), WireError> {
        Stats::bump(&self.stats.cache_misses);
        let outcome = self.acquire_unaudited(session, &prepared).await;
        match &outcome {
            Ok((token, fetched)) => {
                let outcome = match fetched {
                    Fetched::Cached => AuditOutcome::Hit,
                    Fetched::Acquired => AuditOutcome::Acquired,
                    Fetched::Refreshed => AuditOutcome::Refreshed,
                };
                self.record_served(session, &prepared, token, outcome);
            }
            Err(_) => self.record(
                session,
                prepared.target.clone(),
                None,
                None,
                AuditOutcome::Failed,
            ),
        }
        outcome.map(|(token, fetched)| (token, fetched == Fetched::Cached))
    }

    async fn acquire_unaudited(
        &self,
        session: &Session,
        prepared: &Prepared,
    ) -> Result<(Arc<CachedToken>, Fetched), WireError> {
        let started_ms = clock::now_millis();
        let (token, fetched) = self.resolve(&session.chain, prepared).await?;
        if prepared.claims.is_some()
            || token.minted_at_ms >= started_ms
            || token.valid_for(prepared.min_validity)
        {
            return Ok((token, fetched));
        }
        // The token this key had before: no newer one could be acquired.
        if !prepared
            .fallback_validity
            .is_some_and(|floor| token.valid_for(floor))
        {
            // Another client's request, content with less, was served this token.
            return Err(WireError::new(
                ErrorKind::AuthenticationFailed,
                format!(
                    "no token valid for {} s could be acquired, and the cached one expires in {} s; 'azbroker status' shows why",
                    prepared.min_validity,
                    token.expires_on - clock::now_secs()
                ),
            ));
        }
        if let Some(registered) = self.registry.get(&token.credential_id) {
            registered.health.note_served_stale(token.expires_on);
        }
        Ok((token, Fetched::Cached))
    }

    /// Records a request that was served `token`.
    fn record_served(
        &self,
        session: &Session,
        prepared: &Prepared,
        token: &CachedToken,
        outcome: AuditOutcome,
    ) {
        let token_tenant = match prepared.target.tenant {
            Some(_) => None,
            None => token.tenant.clone(),
        };
        self.record(
            session,
            prepared.target.clone(),
            token_tenant,
            Some(token.credential_id.clone()),
            outcome,
        );
    }

    fn record(
        &self,
        session: &Session,
        target: Arc<Target>,
        token_tenant: Option<Arc<str>>,
        credential: Option<CredentialId>,
        outcome: AuditOutcome,
    ) {
        self.audit.record(Event {
            time_ms: clock::now_millis(),
            who: session.who.clone(),
            target,
            token_tenant,
            credential,
            outcome,
            count: 1,
        });
    }

    /// Walks the chain; the first credential that yields a token wins, and
    /// the chain's resolution to it is remembered for the hit path. A claims
    /// request bypasses the cache (a claims challenge asks for a token the
    /// cached one is not). Returns the token and how this call came by it.
    async fn resolve(
        &self,
        chain: &ChainSpec,
        prepared: &Prepared,
    ) -> Result<(Arc<CachedToken>, Fetched), WireError> {
        let request = prepared.source_request();
        let mut reasons = Vec::new();
        let mut timed_out = false;
        for spec in &chain.credentials {
            let kind = spec.kind();
            if !sources::is_implemented(kind) {
                reasons.push(CredentialReason {
                    credential: kind.name().into(),
                    unavailable: true,
                    reason: sources::unimplemented_reason(kind),
                });
                continue;
            }
            let id = CredentialId::of(spec, &chain.authority_host);
            let result = if prepared.claims.is_some() {
                self.ask(&id, spec, &chain.authority_host, &request, None)
                    .await
                    .map(|token| (token, Fetched::Acquired))
            } else {
                let key = CacheKey {
                    credential: id.clone(),
                    target: prepared.target.clone(),
                };
                let had_token = self.cache.peek(&key).await.is_some();
                let ran_here = AtomicBool::new(false);
                let acquisition = async {
                    ran_here.store(true, Relaxed);
                    self.ask(&id, spec, &chain.authority_host, &request, Some(&key))
                        .await
                };
                let got = self
                    .cache
                    .get_or_acquire(
                        key.clone(),
                        prepared.min_validity,
                        prepared.fallback_validity,
                        acquisition,
                    )
                    .await;
                match got {
                    Ok(token) => {
                        self.cache.note_resolution(prepared.chain, &id).await;
                        let fetched = match (ran_here.load(Relaxed), had_token) {
                            (false, _) => Fetched::Cached,
                            (true, false) => Fetched::Acquired,
                            (true, true) => Fetched::Refreshed,
                        };
                        Ok((token, fetched))
                    }
                    Err(shared) => Err(SourceError::clone(&shared)),
                }
            };
            match result {
                Ok(served) => return Ok(served),
                Err(e) => {
                    timed_out |= matches!(e, SourceError::Timeout(_));
                    reasons.push(CredentialReason {
                        credential: kind.name().into(),
                        unavailable: matches!(e, SourceError::Unavailable(_)),
                        reason: e.message().to_string(),
                    })
                }
            }
        }
        self.cache.forget_resolution(prepared.chain).await;
        Err(chain_error(chain, reasons, timed_out))
    }

    /// Asks one credential's actor for a token, starting the actor if needed;
    /// the actor keeps `track` fresh when its token is the one served.
    async fn ask(
        &self,
        id: &CredentialId,
        spec: &CredentialSpec,
        authority_host: &str,
        request: &SourceRequest,
        track: Option<&CacheKey>,
    ) -> Result<Arc<CachedToken>, SourceError> {
        self.ask_actor(id, spec, authority_host, request, track)
            .await
            .unwrap_or_else(|internal| Err(SourceError::failed(internal)))
    }

    async fn ask_actor(
        &self,
        id: &CredentialId,
        spec: &CredentialSpec,
        authority_host: &str,
        request: &SourceRequest,
        track: Option<&CacheKey>,
    ) -> Result<Result<Arc<CachedToken>, SourceError>, String> {
        // Two tries: an actor may stop (and be restarted) between lookup and call.
        for _ in 0..2 {
            let actor = match self.registry.get(id) {
                Some(registered) => registered.actor,
                None => self.ensure_actor(id, spec, authority_host).await?,
            };
            let call = actor
                .call(
                    |reply| CredentialMsg::Acquire {
                        request: request.clone(),
                        track: track.cloned(),
                        reply,
                    },
                    Some(ACQUIRE_BACKSTOP),
                )
                .await;
            match call {
                Ok(CallResult::Success(result)) => return Ok(result),
                Ok(CallResult::Timeout) => {
                    return Ok(Err(SourceError::Timeout(format!(
                        "no answer within {} s",
                        ACQUIRE_BACKSTOP.as_secs()
                    ))))
                }
                // The actor stopped (idle, or died) with our request: forget
                // it, so the next try starts a new one.
                Ok(CallResult::SenderError) | Err(_) => {
                    self.registry.remove_actor(id, actor.get_id())
                }
            }
        }
        Err(format!("the actor for {id} is not answering"))
    }

    async fn ensure_actor(
        &self,
        id: &CredentialId,
        spec: &CredentialSpec,
        authority_host: &str,
    ) -> Result<ActorRef<CredentialMsg>, String> {
        let call = self
            .supervisor
            .call(
                |reply| SupervisorMsg::Ensure {
                    id: id.clone(),
                    spec: spec.clone(),
                    authority_host: authority_host.to_string(),
                    reply,
                },
                Some(Duration::from_secs(10)),
            )
            .await;
        match call {
            Ok(CallResult::Success(result)) => result,
            _ => Err("the supervisor is not answering".into()),
        }
    }

    /// Drops every token of `credentials` and what their actors remember of
    /// their last answers: their logins changed (or were logged out).
    pub async fn drop_credentials(&self, credentials: &[CredentialId]) -> u64 {
        for id in credentials {
            if let Some(registered) = self.registry.get(id) {
                registered.health.forget_remembered_answers();
            }
        }
        let dropped = self.cache.invalidate_credentials(credentials).await;
        let names: Vec<String> = credentials.iter().map(ToString::to_string).collect();
        tracing::info!(credentials = ?names, dropped, "a tool login changed: its tokens are dropped");
        dropped
    }

    /// Drops the tokens of these scopes (all when empty) minted by
    /// credentials of these kinds (any when empty).
    pub async fn invalidate(
        &self,
        scopes: &[String],
        kinds: &[CredentialKind],
    ) -> Result<u64, WireError> {
        let scopes = if scopes.is_empty() {
            Vec::new()
        } else {
            scopes::normalize_scopes(scopes)
                .map_err(|e| WireError::new(ErrorKind::InvalidRequest, e))?
        };
        Ok(self.cache.invalidate(&scopes, kinds).await)
    }

    pub fn request_shutdown(&self) {
        let _ = self.shutdown.send(true);
    }

    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }
}

fn chain_error(chain: &ChainSpec, reasons: Vec<CredentialReason>, timed_out: bool) -> WireError {
    let failed = reasons.iter().any(|r| !r.unavailable);
    let (kind, message) = if failed && !timed_out {
        (
            ErrorKind::AuthenticationFailed,
            "authentication failed: no credential in the chain could provide a token",
        )
    } else if timed_out {
        (
            ErrorKind::Timeout,
            "timed out: no credential in the chain could provide a token in time",
        )
    } else {
        (
            ErrorKind::CredentialUnavailable,
            "no credential in the chain is available",
        )
    };
    WireError {
        kind,
        message: format!("{message} (chain: {})", chain.selected_by),
        reasons,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actors::activity::ActorLimits;
    use crate::actors::supervisor::{Supervisor, SupervisorArgs};
    use crate::token_source::scripted::{self, ScriptedSource};
    use azbroker_proto::{Hello, PROTOCOL_VERSION};
    use ractor::Actor;

    /// A session whose chain is `credentials` at `authority`.
    fn session(authority: &str, credentials: Vec<CredentialSpec>) -> Session {
        Session::open(
            Hello {
                protocol_version: PROTOCOL_VERSION,
                client_name: "broker test".into(),
                pid: 1,
                chain: ChainSpec {
                    authority_host: authority.into(),
                    credentials,
                    selected_by: "a test".into(),
                    interactive: true,
                },
            },
            Default::default(),
        )
        .unwrap()
    }

    fn az_profile(profile_dir: &str) -> CredentialSpec {
        CredentialSpec::AzureCli(azbroker_proto::ToolSpec {
            executable: Some("/usr/bin/az".into()),
            profile_dir: Some(profile_dir.into()),
            env: Vec::new(),
        })
    }

    /// A broker whose chain is one Azure CLI credential answered by `source`.
    async fn start(
        authority: &str,
        source: &Arc<ScriptedSource>,
    ) -> (Arc<Broker>, Session, tempfile::TempDir) {
        scripted::register(authority, source.clone());
        let (deps, dir) = crate::actors::test_deps();
        let registry = Arc::new(Registry::default());
        let (supervisor, _) = Actor::spawn(
            None,
            Supervisor,
            SupervisorArgs {
                deps: deps.clone(),
                registry: registry.clone(),
                limits: ActorLimits::default(),
            },
        )
        .await
        .unwrap();
        let (shutdown, _) = watch::channel(false);
        let audit = Arc::new(Audit::start(crate::audit::AuditConfig::memory_only()));
        let broker = Broker::new(&deps, registry, supervisor, "test".into(), shutdown, audit);
        let session = session(
            authority,
            vec![CredentialSpec::AzureCli(Default::default())],
        );
        (Arc::new(broker), session, dir)
    }

    /// The outcomes the audit recorded so far, oldest first.
    async fn audited(broker: &Broker) -> Vec<AuditOutcome> {
        broker.audit.flush();
        let page = broker.audit.query(&azbroker_proto::AuditQuery {
            after_seq: 0,
            since_ms: None,
            name: None,
            limit: 0,
        });
        page.records.iter().map(|(_, r)| r.outcome).collect()
    }

    #[tokio::test]
    async fn the_audit_tells_refreshes_and_failures_from_acquisitions() {
        let source = ScriptedSource::new();
        // Too close to expiry for the next request: it fetches a newer one.
        source.then(Ok(scripted::token("short", 120, None)));
        source.then(Ok(scripted::token("newer", 3600, None)));
        let (broker, session, _dir) = start("https://broker-audit.test", &source).await;
        let scope = "https://management.azure.com/.default";
        for _ in 0..2 {
            let prepared = broker.prepare(&session, get(scope)).unwrap();
            assert!(broker
                .lookup(&session, &prepared, &mut HitMemo::default())
                .await
                .is_none());
            broker.acquire(&session, prepared).await.unwrap();
        }
        source.then(Err(SourceError::failed("AADSTS50076: MFA required")));
        let other = broker
            .prepare(&session, get("api://other/.default"))
            .unwrap();
        broker.acquire(&session, other).await.unwrap_err();
        let invalid = broker.prepare(&session, get("not a scope")).err().unwrap();
        assert_eq!(invalid.kind, ErrorKind::InvalidRequest);
        assert_eq!(
            audited(&broker).await,
            [
                AuditOutcome::Acquired,
                AuditOutcome::Refreshed,
                AuditOutcome::Failed,
                AuditOutcome::Failed
            ]
        );
        let page = broker.audit.query(&azbroker_proto::AuditQuery {
            after_seq: 0,
            since_ms: None,
            name: None,
            limit: 0,
        });
        let (_, refreshed) = &page.records[1];
        assert_eq!(refreshed.scopes, [scope]);
        assert_eq!(refreshed.client, "broker test");
        assert!(refreshed
            .credential
            .as_deref()
            .is_some_and(|c| c.starts_with("AzureCliCredential#")));
        let (_, invalid) = &page.records[3];
        assert_eq!(invalid.scopes, ["not a scope"]);
        assert_eq!(invalid.credential, None);
    }

    fn get(scope: &str) -> GetToken {
        GetToken {
            scopes: vec![scope.into()],
            tenant: None,
            claims: None,
            min_validity_secs: 0,
        }
    }

    #[tokio::test]
    async fn a_miss_acquires_once_and_the_next_request_hits() {
        let source = ScriptedSource::new();
        source.then(Ok(scripted::token("arm", 3600, None)));
        let (broker, session, _dir) = start("https://broker-miss.test", &source).await;
        let scope = "https://management.azure.com/.default";

        let prepared = broker.prepare(&session, get(scope)).unwrap();
        assert!(broker
            .lookup(&session, &prepared, &mut HitMemo::default())
            .await
            .is_none());
        let (token, cached) = broker.acquire(&session, prepared).await.unwrap();
        assert_eq!(token.access_token.expose(), "arm");
        assert!(!cached, "the miss ran the acquisition itself");

        let prepared = broker.prepare(&session, get(scope)).unwrap();
        let hit = broker
            .lookup(&session, &prepared, &mut HitMemo::default())
            .await
            .expect("a hit");
        assert!(Arc::ptr_eq(&hit, &token));
        assert_eq!(source.calls(), 1);
        assert_eq!(broker.stats.cache_hits.load(Relaxed), 1);
        assert_eq!(broker.stats.cache_misses.load(Relaxed), 1);
        assert_eq!(
            audited(&broker).await,
            [AuditOutcome::Acquired, AuditOutcome::Hit]
        );
        // The winning actor keeps the key fresh: it schedules the refresh itself.
        let activity = broker.registry.get(&token.credential_id).unwrap().activity;
        for _ in 0..250 {
            if !activity.is_idle(Duration::ZERO, i64::MAX) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the served key's refresh was never scheduled");
    }

    #[tokio::test]
    async fn concurrent_misses_for_one_key_make_one_acquisition() {
        let source = ScriptedSource::new();
        let release = source.then_held(Ok(scripted::token("shared", 3600, None)));
        let (broker, session, _dir) = start("https://broker-single-flight.test", &source).await;
        let session = Arc::new(session);

        let mut waiters = Vec::new();
        for _ in 0..20 {
            let (broker, session) = (broker.clone(), session.clone());
            waiters.push(tokio::spawn(async move {
                let prepared = broker.prepare(&session, get("api://one/.default")).unwrap();
                broker.acquire(&session, prepared).await.unwrap()
            }));
        }
        // All twenty are waiting on the one acquisition before it answers.
        while broker.stats.cache_misses.load(Relaxed) < 20 || source.calls() < 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        release.add_permits(1);
        let mut tokens = Vec::new();
        for waiter in waiters {
            tokens.push(waiter.await.unwrap());
        }
        assert_eq!(source.calls(), 1);
        assert!(tokens.iter().all(|(t, _)| Arc::ptr_eq(t, &tokens[0].0)));
        assert_eq!(tokens.iter().filter(|(_, cached)| !cached).count(), 1);
    }

    #[tokio::test]
    async fn a_failed_acquisition_reports_every_reason_and_caches_no_token() {
        let source = ScriptedSource::new();
        source.then(Err(SourceError::failed("AADSTS700016: no such app")));
        let (broker, session, _dir) = start("https://broker-failure.test", &source).await;
        let scope = "api://two/.default";

        let prepared = broker.prepare(&session, get(scope)).unwrap();
        let error = broker.acquire(&session, prepared).await.unwrap_err();
        assert_eq!(error.kind, ErrorKind::AuthenticationFailed);
        assert_eq!(error.reasons.len(), 1);
        assert_eq!(error.reasons[0].credential, "AzureCliCredential");
        assert!(!error.reasons[0].unavailable);
        assert_eq!(error.reasons[0].reason, "AADSTS700016: no such app");
        let prepared = broker.prepare(&session, get(scope)).unwrap();
        assert!(broker
            .lookup(&session, &prepared, &mut HitMemo::default())
            .await
            .is_none());
        assert!(broker.cache.entries().is_empty());

        // The failure is remembered for a few seconds (the credential's failure memory): the next
        // miss is answered with it, without asking the credential again.
        let again = broker.acquire(&session, prepared).await.unwrap_err();
        assert!(
            again.reasons[0].reason.contains("failed moments ago"),
            "{again:?}"
        );
        assert_eq!(source.calls(), 1);
    }

    #[tokio::test]
    async fn chains_spelled_differently_share_the_token_of_the_credential_they_resolve_to() {
        let source = ScriptedSource::new();
        source.then(Ok(scripted::token("shared", 3600, None)));
        let authority = "https://broker-sharing.test";
        let (broker, alone, _dir) = start(authority, &source).await;
        // VisualStudio is skipped on this platform: the walk ends at the same AzureCli.
        let dev = session(
            authority,
            vec![
                CredentialSpec::VisualStudio,
                CredentialSpec::AzureCli(Default::default()),
            ],
        );
        assert_ne!(alone.chain_fingerprint, dev.chain_fingerprint);
        let scope = "https://management.azure.com/.default";

        let (first, _) = broker
            .acquire(&alone, broker.prepare(&alone, get(scope)).unwrap())
            .await
            .unwrap();
        let prepared = broker.prepare(&dev, get(scope)).unwrap();
        assert!(
            broker
                .lookup(&dev, &prepared, &mut HitMemo::default())
                .await
                .is_none(),
            "this chain has not resolved yet"
        );
        let (second, cached) = broker.acquire(&dev, prepared).await.unwrap();
        assert!(Arc::ptr_eq(&first, &second));
        assert!(cached, "served from the credential's cache, no acquisition");
        assert_eq!(source.calls(), 1);
        // From now on the other chain hits too.
        let hit = broker
            .lookup(
                &dev,
                &broker.prepare(&dev, get(scope)).unwrap(),
                &mut HitMemo::default(),
            )
            .await
            .expect("a hit through the remembered resolution");
        assert!(Arc::ptr_eq(&hit, &first));
        assert_eq!(broker.cache.entries().len(), 1, "one token, whoever asks");
    }

    #[tokio::test]
    async fn two_profiles_of_one_tool_are_two_credentials() {
        let source = ScriptedSource::new();
        source.then(Ok(scripted::token("default profile", 3600, None)));
        source.then(Ok(scripted::token("work profile", 3600, None)));
        let authority = "https://broker-profiles.test";
        let (broker, _, _dir) = start(authority, &source).await;
        let default = session(authority, vec![az_profile("/home/u/.azure")]);
        let work = session(authority, vec![az_profile("/home/u/.azure-work")]);
        let scope = "https://management.azure.com/.default";

        let (a, _) = broker
            .acquire(&default, broker.prepare(&default, get(scope)).unwrap())
            .await
            .unwrap();
        let (b, _) = broker
            .acquire(&work, broker.prepare(&work, get(scope)).unwrap())
            .await
            .unwrap();
        assert_eq!(a.access_token.expose(), "default profile");
        assert_eq!(b.access_token.expose(), "work profile");
        assert_ne!(a.credential_id, b.credential_id);
        assert_eq!(source.calls(), 2);
    }

    #[tokio::test]
    async fn dropping_a_credentials_tokens_drops_the_chains_resolutions_to_it() {
        let source = ScriptedSource::new();
        source.then(Ok(scripted::token("before", 3600, None)));
        source.then(Ok(scripted::token("after", 3600, None)));
        let (broker, session, _dir) = start("https://broker-drop.test", &source).await;
        let scope = "https://management.azure.com/.default";
        let (token, _) = broker
            .acquire(&session, broker.prepare(&session, get(scope)).unwrap())
            .await
            .unwrap();
        let prepared = broker.prepare(&session, get(scope)).unwrap();
        assert!(broker.cache.resolution(prepared.chain).await.is_some());

        let dropped = broker
            .cache
            .invalidate_credentials(std::slice::from_ref(&token.credential_id))
            .await;
        assert_eq!(dropped, 1);
        assert!(broker.cache.resolution(prepared.chain).await.is_none());
        assert!(broker
            .lookup(&session, &prepared, &mut HitMemo::default())
            .await
            .is_none());
        let (next, _) = broker.acquire(&session, prepared).await.unwrap();
        assert_eq!(next.access_token.expose(), "after");
    }
}
