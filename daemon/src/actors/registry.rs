//! Identity -> live credential actor, and each credential's health record.
//!
//! Read on the miss path only (a cache hit never gets here). Health outlives
//! actor restarts: the supervisor hands the same record to the replacement.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

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
            }),
        }
    }

    pub fn record(&self, result: &Result<Token, SourceError>) {
        let mut inner = self.inner.lock().expect("health lock");
        match result {
            Ok(_) => {
                inner.state = CredentialState::Healthy;
                inner.acquisitions += 1;
                inner.last_success = Some(clock::now_secs());
            }
            Err(SourceError::Unavailable(reason)) => {
                inner.state = CredentialState::Unavailable;
                inner.last_error = Some(reason.clone());
            }
            Err(e) => {
                inner.state = CredentialState::Failing;
                inner.last_error = Some(e.message().to_string());
            }
        }
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
