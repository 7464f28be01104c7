//! Identity -> live credential actor, with its health record and activity.
//!
//! Read on the miss path only (a cache hit never gets here). The health record
//! (`health.rs`) outlives actor restarts: the supervisor hands the same record
//! to the replacement.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use azbroker_proto::CredentialStatus;
use ractor::{ActorId, ActorRef};

use super::activity::Activity;
use super::credential::CredentialMsg;
use super::health::Health;
use crate::identity::CredentialId;

#[derive(Clone)]
pub struct Registered {
    pub actor: ActorRef<CredentialMsg>,
    pub health: Arc<Health>,
    pub activity: Arc<Activity>,
    /// What status shows of a tool credential's identity (see [`profile_of`]).
    pub profile: Option<Arc<str>>,
}

/// A tool credential's executable and profile directory, for status.
pub fn profile_of(spec: &azbroker_proto::CredentialSpec) -> Option<Arc<str>> {
    let (tool, spec) = spec.tool()?;
    let executable = spec.executable.as_deref().unwrap_or(tool.executable());
    let profile = spec.profile_dir.as_deref().unwrap_or("(no home directory)");
    Some(format!("{executable} in {profile}").into())
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

    /// Forgets `id` if `actor` is still the one registered for it: a newer
    /// actor started for the same identity meanwhile stays.
    pub fn remove_actor(&self, id: &CredentialId, actor: ActorId) {
        let mut actors = self.actors.lock().expect("registry lock");
        if actors.get(id).is_some_and(|r| r.actor.get_id() == actor) {
            actors.remove(id);
        }
    }

    /// Gives back the map's room after many actors stopped.
    pub fn shrink_to_fit(&self) {
        self.actors.lock().expect("registry lock").shrink_to_fit();
    }

    pub fn count(&self) -> usize {
        self.actors.lock().expect("registry lock").len()
    }

    pub fn contains(&self, id: &CredentialId) -> bool {
        self.actors.lock().expect("registry lock").contains_key(id)
    }

    /// Unregisters the actors idle for `idle_after` and returns them to stop.
    pub fn take_idle(
        &self,
        idle_after: Duration,
        now_ms: i64,
    ) -> Vec<(CredentialId, ActorRef<CredentialMsg>)> {
        let mut actors = self.actors.lock().expect("registry lock");
        let idle: Vec<CredentialId> = actors
            .iter()
            .filter(|(_, r)| r.activity.is_idle(idle_after, now_ms))
            .map(|(id, _)| id.clone())
            .collect();
        idle.into_iter()
            .filter_map(|id| actors.remove(&id).map(|r| (id, r.actor)))
            .collect()
    }

    /// Unregisters the actor unused the longest (one with nothing in flight
    /// if there is one) and returns it to stop.
    pub fn take_longest_idle(&self) -> Option<(CredentialId, ActorRef<CredentialMsg>)> {
        let mut actors = self.actors.lock().expect("registry lock");
        let id = actors
            .iter()
            .min_by_key(|(_, r)| (r.activity.is_busy(), r.activity.last_active_ms()))
            .map(|(id, _)| id.clone())?;
        actors.remove(&id).map(|r| (id, r.actor))
    }

    pub fn statuses(&self) -> Vec<CredentialStatus> {
        let actors = self.actors.lock().expect("registry lock");
        let mut statuses: Vec<CredentialStatus> = actors
            .iter()
            .map(|(id, registered)| CredentialStatus {
                profile: registered.profile.as_deref().map(str::to_string),
                ..registered.health.status(id)
            })
            .collect();
        statuses.sort_by(|a, b| (&a.credential, &a.identity).cmp(&(&b.credential, &b.identity)));
        statuses
    }
}
