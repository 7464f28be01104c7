//! Starts credential actors on demand and restarts one that panics.

use std::collections::HashMap;
use std::sync::Arc;

use azbroker_proto::CredentialSpec;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};

use super::credential::{CredentialActor, CredentialArgs, CredentialMsg};
use super::registry::{Health, Registered, Registry};
use super::ActorDeps;
use crate::identity::CredentialId;

pub struct Supervisor;

pub struct SupervisorArgs {
    pub deps: ActorDeps,
    pub registry: Arc<Registry>,
}

pub struct SupervisorState {
    deps: ActorDeps,
    registry: Arc<Registry>,
    /// What each child was started with, to restart it identically.
    children: HashMap<ActorId, Child>,
}

#[derive(Clone)]
struct Child {
    id: CredentialId,
    spec: CredentialSpec,
    authority_host: String,
    health: Arc<Health>,
}

pub enum SupervisorMsg {
    /// The actor for this identity, started if there is none.
    Ensure {
        id: CredentialId,
        spec: CredentialSpec,
        authority_host: String,
        reply: RpcReplyPort<Result<ActorRef<CredentialMsg>, String>>,
    },
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
        };
        let (actor, _) = Actor::spawn_linked(None, CredentialActor, args, myself.get_cell())
            .await
            .map_err(|e| format!("cannot start the actor for {}: {e}", child.id))?;
        state.registry.insert(
            child.id.clone(),
            Registered {
                actor: actor.clone(),
                health: child.health.clone(),
            },
        );
        state.children.insert(actor.get_id(), child);
        Ok(actor)
    }
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        _: ActorRef<Self::Msg>,
        args: SupervisorArgs,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        Ok(SupervisorState {
            deps: args.deps,
            registry: args.registry,
            children: HashMap::new(),
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
                        let health = Arc::new(Health::new(spec.kind()));
                        let child = Child {
                            id,
                            spec,
                            authority_host,
                            health,
                        };
                        Supervisor::start_child(&myself, state, child).await
                    }
                };
                let _ = reply.send(result);
            }
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
                state.registry.remove(&child.id);
                if let Err(e) = Supervisor::start_child(&myself, state, child).await {
                    tracing::error!(error = %e, "restart failed");
                }
            }
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                if let Some(child) = state.children.remove(&cell.get_id()) {
                    state.registry.remove(&child.id);
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
    use crate::cache::TokenCache;
    use crate::sources::http::HttpClient;
    use crate::stats::Stats;
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
                    spec: CredentialSpec::AzureCli,
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

    #[tokio::test]
    async fn a_panicking_credential_actor_is_restarted_with_its_health() {
        let registry = Arc::new(Registry::default());
        // A closed loopback port: this test must never reach the real IMDS.
        let http = HttpClient::from_env(Some(
            "http://127.0.0.1:1/metadata/identity/oauth2/token".into(),
        ))
        .unwrap();
        let store_dir = tempfile::tempdir().unwrap();
        let store = crate::login::store::Store::file(store_dir.path().join("accounts.json"));
        let deps = ActorDeps {
            cache: TokenCache::new(10),
            stats: Arc::new(Stats::default()),
            accounts: crate::login::Accounts::new(http.clone(), store),
            http,
        };
        let (supervisor, _) = Actor::spawn(
            None,
            Supervisor,
            SupervisorArgs {
                deps,
                registry: registry.clone(),
            },
        )
        .await
        .unwrap();
        let id = CredentialId::of(
            &CredentialSpec::AzureCli,
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
