//! Binds the socket (or takes the one the service manager passed), accepts
//! connections, and shuts down cleanly. [`run`] is the accept loop alone, for
//! tests that start a daemon in-process on a listener they made.
//!
//! Only one daemon per socket: each holds an exclusive lock on `<socket>.lock`
//! for its whole life. The lock (not a connect probe) decides who owns the
//! socket, so two daemons started at once cannot delete each other's socket;
//! a crashed daemon's lock dies with it, and its leftover socket file is then
//! known to be stale and is removed. A socket passed by socket activation is
//! never removed: the service manager owns it.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use azbroker_proto::{ErrorKind, WireError};
use interprocess::local_socket::tokio::Listener;
use interprocess::local_socket::traits::tokio::Listener as _;
use interprocess::local_socket::traits::StreamCommon as _;
use interprocess::local_socket::{GenericFilePath, ListenerOptions, ToFsName};
use interprocess::os::unix::local_socket::ListenerOptionsExt;
use ractor::{Actor, ActorRef};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;

use crate::actors::activity::ActorLimits;
use crate::actors::registry::Registry;
use crate::actors::supervisor::{Supervisor, SupervisorArgs, SupervisorMsg};
use crate::actors::ActorDeps;
use crate::audit::{Audit, AuditConfig};
use crate::broker::Broker;
use crate::cache::TokenCache;
use crate::connection_table::{Connections, Limits};
use crate::http::HttpClient;
use crate::login::store::Store;
use crate::login::Accounts;
use crate::paths;
use crate::policy::Policy;
use crate::stats::Stats;
use crate::tool_logins::{self, ToolLogins};

pub mod activation;
pub mod notify;

/// Refused connections being told why at once; more are closed without a word.
const MAX_REFUSING: usize = 64;
/// Cached keys kept at most.
const MAX_CACHE_ENTRIES: u64 = 100_000;

pub struct ServerConfig {
    pub socket_path: PathBuf,
    /// A socket the service manager bound and passed (see [`activation`]):
    /// served as it is, never bound, removed or replaced by the daemon.
    pub activated: Option<activation::Activated>,
    /// Told when the daemon is ready and when it stops (see [`notify`]).
    pub notifier: notify::Notifier,
    /// Replaces the VM metadata endpoint (tests only; a checked loopback URL).
    pub imds_url: Option<String>,
    /// Serve the managed-identity endpoint (see `mi_endpoint`).
    pub managed_identity: bool,
    /// Connection cap, per-peer cap and idle timeout (see `connection_table`).
    pub limits: Limits,
    /// When idle actors stop, and how many credential actors there may be.
    pub actor_limits: ActorLimits,
}

pub enum Outcome {
    /// Served until asked to stop.
    Stopped,
    /// Another daemon owns this socket.
    AlreadyRunning,
}

/// The daemon's life: lock, signals, socket, broker, then [`run`] until asked
/// to stop, then cleanup.
pub async fn start(config: ServerConfig) -> Result<Outcome, String> {
    let socket = match &config.activated {
        Some(activated) => activated_socket_path(&config.socket_path, &activated.path)?,
        None => config.socket_path.clone(),
    };
    if let Some(problem) = azbroker_proto::paths::socket_path_problem(&socket) {
        return Err(problem);
    }
    let dir = socket
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .ok_or_else(|| format!("{} has no parent directory", socket.display()))?;
    paths::ensure_private_dir(dir).map_err(|e| format!("socket directory: {e}"))?;
    let activated = config.activated.is_some();
    let _lock = if activated {
        wait_for_daemon_lock(&socket).await?
    } else {
        let Some(lock) = take_daemon_lock(&socket)? else {
            return Ok(Outcome::AlreadyRunning);
        };
        lock
    };
    // Before the socket exists: a SIGTERM sent as soon as clients can connect
    // must reach the clean shutdown, not the default action.
    let signals = Signals::install()?;
    if !activated {
        remove_stale_socket(&socket)?;
    }
    // Bound before the socket: a daemon asked for the endpoint that cannot
    // serve it fails before any client relies on it.
    let mi_endpoint = if config.managed_identity {
        Some(crate::mi_endpoint::BoundEndpoint::bind(&socket).await?)
    } else {
        None
    };
    let listener = match config.activated {
        Some(activated) => activated_listener(activated)?,
        None => bind(&socket)?,
    };
    // The socket file is the service manager's when it was passed to us.
    let remove_socket = || {
        if !activated {
            let _ = std::fs::remove_file(&socket);
        }
    };

    raise_open_file_limit();
    let http = HttpClient::from_env(config.imds_url)?;
    for source in http.extra_roots.iter() {
        tracing::info!(%source, "extra trusted roots");
    }
    let store = Store::from_env()?;
    tracing::info!(store = %store.describe(), "refresh tokens of logged-in accounts are kept here");
    let audit = Arc::new(Audit::start(AuditConfig::from_env()));
    let daemon = start_broker(http, store, config.actor_limits, &socket, audit).await?;
    let broker = daemon.broker.clone();
    signals.spawn_handler(broker.clone());
    let mut mi_header_file = None;
    if let Some(endpoint) = mi_endpoint {
        broker.set_mi_endpoint(endpoint.info().clone());
        mi_header_file = Some(endpoint.header_file().to_path_buf());
        if let Err(e) = endpoint.serve(broker.clone(), broker.shutdown_signal()) {
            remove_socket();
            if let Some(file) = &mi_header_file {
                let _ = std::fs::remove_file(file);
            }
            daemon.supervisor.stop(Some("daemon startup failed".into()));
            return Err(e);
        }
    }
    tracing::info!(socket = %socket.display(), pid = std::process::id(), version = crate::VERSION, activated, "azbrokerd listening");
    config
        .notifier
        .ready(&format!("serving {}", socket.display()));

    // On a worker thread, not this one (`block_on`'s): each connection's task
    // is then spawned on the worker that accepted it and starts there, where
    // accepting on this thread woke it, then a worker, for every connection.
    let serving = tokio::spawn(run(
        listener,
        broker,
        config.limits,
        daemon.shutdown.clone(),
    ));
    if let Err(e) = serving.await {
        tracing::error!(error = %e, "the accept loop ended abnormally");
    }

    tracing::info!("shutting down");
    config.notifier.stopping();
    remove_socket();
    if let Some(file) = &mi_header_file {
        let _ = std::fs::remove_file(file);
    }
    daemon.stop().await;
    Ok(Outcome::Stopped)
}

/// The broker and the actor tree behind it, running.
pub struct Daemon {
    pub broker: Arc<Broker>,
    /// Turns true when the broker is asked to stop. Held from the start: a
    /// watch sender with no receiver drops what it is sent.
    pub shutdown: watch::Receiver<bool>,
    supervisor: ActorRef<SupervisorMsg>,
    supervisor_done: JoinHandle<()>,
}

impl Daemon {
    /// Stops the actor tree, waiting a little for it, and writes the last
    /// audit records out (on the blocking pool, bounded like the rest).
    pub async fn stop(self) {
        self.supervisor.stop(Some("daemon shutdown".into()));
        let _ = tokio::time::timeout(Duration::from_secs(2), self.supervisor_done).await;
        let audit = self.broker.audit.clone();
        let flushed = tokio::task::spawn_blocking(move || audit.flush());
        let _ = tokio::time::timeout(Duration::from_secs(2), flushed).await;
    }
}

/// Drops the tokens of tool credentials whose login changed (`az login` as
/// someone else, `az logout`, `az account set`), as the watcher reports them.
async fn drop_changed_logins(broker: Arc<Broker>, mut changes: tool_logins::Changes) {
    while let Some(credentials) = changes.recv().await {
        broker.drop_credentials(&credentials).await;
    }
}

/// Starts the supervisor and builds the broker over `http` and `store`,
/// recording requests in `audit`; `socket` is what status reports. No lock,
/// signal or socket involved, so a test can build one in-process.
pub async fn start_broker(
    http: HttpClient,
    store: Store,
    actor_limits: ActorLimits,
    socket: &Path,
    audit: Arc<Audit>,
) -> Result<Daemon, String> {
    let accounts = Accounts::new(http.clone(), store);
    let stats = Arc::new(Stats::default());
    let cache = TokenCache::new(MAX_CACHE_ENTRIES);
    let registry = Arc::new(Registry::default());
    let (tool_logins, login_changes) = ToolLogins::start();
    let deps = ActorDeps {
        cache,
        stats,
        http,
        accounts,
        tool_logins,
    };
    let (supervisor, supervisor_done) = Actor::spawn(
        None,
        Supervisor,
        SupervisorArgs {
            deps: deps.clone(),
            registry: registry.clone(),
            limits: actor_limits,
        },
    )
    .await
    .map_err(|e| format!("cannot start the supervisor: {e}"))?;
    let (shutdown_tx, shutdown) = watch::channel(false);
    let mut broker = Broker::new(
        &deps,
        registry,
        supervisor.clone(),
        socket.display().to_string(),
        shutdown_tx,
        audit,
    );
    broker.policy = Arc::new(Policy::new(crate::policy::file::default_path()));
    let broker = Arc::new(broker);
    tokio::spawn(drop_changed_logins(broker.clone(), login_changes));
    tokio::spawn(broker.policy.clone().keep_current());
    Ok(Daemon {
        broker,
        shutdown,
        supervisor,
        supervisor_done,
    })
}

/// Accepts and serves connections on `listener` until `shutdown` turns true,
/// then closes every connection. Knows nothing of locks, signals or the
/// socket file: it neither creates nor removes it.
pub async fn run(
    listener: Listener,
    broker: Arc<Broker>,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
) {
    // Every accepted connection gets in or is told why (see `connection_table`):
    // waiting for a free slot before accepting once let idle connections lock
    // out every client, `azbroker stop` included.
    let connections = Connections::new(limits);
    let sweeper = tokio::spawn(connections.clone().sweep_idle());
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            // Also when the sender is gone: nobody could ask to stop any more.
            _ = shutdown.wait_for(|stop| *stop) => break,
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
}

/// Removes the socket file a crashed daemon left (the lock says it is stale).
fn remove_stale_socket(socket: &Path) -> Result<(), String> {
    match std::fs::remove_file(socket) {
        Ok(()) => {
            tracing::info!(socket = %socket.display(), "removed a stale socket");
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!(
            "cannot remove stale socket {}: {e}",
            socket.display()
        )),
    }
}

/// Binds a fresh socket file at `socket`.
fn bind(socket: &Path) -> Result<Listener, String> {
    let name = socket
        .to_fs_name::<GenericFilePath>()
        .map_err(|e| format!("bad socket path {}: {e}", socket.display()))?;
    // A filesystem socket created 0600; the peer check in `connection` is the
    // real guard, this keeps others from even connecting.
    ListenerOptions::new()
        .name(name)
        .mode(0o600)
        .create_tokio()
        .map_err(|e| format!("cannot listen on {}: {e}", socket.display()))
}

/// The passed socket as a listener that never removes its file on drop.
fn activated_listener(activated: activation::Activated) -> Result<Listener, String> {
    interprocess::os::unix::uds_local_socket::tokio::Listener::try_from(activated.fd)
        .map(Listener::from)
        .map_err(|e| format!("socket activation: cannot use the passed socket: {e}"))
}

/// The path of an activated socket: where it is bound. A `--socket` (or
/// default path) elsewhere would put the lock and status beside another path
/// than the one clients reach, so that is refused.
fn activated_socket_path(configured: &Path, bound: &Path) -> Result<PathBuf, String> {
    if configured == bound {
        Ok(bound.to_path_buf())
    } else {
        Err(format!(
            "socket activation passed a socket bound to {}, but this daemon's socket is {} \
             (--socket, AZBROKER_SOCKET or XDG_RUNTIME_DIR): make them the same",
            bound.display(),
            configured.display()
        ))
    }
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

/// How long an activated daemon waits for a daemon that still holds the lock
/// (say one a client started before the service was installed, shutting down).
const ACTIVATED_LOCK_WAIT: Duration = Duration::from_secs(10);

/// [`take_daemon_lock`] for an activated daemon. It cannot step aside as a
/// racing autostart does: the manager passed it the socket and clients wait
/// on it. So it waits a while, then fails with the cause.
async fn wait_for_daemon_lock(socket: &Path) -> Result<nix::fcntl::Flock<File>, String> {
    let deadline = tokio::time::Instant::now() + ACTIVATED_LOCK_WAIT;
    loop {
        if let Some(lock) = take_daemon_lock(socket)? {
            return Ok(lock);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "another azbrokerd holds {} (one started outside the service manager?); \
                 stop it (kill the other azbrokerd) and connect again",
                azbroker_proto::paths::sibling(socket, "lock").display()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
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

#[cfg(test)]
mod tests {
    use super::*;
    use azbroker_client::{Client, ClientOptions};
    use azbroker_proto::ChainSpec;
    use std::os::fd::OwnedFd;

    /// A listener as a service manager would pass it: bound by someone else,
    /// with no claim to remove its file.
    fn passed_listener(socket: &Path) -> Listener {
        let std_listener = std::os::unix::net::UnixListener::bind(socket).unwrap();
        interprocess::os::unix::uds_local_socket::tokio::Listener::try_from(OwnedFd::from(
            std_listener,
        ))
        .map(Listener::from)
        .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn run_serves_a_listener_it_was_given_and_leaves_its_file_on_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("d.sock");
        let listener = passed_listener(&socket);
        let http = HttpClient::from_env(None).unwrap();
        let store = Store::file(dir.path().join("accounts.json"));
        let audit = Arc::new(Audit::start(AuditConfig::memory_only()));
        let daemon = start_broker(http, store, ActorLimits::default(), &socket, audit)
            .await
            .unwrap();
        let server = tokio::spawn(run(
            listener,
            daemon.broker.clone(),
            Limits::new(16, Duration::from_secs(60)),
            daemon.shutdown.clone(),
        ));

        let client = Client::new(ClientOptions {
            socket: socket.clone(),
            chain: ChainSpec::from_lookup(|_| None).unwrap(),
            client_name: "server-test".into(),
            autostart: false,
            start_with_managed_identity: false,
            request_timeout: Duration::from_secs(10),
        });
        let status = client.status().await.unwrap();
        assert_eq!(status.daemon_pid, std::process::id());
        assert_eq!(status.socket_path, socket.display().to_string());

        client.shutdown().await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("run returns once shutdown is asked")
            .unwrap();
        assert!(socket.exists(), "run removed a socket it did not create");
        daemon.stop().await;
    }

    #[test]
    fn an_activated_socket_elsewhere_than_the_configured_path_is_refused() {
        let here = Path::new("/run/user/1/azbroker/azbroker.sock");
        assert_eq!(activated_socket_path(here, here).unwrap(), here);
        let err = activated_socket_path(here, Path::new("/tmp/other.sock")).unwrap_err();
        assert!(err.contains("bound to /tmp/other.sock"), "{err}");
    }
}
