//! Binds the socket, accepts connections, and shuts down cleanly.
//!
//! Only one daemon per socket: each holds an exclusive lock on `<socket>.lock`
//! for its whole life. The lock (not a connect probe) decides who owns the
//! socket, so two daemons started at once cannot delete each other's socket;
//! a crashed daemon's lock dies with it, and its leftover socket file is then
//! known to be stale and is removed.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use azbroker_proto::{ErrorKind, WireError};
use interprocess::local_socket::traits::tokio::Listener as _;
use interprocess::local_socket::traits::StreamCommon as _;
use interprocess::local_socket::{GenericFilePath, ListenerOptions, ToFsName};
use interprocess::os::unix::local_socket::ListenerOptionsExt;
use ractor::Actor;
use tokio::sync::{watch, Semaphore};

use crate::actors::registry::Registry;
use crate::actors::supervisor::{Supervisor, SupervisorArgs};
use crate::actors::ActorDeps;
use crate::broker::Broker;
use crate::cache::TokenCache;
use crate::connection_table::{Connections, Limits};
use crate::http::HttpClient;
use crate::login::store::Store;
use crate::login::Accounts;
use crate::paths;
use crate::stats::Stats;

/// Refused connections being told why at once; more are closed without a word.
const MAX_REFUSING: usize = 64;
/// Cached keys kept at most.
const MAX_CACHE_ENTRIES: u64 = 100_000;

pub struct ServerConfig {
    pub socket_path: PathBuf,
    /// Replaces the VM metadata endpoint (tests only; a checked loopback URL).
    pub imds_url: Option<String>,
    /// Serve the managed-identity endpoint (see `mi_endpoint`).
    pub managed_identity: bool,
    /// Connection cap, per-peer cap and idle timeout (see `connection_table`).
    pub limits: Limits,
    /// When idle actors stop, and how many credential actors there may be.
    pub actor_limits: crate::actors::activity::ActorLimits,
}

pub enum Outcome {
    /// Served until asked to stop.
    Stopped,
    /// Another daemon owns this socket.
    AlreadyRunning,
}

pub async fn run(config: ServerConfig) -> Result<Outcome, String> {
    let socket = config.socket_path;
    if let Some(problem) = azbroker_proto::paths::socket_path_problem(&socket) {
        return Err(problem);
    }
    let dir = socket
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .ok_or_else(|| format!("{} has no parent directory", socket.display()))?;
    paths::ensure_private_dir(dir).map_err(|e| format!("socket directory: {e}"))?;
    let Some(_lock) = take_daemon_lock(&socket)? else {
        return Ok(Outcome::AlreadyRunning);
    };
    // Before the socket exists: a SIGTERM sent as soon as clients can connect
    // must reach the clean shutdown, not the default action.
    let signals = Signals::install()?;
    match std::fs::remove_file(&socket) {
        Ok(()) => tracing::info!(socket = %socket.display(), "removed a stale socket"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(format!(
                "cannot remove stale socket {}: {e}",
                socket.display()
            ))
        }
    }
    // Bound before the socket: a daemon asked for the endpoint that cannot
    // serve it fails before any client relies on it.
    let mi_endpoint = if config.managed_identity {
        Some(crate::mi_endpoint::BoundEndpoint::bind(&socket).await?)
    } else {
        None
    };
    let name = socket
        .as_path()
        .to_fs_name::<GenericFilePath>()
        .map_err(|e| format!("bad socket path {}: {e}", socket.display()))?;
    // A filesystem socket created 0600; the peer check in `connection` is the
    // real guard, this keeps others from even connecting.
    let listener = ListenerOptions::new()
        .name(name)
        .mode(0o600)
        .create_tokio()
        .map_err(|e| format!("cannot listen on {}: {e}", socket.display()))?;

    raise_open_file_limit();
    crate::child_env::prepare_child_path();
    let http = HttpClient::from_env(config.imds_url)?;
    for source in http.extra_roots.iter() {
        tracing::info!(%source, "extra trusted roots");
    }
    let store = Store::from_env()?;
    tracing::info!(store = %store.describe(), "refresh tokens of logged-in accounts are kept here");
    let accounts = Accounts::new(http.clone(), store);
    let stats = Arc::new(Stats::default());
    let cache = TokenCache::new(MAX_CACHE_ENTRIES);
    let registry = Arc::new(Registry::default());
    let deps = ActorDeps {
        cache,
        stats,
        http,
        accounts,
    };
    let (supervisor, supervisor_done) = Actor::spawn(
        None,
        Supervisor,
        SupervisorArgs {
            deps: deps.clone(),
            registry: registry.clone(),
            limits: config.actor_limits,
        },
    )
    .await
    .map_err(|e| format!("cannot start the supervisor: {e}"))?;
    let (shutdown_tx, mut shutdown) = watch::channel(false);
    let broker = Arc::new(Broker::new(
        &deps,
        registry,
        supervisor.clone(),
        socket.display().to_string(),
        shutdown_tx,
    ));
    signals.spawn_handler(broker.clone());
    let mut mi_header_file = None;
    if let Some(endpoint) = mi_endpoint {
        broker.set_managed_identity(endpoint.info().clone());
        mi_header_file = Some(endpoint.header_file().to_path_buf());
        if let Err(e) = endpoint.serve(broker.clone(), broker.shutdown_signal()) {
            let _ = std::fs::remove_file(&socket);
            if let Some(file) = &mi_header_file {
                let _ = std::fs::remove_file(file);
            }
            supervisor.stop(Some("daemon startup failed".into()));
            return Err(e);
        }
    }
    tracing::info!(socket = %socket.display(), pid = std::process::id(), version = crate::VERSION, "azbrokerd listening");

    // Every accepted connection gets in or is told why (see `connection_table`):
    // waiting for a free slot before accepting once let idle connections lock
    // out every client, `azbroker stop` included.
    let connections = Connections::new(config.limits);
    let sweeper = tokio::spawn(connections.clone().sweep_idle());
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => break,
        };
        match accepted {
            Ok(stream) => admit(&broker, &connections, &refusing, stream),
            Err(e) => {
                // Typically EMFILE: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    sweeper.abort();
    connections.close_all();

    tracing::info!("shutting down");
    drop(listener);
    let _ = std::fs::remove_file(&socket);
    if let Some(file) = &mi_header_file {
        let _ = std::fs::remove_file(file);
    }
    supervisor.stop(Some("daemon shutdown".into()));
    let _ = tokio::time::timeout(Duration::from_secs(2), supervisor_done).await;
    Ok(Outcome::Stopped)
}

/// Serves `stream` if the connection table admits it, else tells the peer why.
fn admit(
    broker: &Arc<Broker>,
    connections: &Arc<Connections>,
    refusing: &Arc<Semaphore>,
    stream: interprocess::local_socket::tokio::Stream,
) {
    let pid = stream
        .peer_creds()
        .ok()
        .and_then(|creds| creds.pid())
        .and_then(|pid| u32::try_from(pid).ok());
    match connections.admit(pid) {
        Ok(slot) => {
            tokio::spawn(crate::connection::serve(broker.clone(), stream, slot));
        }
        Err(reason) => {
            Stats::bump(&broker.stats.connections_refused);
            tracing::warn!(?pid, %reason, "connection refused");
            // A flood of refusals must not hold a socket each for the reply's
            // second: beyond MAX_REFUSING, close without a word.
            if let Ok(permit) = refusing.clone().try_acquire_owned() {
                let refusal = WireError::new(ErrorKind::Refused, reason);
                tokio::spawn(async move {
                    crate::connection::refuse(stream, refusal).await;
                    drop(permit);
                });
            }
        }
    }
}

/// Takes `<socket>.lock` exclusively, or returns `None` when a live daemon holds it.
/// The file is opened without following a symlink (`paths::open_private`).
fn take_daemon_lock(socket: &Path) -> Result<Option<nix::fcntl::Flock<File>>, String> {
    let path = azbroker_proto::paths::sibling(socket, "lock");
    let file = paths::open_private(&path, false).map_err(|e| format!("{}: {e}", path.display()))?;
    match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(Some(lock)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(format!("cannot lock {}: {e}", path.display())),
    }
}

/// SIGTERM and SIGINT, registered early; handled once the broker exists.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Result<Signals, String> {
        use tokio::signal::unix::{signal, SignalKind};
        let install =
            |kind| signal(kind).map_err(|e| format!("cannot install signal handlers: {e}"));
        Ok(Signals {
            term: install(SignalKind::terminate())?,
            int: install(SignalKind::interrupt())?,
        })
    }

    fn spawn_handler(mut self, broker: Arc<Broker>) {
        tokio::spawn(async move {
            tokio::select! {
                _ = self.term.recv() => tracing::info!("SIGTERM"),
                _ = self.int.recv() => tracing::info!("SIGINT"),
            }
            broker.request_shutdown();
        });
    }
}

/// Many clients mean many sockets: lift the soft open-file limit to the hard one.
fn raise_open_file_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
            tracing::debug!(from = soft, to = hard, "raised the open-file limit");
        }
    }
}
