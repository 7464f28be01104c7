//! How one credential has been doing: its state for `azbroker status`, the
//! last success and error, when it last said "unavailable" or failed a
//! client's acquisition (negative caching) and any `Retry-After` backoff. Kept
//! apart from the actor so that it survives the actor's restart.
//!
//! Times are tokio's monotonic instants: the real monotonic clock in the
//! daemon, and a paused, advanceable one in unit tests.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use azbroker_proto::{CredentialKind, CredentialState, CredentialStatus};

use crate::clock;
use crate::identity::CredentialId;
use crate::token_source::{SourceError, SourceRequest, Token};

/// How one credential has been doing. Error texts come from sources, which
/// never put a token or secret in them.
pub struct Health {
    kind: CredentialKind,
    inner: Mutex<HealthInner>,
}

struct HealthInner {
    state: CredentialState,
    acquisitions: u64,
    last_success: Option<i64>,
    last_error: Option<String>,
    /// When the credential last said "unavailable" (monotonic), for negative caching.
    unavailable_since: Option<Instant>,
    /// Client acquisitions that failed lately, by request, with when (negative
    /// caching). By request, not for the whole credential: a scope the
    /// credential cannot serve (no consent, a typo) must not fail the others.
    failures: HashMap<SourceRequest, (Instant, SourceError)>,
    /// Until when the service asked us to wait (`Retry-After`), client requests included.
    backoff_until: Option<Instant>,
    /// Expiry of a cached token served past its floor because acquisitions fail (for status).
    serving_stale_until: Option<i64>,
}

/// Who asked for an acquisition whose outcome is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A client's request (a cache miss): its failure is remembered for the
    /// next clients.
    Client,
    /// A background refresh: its failure is recorded for `status` only.
    Refresh,
}

/// Failures older than this are forgotten whatever the window (windows are seconds).
const FORGET_FAILURES_AFTER: Duration = Duration::from_secs(60);
/// At most this many requests' failures are remembered per credential; the
/// oldest goes first.
const MAX_REMEMBERED_FAILURES: usize = 32;

fn remember_failure(
    failures: &mut HashMap<SourceRequest, (Instant, SourceError)>,
    request: &SourceRequest,
    error: &SourceError,
    now: Instant,
) {
    failures.retain(|_, (since, _)| now.saturating_duration_since(*since) < FORGET_FAILURES_AFTER);
    if failures.len() >= MAX_REMEMBERED_FAILURES && !failures.contains_key(request) {
        let oldest = failures
            .iter()
            .min_by_key(|(_, (since, _))| *since)
            .map(|(request, _)| request.clone());
        if let Some(oldest) = oldest {
            failures.remove(&oldest);
        }
    }
    failures.insert(request.clone(), (now, error.clone()));
}

/// A server's `Retry-After` is honoured up to this long; a larger value is
/// taken as this, so a bogus header cannot lock a credential out for days.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60 * 60);

impl Health {
    pub fn new(kind: CredentialKind) -> Self {
        Health {
            kind,
            inner: Mutex::new(HealthInner {
                state: CredentialState::Idle,
                acquisitions: 0,
                last_success: None,
                last_error: None,
                unavailable_since: None,
                failures: HashMap::new(),
                backoff_until: None,
                serving_stale_until: None,
            }),
        }
    }

    /// The outcome of an acquisition of `request`.
    pub fn record(
        &self,
        request: &SourceRequest,
        result: &Result<Token, SourceError>,
        origin: Origin,
    ) {
        self.record_at(request, result, origin, Instant::now());
    }

    fn record_at(
        &self,
        request: &SourceRequest,
        result: &Result<Token, SourceError>,
        origin: Origin,
        now: Instant,
    ) {
        let mut inner = self.inner.lock().expect("health lock");
        inner.unavailable_since = None;
        match (result, origin) {
            (Ok(_), _) => drop(inner.failures.remove(request)),
            // "Unavailable" is remembered for the whole credential instead.
            (Err(SourceError::Unavailable(_)), Origin::Client) => inner.failures.clear(),
            // The backoff below holds the clients for as long as the service said.
            (
                Err(SourceError::Failed {
                    retry_after: Some(_),
                    ..
                }),
                Origin::Client,
            ) => drop(inner.failures.remove(request)),
            (Err(e), Origin::Client) => remember_failure(&mut inner.failures, request, e, now),
            // A refresh retries on its own schedule, and a silent refresh may
            // fail where the client's acquisition (which may ask the user) would not.
            (Err(_), Origin::Refresh) => {}
        }
        inner.backoff_until = match result {
            Err(SourceError::Failed {
                retry_after: Some(wait),
                ..
            }) => Some(now + (*wait).min(MAX_BACKOFF)),
            _ => None,
        };
        match result {
            Ok(_) => {
                inner.serving_stale_until = None;
                inner.state = CredentialState::Healthy;
                inner.acquisitions += 1;
                inner.last_success = Some(clock::now_secs());
            }
            Err(SourceError::Unavailable(reason)) => {
                inner.state = CredentialState::Unavailable;
                inner.last_error = Some(reason.clone());
                inner.unavailable_since = Some(now);
            }
            Err(e) => {
                inner.state = CredentialState::Failing;
                inner.last_error = Some(e.message().to_string());
            }
        }
    }

    /// The reason of an "unavailable" answer given less than `ttl` ago, if the
    /// last answer was one: the chain then skips the credential without
    /// running it again (negative caching).
    pub fn recently_unavailable(&self, ttl: Duration) -> Option<String> {
        self.recently_unavailable_at(ttl, Instant::now())
    }

    /// The credential's login changed (a new `az login`): what was
    /// remembered about the old one no longer holds, so the next request runs
    /// the tool again. A service's Retry-After still holds.
    pub fn forget_remembered_answers(&self) {
        let mut inner = self.inner.lock().expect("health lock");
        inner.unavailable_since = None;
        inner.failures.clear();
    }

    fn recently_unavailable_at(&self, ttl: Duration, now: Instant) -> Option<String> {
        let inner = self.inner.lock().expect("health lock");
        let since = inner.unavailable_since?;
        (now.saturating_duration_since(since) < ttl)
            .then(|| inner.last_error.clone())
            .flatten()
    }

    /// The failure of a client acquisition of `request` that came less than
    /// `ttl` ago, if no success or "unavailable" came since, with how much of `ttl` is left: clients
    /// are answered with it instead of going upstream again (negative caching).
    pub fn recently_failed(
        &self,
        request: &SourceRequest,
        ttl: Duration,
    ) -> Option<(Duration, SourceError)> {
        self.recently_failed_at(request, ttl, Instant::now())
    }

    fn recently_failed_at(
        &self,
        request: &SourceRequest,
        ttl: Duration,
        now: Instant,
    ) -> Option<(Duration, SourceError)> {
        let inner = self.inner.lock().expect("health lock");
        let (since, error) = inner.failures.get(request)?;
        let left = ttl.checked_sub(now.saturating_duration_since(*since))?;
        (!left.is_zero()).then(|| (left, error.clone()))
    }

    /// How much longer the service asked us to wait, with the failure that
    /// said so: while it lasts, no acquisition of this credential goes upstream.
    pub fn backoff(&self) -> Option<(Duration, String)> {
        self.backoff_at(Instant::now())
    }

    fn backoff_at(&self, now: Instant) -> Option<(Duration, String)> {
        let inner = self.inner.lock().expect("health lock");
        let remaining = inner.backoff_until?.checked_duration_since(now)?;
        if remaining.is_zero() {
            return None;
        }
        Some((remaining, inner.last_error.clone().unwrap_or_default()))
    }

    /// A token of this credential that expires at `expires_on` was served
    /// under its floor because no newer one could be had; status says so
    /// until an acquisition succeeds or that token expires.
    pub fn note_served_stale(&self, expires_on: i64) {
        let mut inner = self.inner.lock().expect("health lock");
        inner.serving_stale_until = Some(expires_on);
    }

    pub fn status(&self, id: &CredentialId) -> CredentialStatus {
        let inner = self.inner.lock().expect("health lock");
        let mut last_error = inner.last_error.clone();
        if let Some(until) = inner
            .serving_stale_until
            .filter(|until| *until > clock::now_secs())
        {
            let error = last_error.as_deref().unwrap_or("acquisitions fail");
            last_error = Some(format!(
                "{error} [warning: serving a cached token below its refresh floor until it expires at {until}]"
            ));
        }
        CredentialStatus {
            credential: self.kind.name().to_string(),
            identity: id.fingerprint(),
            state: inner.state,
            acquisitions: inner.acquisitions,
            last_success: inner.last_success,
            last_error,
            profile: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use azbroker_proto::Secret;

    fn request(scope: &str) -> SourceRequest {
        SourceRequest {
            scopes: vec![scope.into()],
            tenant: None,
            claims: None,
            interactive: true,
        }
    }

    fn arm() -> SourceRequest {
        request("https://management.azure.com/.default")
    }

    fn token() -> Result<Token, SourceError> {
        Ok(Token {
            access_token: Secret::new("t"),
            expires_on: 0,
            refresh_in: None,
            tenant: None,
        })
    }

    #[test]
    fn unavailable_is_remembered_for_the_ttl_only() {
        let health = Health::new(CredentialKind::AzureCli);
        let start = Instant::now();
        let ttl = Duration::from_secs(5);
        assert_eq!(health.recently_unavailable_at(ttl, start), None);
        health.record_at(
            &arm(),
            &Err(SourceError::Unavailable("run 'az login'".into())),
            Origin::Client,
            start,
        );
        let remembered = health.recently_unavailable_at(ttl, start + Duration::from_secs(4));
        assert_eq!(remembered.as_deref(), Some("run 'az login'"));
        assert_eq!(health.recently_unavailable_at(ttl, start + ttl), None);
    }

    #[test]
    fn failures_and_successes_are_not_remembered_as_unavailable() {
        let health = Health::new(CredentialKind::AzureCli);
        let now = Instant::now();
        let ttl = Duration::from_secs(5);
        health.record_at(
            &arm(),
            &Err(SourceError::Unavailable("x".into())),
            Origin::Client,
            now,
        );
        health.record_at(
            &arm(),
            &Err(SourceError::failed("AADSTS70043")),
            Origin::Client,
            now,
        );
        assert_eq!(health.recently_unavailable_at(ttl, now), None);
        health.record_at(
            &arm(),
            &Err(SourceError::Unavailable("x".into())),
            Origin::Client,
            now,
        );
        health.record_at(&arm(), &token(), Origin::Client, now);
        assert_eq!(health.recently_unavailable_at(ttl, now), None);
        assert_eq!(health.status(&dummy_id()).state, CredentialState::Healthy);
    }

    #[test]
    fn a_client_failure_is_remembered_as_it_was_for_the_ttl_only() {
        let health = Health::new(CredentialKind::AzureCli);
        let start = Instant::now();
        let ttl = Duration::from_secs(5);
        assert_eq!(health.recently_failed_at(&arm(), ttl, start), None);
        let failure = SourceError::failed("ERROR: AADSTS50076: MFA required");
        health.record_at(&arm(), &Err(failure.clone()), Origin::Client, start);
        assert_eq!(
            health.recently_failed_at(&arm(), ttl, start + Duration::from_secs(1)),
            Some((Duration::from_secs(4), failure))
        );
        assert_eq!(health.recently_failed_at(&arm(), ttl, start + ttl), None);
        // A timeout stays a timeout, and is not "unavailable".
        let timeout = SourceError::Timeout("az did not answer within 13 s".into());
        health.record_at(&arm(), &Err(timeout.clone()), Origin::Client, start);
        assert_eq!(
            health
                .recently_failed_at(&arm(), ttl, start)
                .map(|(_, e)| e),
            Some(timeout)
        );
        assert_eq!(health.recently_unavailable_at(ttl, start), None);
        assert_eq!(health.status(&dummy_id()).state, CredentialState::Failing);
    }

    #[test]
    fn a_login_change_forgets_failures_and_unavailability() {
        let health = Health::new(CredentialKind::AzureCli);
        let now = Instant::now();
        let ttl = Duration::from_secs(5);
        let failure = SourceError::failed("ERROR: AADSTS50076: MFA required");
        health.record_at(&arm(), &Err(failure), Origin::Client, now);
        assert!(health.recently_failed_at(&arm(), ttl, now).is_some());
        health.forget_remembered_answers();
        assert_eq!(health.recently_failed_at(&arm(), ttl, now), None);
        let unavailable = SourceError::Unavailable("run 'az login'".into());
        health.record_at(&arm(), &Err(unavailable), Origin::Client, now);
        assert!(health.recently_unavailable_at(ttl, now).is_some());
        health.forget_remembered_answers();
        assert_eq!(health.recently_unavailable_at(ttl, now), None);
    }

    #[test]
    fn a_failure_is_remembered_for_its_own_request_only() {
        let health = Health::new(CredentialKind::AzureCli);
        let now = Instant::now();
        let ttl = Duration::from_secs(5);
        let failure = SourceError::failed("AADSTS65001: no consent for this resource");
        health.record_at(&arm(), &Err(failure), Origin::Client, now);
        let vault = request("https://vault.azure.net/.default");
        assert_eq!(health.recently_failed_at(&vault, ttl, now), None);
        // A claims challenge is another request: the remedy of some failures.
        let challenge = SourceRequest {
            claims: Some("{}".into()),
            ..arm()
        };
        assert_eq!(health.recently_failed_at(&challenge, ttl, now), None);
        // Another request's success does not end it.
        health.record_at(&vault, &token(), Origin::Client, now);
        assert!(health.recently_failed_at(&arm(), ttl, now).is_some());
    }

    #[test]
    fn the_failure_memory_is_bounded() {
        let health = Health::new(CredentialKind::AzureCli);
        let start = Instant::now();
        let ttl = Duration::from_secs(5);
        let failed = Err(SourceError::failed("x"));
        let requests: Vec<_> = (0..=MAX_REMEMBERED_FAILURES)
            .map(|n| request(&format!("https://app-{n}.example/.default")))
            .collect();
        for (n, request) in requests.iter().enumerate() {
            let at = start + Duration::from_millis(n as u64);
            health.record_at(request, &failed, Origin::Client, at);
        }
        let at = start + Duration::from_secs(1);
        // The oldest went to make room for the newest.
        assert_eq!(health.recently_failed_at(&requests[0], ttl, at), None);
        assert!(health.recently_failed_at(&requests[1], ttl, at).is_some());
        let newest = &requests[MAX_REMEMBERED_FAILURES];
        assert!(health.recently_failed_at(newest, ttl, at).is_some());
        // Anything a minute old is dropped at the next failure.
        let later = start + FORGET_FAILURES_AFTER + Duration::from_secs(1);
        health.record_at(&arm(), &failed, Origin::Client, later);
        assert_eq!(health.inner.lock().unwrap().failures.len(), 1);
    }

    #[test]
    fn any_other_outcome_ends_the_failure_memory() {
        let health = Health::new(CredentialKind::AzureCli);
        let now = Instant::now();
        let ttl = Duration::from_secs(5);
        let failed = Err(SourceError::failed("az failed"));
        health.record_at(&arm(), &failed, Origin::Client, now);
        health.record_at(&arm(), &token(), Origin::Client, now);
        assert_eq!(health.recently_failed_at(&arm(), ttl, now), None);
        health.record_at(&arm(), &failed, Origin::Client, now);
        health.record_at(
            &arm(),
            &Err(SourceError::Unavailable("x".into())),
            Origin::Client,
            now,
        );
        assert_eq!(health.recently_failed_at(&arm(), ttl, now), None);
        // A refresh's success shows the credential works again.
        health.record_at(&arm(), &failed, Origin::Client, now);
        health.record_at(&arm(), &token(), Origin::Refresh, now);
        assert_eq!(health.recently_failed_at(&arm(), ttl, now), None);
    }

    #[test]
    fn a_refresh_failure_is_shown_but_not_remembered_for_clients() {
        let health = Health::new(CredentialKind::InteractiveBrowser);
        let now = Instant::now();
        let ttl = Duration::from_secs(5);
        // A silent refresh that needs the user must not turn the next
        // client (whose acquisition may open a browser) away.
        let silent = Err(SourceError::failed("AADSTS50078: interaction required"));
        health.record_at(&arm(), &silent, Origin::Refresh, now);
        assert_eq!(health.recently_failed_at(&arm(), ttl, now), None);
        assert_eq!(health.status(&dummy_id()).state, CredentialState::Failing);
        // Nor does it replace a client's failure the clients are answered with.
        let client = SourceError::failed("login cancelled");
        health.record_at(&arm(), &Err(client.clone()), Origin::Client, now);
        health.record_at(&arm(), &silent, Origin::Refresh, now);
        assert_eq!(
            health.recently_failed_at(&arm(), ttl, now).map(|(_, e)| e),
            Some(client)
        );
    }

    #[test]
    fn retry_after_is_a_backoff_for_every_acquisition_until_it_passes() {
        let health = Health::new(CredentialKind::Environment);
        let start = Instant::now();
        health.record_at(
            &arm(),
            &Err(SourceError::Failed {
                message: "AADSTS50196 (HTTP 429)".into(),
                retry_after: Some(Duration::from_secs(20)),
            }),
            Origin::Client,
            start,
        );
        let (left, reason) = health.backoff_at(start + Duration::from_secs(5)).unwrap();
        assert_eq!(left, Duration::from_secs(15));
        // The service's wait, not the failure memory, holds the clients.
        let ttl = Duration::from_secs(60);
        assert_eq!(health.recently_failed_at(&arm(), ttl, start), None);
        assert_eq!(reason, "AADSTS50196 (HTTP 429)");
        assert!(health.backoff_at(start + Duration::from_secs(20)).is_none());
        // A failure without Retry-After, or a success, ends it.
        health.record_at(
            &arm(),
            &Err(SourceError::Failed {
                message: "x".into(),
                retry_after: Some(Duration::from_secs(20)),
            }),
            Origin::Client,
            start,
        );
        health.record_at(&arm(), &token(), Origin::Client, start);
        assert!(health.backoff_at(start).is_none());
    }

    #[test]
    fn a_huge_retry_after_is_capped() {
        let health = Health::new(CredentialKind::Environment);
        let start = Instant::now();
        health.record_at(
            &arm(),
            &Err(SourceError::Failed {
                message: "x".into(),
                retry_after: Some(Duration::from_secs(10 * 24 * 3600)),
            }),
            Origin::Client,
            start,
        );
        assert_eq!(health.backoff_at(start).unwrap().0, MAX_BACKOFF);
    }

    #[test]
    fn status_warns_while_a_stale_token_is_served() {
        let health = Health::new(CredentialKind::AzureCli);
        health.record_at(
            &arm(),
            &Err(SourceError::failed("az failed")),
            Origin::Client,
            Instant::now(),
        );
        health.note_served_stale(clock::now_secs() + 120);
        let shown = health.status(&dummy_id()).last_error.unwrap();
        assert!(
            shown.starts_with("az failed [warning: serving a cached token"),
            "{shown}"
        );
        health.record_at(&arm(), &token(), Origin::Client, Instant::now());
        assert_eq!(
            health.status(&dummy_id()).last_error.as_deref(),
            Some("az failed")
        );
    }

    fn dummy_id() -> CredentialId {
        CredentialId::of(
            &azbroker_proto::CredentialSpec::AzureCli(Default::default()),
            "https://login",
        )
    }
}
