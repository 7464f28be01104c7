//! Identity -> live credential actor, and each credential's health record.
//!
//! Read on the miss path only (a cache hit never gets here). Health outlives
//! actor restarts: the supervisor hands the same record to the replacement.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use azbroker_proto::{CredentialKind, CredentialState, CredentialStatus};
use ractor::ActorRef;

use super::credential::CredentialMsg;
use crate::clock;
use crate::identity::CredentialId;
use crate::sources::{SourceError, Token};

#[derive(Clone)]
pub struct Registered {
    pub actor: ActorRef<CredentialMsg>,
    pub health: Arc<Health>,
}

#[derive(Default)]
pub struct Registry {
    actors: Mutex<HashMap<CredentialId, Registered>>,
}

impl Registry {
    pub fn get(&self, id: &CredentialId) -> Option<Registered> {
        self.actors.lock().expect("registry lock").get(id).cloned()
    }

    pub fn insert(&self, id: CredentialId, registered: Registered) {
        self.actors
            .lock()
            .expect("registry lock")
            .insert(id, registered);
    }

    pub fn remove(&self, id: &CredentialId) {
        self.actors.lock().expect("registry lock").remove(id);
    }

    pub fn statuses(&self) -> Vec<CredentialStatus> {
        let actors = self.actors.lock().expect("registry lock");
        let mut statuses: Vec<CredentialStatus> = actors
            .iter()
            .map(|(id, registered)| registered.health.status(id))
            .collect();
        statuses.sort_by(|a, b| (&a.credential, &a.identity).cmp(&(&b.credential, &b.identity)));
        statuses
    }
}

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
}

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
            }),
        }
    }

    pub fn record(&self, result: &Result<Token, SourceError>) {
        self.record_at(result, Instant::now());
    }

    fn record_at(&self, result: &Result<Token, SourceError>, now: Instant) {
        let mut inner = self.inner.lock().expect("health lock");
        inner.unavailable_since = None;
        match result {
            Ok(_) => {
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

    fn recently_unavailable_at(&self, ttl: Duration, now: Instant) -> Option<String> {
        let inner = self.inner.lock().expect("health lock");
        let since = inner.unavailable_since?;
        (now.saturating_duration_since(since) < ttl)
            .then(|| inner.last_error.clone())
            .flatten()
    }

    fn status(&self, id: &CredentialId) -> CredentialStatus {
        let inner = self.inner.lock().expect("health lock");
        CredentialStatus {
            credential: self.kind.name().to_string(),
            identity: id.fingerprint(),
            state: inner.state,
            acquisitions: inner.acquisitions,
            last_success: inner.last_success,
            last_error: inner.last_error.clone(),
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

    fn dummy_id() -> CredentialId {
        CredentialId::of(&azbroker_proto::CredentialSpec::AzureCli, "https://login")
    }
}
