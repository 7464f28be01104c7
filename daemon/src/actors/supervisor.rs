//! Starts credential actors on demand, restarts one that panics, and stops
//! idle ones: a periodic sweep stops credential and account actors that have
//! had nothing to do for [`ActorLimits::idle_after`], and starting one more
//! credential actor than [`ActorLimits::max_credential_actors`] stops the
//! longest-idle first. A stopped actor's health goes with it; the next
//! request for its identity starts a new one.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use azbroker_proto::CredentialSpec;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};

use super::activity::{Activity, ActorLimits};
use super::credential::{CredentialActor, CredentialArgs, CredentialMsg};
use super::health::Health;
use super::registry::{Registered, Registry};
use super::ActorDeps;
use crate::clock;
use crate::identity::CredentialId;

pub struct Supervisor;

pub struct SupervisorArgs {
    pub deps: ActorDeps,
    pub registry: Arc<Registry>,
    pub limits: ActorLimits,
}

pub struct SupervisorState {
    deps: ActorDeps,
    registry: Arc<Registry>,
    limits: ActorLimits,
    /// What each child was started with, to restart it identically.
    children: HashMap<ActorId, Child>,
    /// The last sweep stopped actors: their memory is freed once they have
    /// terminated, which is after that sweep, so the next one hands it back.
    release_pending: bool,
}

#[derive(Clone)]
struct Child {
    id: CredentialId,
    spec: CredentialSpec,
    authority_host: String,
    health: Arc<Health>,
    activity: Arc<Activity>,
}

// Sent once per actor start or sweep: boxing `Ensure` would save nothing.
#[allow(clippy::large_enum_variant)]
pub enum SupervisorMsg {
    /// The actor for this identity, started if there is none.
    Ensure {
        id: CredentialId,
        spec: CredentialSpec,
        authority_host: String,
        reply: RpcReplyPort<Result<ActorRef<CredentialMsg>, String>>,
    },
    /// Time to stop idle actors.
    Sweep,
}

/// How often the sweep runs: often enough that an actor outlives its idle
/// time by at most half of it, and at least once a minute.
fn sweep_period(idle_after: Duration) -> Duration {
    (idle_after / 2).clamp(Duration::from_millis(100), Duration::from_secs(60))
}

impl Supervisor {
    async fn start_child(
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
        child: Child,
    ) -> Result<ActorRef<CredentialMsg>, String> {
        let args = CredentialArgs {
            id: child.id.clone(),
            spec: child.spec.clone(),
            authority_host: child.authority_host.clone(),
            deps: state.deps.clone(),
            health: child.health.clone(),
            activity: child.activity.clone(),
        };
        let (actor, _) = Actor::spawn_linked(None, CredentialActor, args, myself.get_cell())
            .await
            .map_err(|e| format!("cannot start the actor for {}: {e}", child.id))?;
        state.registry.insert(
            child.id.clone(),
            Registered {
                actor: actor.clone(),
                health: child.health.clone(),
                activity: child.activity.clone(),
                profile: super::registry::profile_of(&child.spec),
            },
        );
        state.children.insert(actor.get_id(), child);
        Ok(actor)
    }

    /// Stops idle credential and account actors, forgets the account links
    /// nothing uses any more, and hands freed memory back to the system.
    async fn sweep(state: &mut SupervisorState) {
        let now = clock::now_millis();
        let idle = state.registry.take_idle(state.limits.idle_after, now);
        for (id, actor) in &idle {
            tracing::debug!(credential = %id, "credential actor idle; stopping it");
            actor.stop(Some("idle".into()));
        }
        let accounts = state
            .deps
            .accounts
            .stop_idle(state.limits.idle_after, now)
            .await;
        if !idle.is_empty() && state.deps.accounts.has_links() {
            // A stopped credential's cached tokens must still go on logout,
            // so its link stays while it has any.
            let cached: HashSet<CredentialId> = state
                .deps
                .cache
                .entries()
                .into_iter()
                .map(|(_, token)| token.credential_id.clone())
                .collect();
            let registry = &state.registry;
            state
                .deps
                .accounts
                .forget_links(|id| registry.contains(id) || cached.contains(id));
        }
        let stopped = !idle.is_empty() || accounts > 0;
        if stopped {
            tracing::info!(
                credential_actors = idle.len(),
                account_actors = accounts,
                "stopped idle actors"
            );
        }
        // `stop` only asks: the actors stopped above free their state when they
        // have terminated, after this sweep. So the memory of the previous
        // sweep's actors is what can go back to the system now.
        if state.release_pending {
            state.children.shrink_to_fit();
            state.registry.shrink_to_fit();
            crate::memory::release_free_memory();
        }
        state.release_pending = stopped;
    }
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: SupervisorArgs,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        // The interval task ends when this actor stops (its sends then fail).
        myself.send_interval(sweep_period(args.limits.idle_after), || {
            SupervisorMsg::Sweep
        });
        Ok(SupervisorState {
            deps: args.deps,
            registry: args.registry,
            limits: args.limits,
            children: HashMap::new(),
            release_pending: false,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: SupervisorMsg,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SupervisorMsg::Ensure {
                id,
                spec,
                authority_host,
                reply,
            } => {
                // Requests are handled one at a time, so two clients racing to
                // start the same identity get the same actor.
                let result = match state.registry.get(&id) {
                    Some(registered) => Ok(registered.actor),
                    None => {
                        while state.registry.count() >= state.limits.max_credential_actors {
                            let Some((old, actor)) = state.registry.take_longest_idle() else {
                                break;
                            };
                            tracing::info!(credential = %old, "too many credential actors; stopping the longest idle");
                            actor.stop(Some("actor limit".into()));
                        }
                        let child = Child {
                            health: Arc::new(Health::new(spec.kind())),
                            activity: Arc::new(Activity::default()),
                            id,
                            spec,
                            authority_host,
                        };
                        Supervisor::start_child(&myself, state, child).await
                    }
                };
                let _ = reply.send(result);
            }
            SupervisorMsg::Sweep => Supervisor::sweep(state).await,
        }
        Ok(())
    }

    /// Overridden because ractor's default stops the supervisor when any child exits.
    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorFailed(cell, err) => {
                let Some(child) = state.children.remove(&cell.get_id()) else {
                    return Ok(());
                };
                tracing::error!(credential = %child.id, error = %crate::log_escape::Escaped(&err), "credential actor failed; restarting it");
                state.registry.remove_actor(&child.id, cell.get_id());
                if let Err(e) = Supervisor::start_child(&myself, state, child).await {
                    tracing::error!(error = %e, "restart failed");
                }
            }
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                if let Some(child) = state.children.remove(&cell.get_id()) {
                    state.registry.remove_actor(&child.id, cell.get_id());
                }
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ractor::rpc::CallResult;
    use std::time::Duration;

    async fn ensure(
        supervisor: &ActorRef<SupervisorMsg>,
        id: &CredentialId,
    ) -> ActorRef<CredentialMsg> {
        let result = supervisor
            .call(
                |reply| SupervisorMsg::Ensure {
                    id: id.clone(),
                    spec: CredentialSpec::AzureCli(Default::default()),
                    authority_host: "https://login.microsoftonline.com".into(),
                    reply,
                },
                Some(Duration::from_secs(5)),
            )
            .await
            .unwrap();
        let CallResult::Success(Ok(actor)) = result else {
            panic!("Ensure failed");
        };
        actor
    }

    async fn start(limits: ActorLimits) -> (ActorRef<SupervisorMsg>, Arc<Registry>) {
        let registry = Arc::new(Registry::default());
        // A closed loopback port: these tests never reach the real IMDS.
        let (deps, _store_dir) = crate::actors::test_deps();
        let (supervisor, _) = Actor::spawn(
            None,
            Supervisor,
            SupervisorArgs {
                deps,
                registry: registry.clone(),
                limits,
            },
        )
        .await
        .unwrap();
        (supervisor, registry)
    }

    fn identity(n: usize) -> CredentialId {
        CredentialId::of(
            &CredentialSpec::AzureCli(Default::default()),
            &format!("https://login{n}.example"),
        )
    }

    async fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
        for _ in 0..500 {
            if check() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("timed out waiting for {what}");
    }

    // The idle tests run on paused time: the sweep is a tokio interval and
    // idleness is measured on `clock`, which follows tokio's clock in tests.
    #[tokio::test(start_paused = true)]
    async fn idle_credential_actors_stop_and_come_back_on_demand() {
        let (supervisor, registry) = start(ActorLimits {
            idle_after: Duration::from_millis(300),
            max_credential_actors: 100,
        })
        .await;
        let mut actors = Vec::new();
        for n in 0..5 {
            actors.push(ensure(&supervisor, &identity(n)).await);
        }
        assert_eq!(registry.count(), 5);
        wait_for("idle actors to stop", || registry.count() == 0).await;
        for actor in &actors {
            wait_for("the actor to stop", || {
                actor.get_status() == ractor::ActorStatus::Stopped
            })
            .await;
        }
        // A new request for the identity starts a new actor.
        let again = ensure(&supervisor, &identity(0)).await;
        assert_ne!(again.get_id(), actors[0].get_id());
        assert_eq!(registry.count(), 1);
        supervisor.stop(None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_actor_is_not_idle() {
        let (supervisor, registry) = start(ActorLimits {
            idle_after: Duration::from_millis(200),
            max_credential_actors: 100,
        })
        .await;
        ensure(&supervisor, &identity(0)).await;
        let activity = registry.get(&identity(0)).unwrap().activity;
        activity.set_tracked(1);
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert!(
            registry.contains(&identity(0)),
            "an actor with a key to refresh was stopped"
        );
        activity.set_tracked(0);
        wait_for("the actor to stop", || registry.count() == 0).await;
        supervisor.stop(None);
    }

    #[tokio::test]
    async fn the_number_of_credential_actors_is_bounded() {
        let (supervisor, registry) = start(ActorLimits {
            idle_after: Duration::from_secs(3600),
            max_credential_actors: 3,
        })
        .await;
        let first = ensure(&supervisor, &identity(0)).await;
        for n in 1..3 {
            ensure(&supervisor, &identity(n)).await;
        }
        // The first is the longest idle once the others were used after it.
        // (Backdated: uses within one millisecond would tie.)
        registry
            .get(&identity(0))
            .unwrap()
            .activity
            .backdate(60_000);
        registry.get(&identity(1)).unwrap().activity.touch();
        registry.get(&identity(2)).unwrap().activity.touch();
        ensure(&supervisor, &identity(3)).await;
        assert_eq!(registry.count(), 3);
        assert!(!registry.contains(&identity(0)));
        wait_for("the longest-idle actor to stop", || {
            first.get_status() == ractor::ActorStatus::Stopped
        })
        .await;
        supervisor.stop(None);
    }

    #[tokio::test]
    async fn a_panicking_credential_actor_is_restarted_with_its_health() {
        let (supervisor, registry) = start(ActorLimits::default()).await;
        let id = CredentialId::of(
            &CredentialSpec::AzureCli(Default::default()),
            "https://login.microsoftonline.com",
        );
        let first = ensure(&supervisor, &id).await;
        // Asking again gives the same actor.
        assert_eq!(ensure(&supervisor, &id).await.get_id(), first.get_id());
        let health = registry.get(&id).unwrap().health;

        first.send_message(CredentialMsg::Crash).unwrap();
        let mut replacement = None;
        for _ in 0..100 {
            match registry.get(&id) {
                Some(r) if r.actor.get_id() != first.get_id() => {
                    replacement = Some(r);
                    break;
                }
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        let replacement = replacement.expect("the actor was not restarted");
        assert!(Arc::ptr_eq(&replacement.health, &health), "health was lost");
        // The supervisor itself survived and still serves.
        assert_eq!(
            ensure(&supervisor, &id).await.get_id(),
            replacement.actor.get_id()
        );
        supervisor.stop(None);
    }
}
