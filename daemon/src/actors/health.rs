//! How one credential has been doing: its state for `azbroker status`, the
//! last success and error, when it last said "unavailable" (negative caching)
//! and any `Retry-After` backoff. Kept apart from the actor so that it survives
//! the actor's restart.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use azbroker_proto::{CredentialKind, CredentialState, CredentialStatus};

use crate::clock;
use crate::identity::CredentialId;
use crate::token_source::{SourceError, Token};

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
    /// Until when the service asked us to wait (`Retry-After`), client requests included.
    backoff_until: Option<Instant>,
    /// Expiry of a cached token served past its floor because acquisitions fail (for status).
    serving_stale_until: Option<i64>,
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
                backoff_until: None,
                serving_stale_until: None,
            }),
        }
    }

    pub fn record(&self, result: &Result<Token, SourceError>) {
        self.record_at(result, Instant::now());
    }

    fn record_at(&self, result: &Result<Token, SourceError>, now: Instant) {
        let mut inner = self.inner.lock().expect("health lock");
        inner.unavailable_since = None;
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
    /// the tool again.
    pub fn forget_remembered_answers(&self) {
        self.inner.lock().expect("health lock").unavailable_since = None;
    }

    fn recently_unavailable_at(&self, ttl: Duration, now: Instant) -> Option<String> {
        let inner = self.inner.lock().expect("health lock");
        let since = inner.unavailable_since?;
        (now.saturating_duration_since(since) < ttl)
            .then(|| inner.last_error.clone())
            .flatten()
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
            &Err(SourceError::Unavailable("run 'az login'".into())),
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
        health.record_at(&Err(SourceError::Unavailable("x".into())), now);
        health.record_at(&Err(SourceError::failed("AADSTS70043")), now);
        assert_eq!(health.recently_unavailable_at(ttl, now), None);
        health.record_at(&Err(SourceError::Unavailable("x".into())), now);
        health.record_at(&token(), now);
        assert_eq!(health.recently_unavailable_at(ttl, now), None);
        assert_eq!(health.status(&dummy_id()).state, CredentialState::Healthy);
    }

    #[test]
    fn retry_after_is_a_backoff_for_every_acquisition_until_it_passes() {
        let health = Health::new(CredentialKind::Environment);
        let start = Instant::now();
        health.record_at(
            &Err(SourceError::Failed {
                message: "AADSTS50196 (HTTP 429)".into(),
                retry_after: Some(Duration::from_secs(20)),
            }),
            start,
        );
        let (left, reason) = health.backoff_at(start + Duration::from_secs(5)).unwrap();
        assert_eq!(left, Duration::from_secs(15));
        assert_eq!(reason, "AADSTS50196 (HTTP 429)");
        assert!(health.backoff_at(start + Duration::from_secs(20)).is_none());
        // A failure without Retry-After, or a success, ends it.
        health.record_at(
            &Err(SourceError::Failed {
                message: "x".into(),
                retry_after: Some(Duration::from_secs(20)),
            }),
            start,
        );
        health.record_at(&token(), start);
        assert!(health.backoff_at(start).is_none());
    }

    #[test]
    fn a_huge_retry_after_is_capped() {
        let health = Health::new(CredentialKind::Environment);
        let start = Instant::now();
        health.record_at(
            &Err(SourceError::Failed {
                message: "x".into(),
                retry_after: Some(Duration::from_secs(10 * 24 * 3600)),
            }),
            start,
        );
        assert_eq!(health.backoff_at(start).unwrap().0, MAX_BACKOFF);
    }

    #[test]
    fn status_warns_while_a_stale_token_is_served() {
        let health = Health::new(CredentialKind::AzureCli);
        health.record_at(&Err(SourceError::failed("az failed")), Instant::now());
        health.note_served_stale(clock::now_secs() + 120);
        let shown = health.status(&dummy_id()).last_error.unwrap();
        assert!(
            shown.starts_with("az failed [warning: serving a cached token"),
            "{shown}"
        );
        health.record_at(&token(), Instant::now());
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
