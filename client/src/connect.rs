//! Finding the daemon, and starting it when it is not running (the gpg-agent
//! pattern): connect; on failure take an exclusive lock beside the socket;
//! connect again (another client may have started it meanwhile); spawn
//! `azbrokerd` detached; wait until it answers; release the lock. Twenty clients
//! starting at once therefore make one daemon (and the daemon's own lock makes
//! a stray second one exit at once).
//!
//! Every connection here passes `trust`'s checks before it is handed out, and
//! a failed check ([`ClientError::Untrusted`]) never leads to starting a daemon.

use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use interprocess::local_socket::tokio::Stream;

use crate::ClientOptions;
use interprocess::local_socket::traits::tokio::Stream as _;
use interprocess::local_socket::{GenericFilePath, ToFsName};

use crate::trust::{self, Found};
use crate::ClientError;

/// How long a freshly started daemon may take to answer.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for another client that is starting the daemon.
const LOCK_TIMEOUT: Duration = Duration::from_secs(15);

/// The socket path this process would use (see `azbroker_proto::paths::socket_path`).
pub fn default_socket_path() -> PathBuf {
    azbroker_proto::paths::socket_path(nix::unistd::geteuid().as_raw())
}

/// Connects to the socket once, after checking its directory and file and
/// then the peer; `None` when no daemon is there.
pub async fn connect(socket: &Path) -> Result<Option<Stream>, ClientError> {
    if trust::check_path(socket)? == Found::Nothing {
        return Ok(None);
    }
    let name = socket
        .to_fs_name::<GenericFilePath>()
        .map_err(|e| connect_failed(socket, e))?;
    let stream = match Stream::connect(name).await {
        Ok(stream) => stream,
        Err(e) if is_not_running(&e) => return Ok(None),
        Err(e) => return Err(connect_failed(socket, e)),
    };
    let Stream::UdSocket(inner) = &stream;
    trust::check_peer(inner, socket)?;
    Ok(Some(stream))
}

/// [`connect`] without an async runtime.
pub fn connect_blocking(socket: &Path) -> Result<Option<UnixStream>, ClientError> {
    if trust::check_path(socket)? == Found::Nothing {
        return Ok(None);
    }
    let stream = match UnixStream::connect(socket) {
        Ok(stream) => stream,
        Err(e) if is_not_running(&e) => return Ok(None),
        Err(e) => return Err(connect_failed(socket, e)),
    };
    trust::check_peer(&stream, socket)?;
    Ok(Some(stream))
}

fn connect_failed(socket: &Path, e: io::Error) -> ClientError {
    ClientError::Connect(format!("{}: {e}", socket.display()))
}

/// Whether a connect error means "no daemon is listening there".
pub fn is_not_running(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
    )
}

/// Connects, starting `azbrokerd` first when none is running and autostart is on.
pub async fn connect_or_start(options: &ClientOptions) -> Result<Stream, ClientError> {
    let socket = &options.socket;
    if let Some(stream) = connect(socket).await? {
        return Ok(stream);
    }
    if !options.autostart {
        return Err(not_running_no_autostart(socket));
    }
    let path = socket.to_path_buf();
    let with_managed_identity = options.start_with_managed_identity;
    // The lock wait and the spawn block; keep them off the async reactor.
    tokio::task::spawn_blocking(move || start_locked(&path, with_managed_identity))
        .await
        .map_err(|e| ClientError::Connect(format!("autostart task failed: {e}")))??;
    connect(socket).await?.ok_or_else(|| vanished(socket))
}

/// The daemon answered during the start and was gone at the next connect.
pub(crate) fn vanished(socket: &Path) -> ClientError {
    ClientError::Connect(format!(
        "{}: azbrokerd stopped right after it started",
        socket.display()
    ))
}

pub(crate) fn not_running_no_autostart(socket: &Path) -> ClientError {
    ClientError::Connect(format!(
        "azbrokerd is not running at {} and AZBROKER_NO_AUTOSTART is set; start it with 'azbrokerd'",
        socket.display()
    ))
}

/// Whether this user's daemon answers there (a checked connect, closed at once).
fn answers(socket: &Path) -> Result<bool, ClientError> {
    connect_blocking(socket).map(|stream| stream.is_some())
}

/// Under the autostart lock: return once a daemon answers, spawning one if
/// needed. Blocking; for clients without an async runtime.
pub fn start_locked(socket: &Path, with_managed_identity: bool) -> Result<(), ClientError> {
    start_locked_unless(socket, with_managed_identity, &|| None)
}

/// [`start_locked`], asking `called_off` right before spawning (after the
/// lock wait, which can be long): `Some(why)` means nobody wants the daemon
/// any more, and nothing is started.
pub fn start_locked_unless(
    socket: &Path,
    with_managed_identity: bool,
    called_off: &dyn Fn() -> Option<String>,
) -> Result<(), ClientError> {
    let fail = |m: String| ClientError::Connect(m);
    let dir = trust::socket_dir(socket)?;
    if trust::check_dir(dir)? == Found::Nothing {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| fail(format!("cannot create {}: {e}", dir.display())))?;
    }
    // Again after creating it: another user may have made it first.
    trust::check_dir(dir)?;
    let lock_path = azbroker_proto::paths::sibling(socket, "autostart.lock");
    let lock_file = trust::open_lock_file(&lock_path)?;
    let _lock = lock_with_timeout(lock_file, LOCK_TIMEOUT)
        .map_err(|e| fail(format!("{}: {e}", lock_path.display())))?;

    if answers(socket)? {
        return Ok(());
    }
    if let Some(why) = called_off() {
        return Err(fail(format!("not starting azbrokerd: {why}")));
    }
    let daemon = find_daemon().ok_or_else(|| {
        fail(
            "cannot find azbrokerd: not beside this program, not in AZBROKER_DAEMON, not on PATH"
                .into(),
        )
    })?;
    let log = log_path();
    let mut child = spawn_detached(&daemon, socket, log.as_deref(), with_managed_identity)
        .map_err(|e| fail(format!("cannot start {}: {e}", daemon.display())))?;
    let deadline = Instant::now() + START_TIMEOUT;
    let mut pause = Duration::from_millis(2);
    loop {
        if answers(socket)? {
            // Reap the daemon when it eventually exits, so a long-lived
            // client never leaves a zombie.
            std::thread::spawn(move || child.wait());
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            // Exit 0 means another daemon owns the socket; keep trying to connect to it.
            if !status.success() {
                return Err(fail(format!(
                    "azbrokerd exited with {status}{}",
                    log.as_deref().map(last_log_line).unwrap_or_default()
                )));
            }
        }
        if Instant::now() > deadline {
            return Err(fail(format!(
                "azbrokerd did not answer on {} within {} s",
                socket.display(),
                START_TIMEOUT.as_secs()
            )));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

fn lock_with_timeout(
    file: std::fs::File,
    timeout: Duration,
) -> io::Result<nix::fcntl::Flock<std::fs::File>> {
    use nix::fcntl::{Flock, FlockArg};
    let deadline = Instant::now() + timeout;
    let mut file = file;
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(lock),
            Err((back, nix::errno::Errno::EWOULDBLOCK)) if Instant::now() < deadline => {
                file = back;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err((_, e)) => return Err(io::Error::from(e)),
        }
    }
}

/// `azbrokerd` beside this executable, else `$AZBROKER_DAEMON`, else on `PATH`.
pub fn find_daemon() -> Option<PathBuf> {
    let exe_name = "azbrokerd";
    if let Some(beside) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(exe_name)))
        .filter(|p| p.is_file())
    {
        return Some(beside);
    }
    if let Some(explicit) = std::env::var_os("AZBROKER_DAEMON").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(explicit));
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(exe_name))
        .find(|p| p.is_file())
}

fn log_path() -> Option<PathBuf> {
    azbroker_proto::paths::state_dir().map(|dir| dir.join("azbrokerd.log"))
}

/// Starts the daemon in its own session, with no terminal and stdio away from ours.
fn spawn_detached(
    daemon: &Path,
    socket: &Path,
    log: Option<&Path>,
    with_managed_identity: bool,
) -> io::Result<std::process::Child> {
    let mut command = Command::new(daemon);
    command.arg("--socket").arg(socket);
    if with_managed_identity {
        command.arg("--managed-identity-endpoint");
    }
    if let Some(log) = log {
        command.arg("--log-file").arg(log);
    }
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: setsid is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        command.pre_exec(|| {
            nix::unistd::setsid().map_err(io::Error::from)?;
            Ok(())
        });
    }
    command.spawn()
}

fn last_log_line(log: &Path) -> String {
    std::fs::read_to_string(log)
        .ok()
        .and_then(|text| {
            text.lines()
                .last()
                .map(|l| format!(" ({} says: {l})", log.display()))
        })
        .unwrap_or_default()
}
