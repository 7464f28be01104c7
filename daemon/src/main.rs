//! `azbrokerd`: arguments, logging, then the server (on a socket it binds, or
//! on one the service manager passed by socket activation).

use std::path::PathBuf;
use std::process::ExitCode;

use azbroker_daemon::actors::activity::ActorLimits;
use azbroker_daemon::connection_table::Limits;
use azbroker_daemon::server::{self, activation, notify, Outcome, ServerConfig};
use clap::Parser;

/// The azbroker daemon: one per user, serving Entra ID tokens over a local socket.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Socket path [default: $AZBROKER_SOCKET, else $XDG_RUNTIME_DIR/azbroker/azbroker.sock,
    /// else $XDG_STATE_HOME/azbroker/azbroker.sock (~/.local/state/azbroker/)]
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Stay attached and log to stderr instead of the log file.
    #[arg(long)]
    foreground: bool,
    /// Log file for background mode [default: <state dir>/azbrokerd.log].
    #[arg(long)]
    log_file: Option<PathBuf>,
    /// For tests: a loopback URL that stands in for the VM metadata endpoint
    /// (169.254.169.254). Set only on the daemon's command line, never from a
    /// client's environment.
    #[arg(long, hide = true, value_parser = azbroker_daemon::http::check_test_imds_url)]
    imds_endpoint: Option<String>,
    /// Also serve the App Service managed-identity protocol on 127.0.0.1 (off
    /// by default; AZBROKER_MANAGED_IDENTITY=1 turns it on too, so that a
    /// client that starts the daemon can ask for it).
    #[arg(long)]
    managed_identity_endpoint: bool,
    /// For tests: close connections idle this long [default: 300]. Set only on
    /// the daemon's command line, never by a client.
    #[arg(long, hide = true, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    idle_timeout_secs: Option<u64>,
    /// For tests: the connection cap [default: 8192].
    #[arg(long, hide = true, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    max_connections: Option<u64>,
    /// For tests: connections one process may hold [default: an eighth of the cap].
    #[arg(long, hide = true, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    max_connections_per_process: Option<u64>,
    /// For tests and benchmarks: seconds after which an actor with nothing
    /// to do stops [default: 600]. Set only on the daemon's command line.
    #[arg(long, hide = true, value_parser = clap::value_parser!(u64).range(1..))]
    actor_idle_secs: Option<u64>,
    /// For tests: the most credential actors at once [default: 256].
    #[arg(long, hide = true, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    max_credential_actors: Option<u64>,
}

fn main() -> ExitCode {
    // First, while this is the only thread: no dumps, no tracing, no secrets
    // of the starter's environment.
    let hardening = azbroker_daemon::harden::at_start();
    // Also while single-threaded: both remove their variables.
    let activated = activation::take();
    let notifier = notify::Notifier::from_env();
    let args = Args::parse();
    let limits = limits(&args);
    let uid = nix::unistd::geteuid().as_raw();
    let socket_path = args
        .socket
        .unwrap_or_else(|| azbroker_proto::paths::socket_path(uid));
    let managed_identity = match azbroker_proto::env::boolean("AZBROKER_MANAGED_IDENTITY") {
        Ok(on) => args.managed_identity_endpoint || on,
        Err(e) => {
            eprintln!("azbrokerd: {e}");
            return ExitCode::FAILURE;
        }
    };
    let activated = match activated {
        Ok(activated) => activated,
        Err(e) => {
            eprintln!("azbrokerd: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = init_logging(args.foreground, args.log_file) {
        eprintln!("azbrokerd: {e}");
        return ExitCode::FAILURE;
    }
    // The managed-identity endpoint serves the daemon's own chain, which reads them.
    hardening.finish(managed_identity);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("azbrokerd: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut actor_limits = ActorLimits::default();
    if let Some(secs) = args.actor_idle_secs {
        actor_limits.idle_after = std::time::Duration::from_secs(secs);
    }
    if let Some(max) = args.max_credential_actors {
        actor_limits.max_credential_actors = max as usize;
    }
    let outcome = runtime.block_on(server::start(ServerConfig {
        socket_path: socket_path.clone(),
        activated,
        notifier,
        imds_url: args.imds_endpoint,
        managed_identity,
        limits,
        actor_limits,
    }));
    // Timers and idle connection tasks must not hold the process open.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match outcome {
        Ok(Outcome::Stopped) => ExitCode::SUCCESS,
        Ok(Outcome::AlreadyRunning) => {
            // Racing autostarts end here: harmless, so exit 0.
            eprintln!("azbrokerd: already running on {}", socket_path.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "azbrokerd failed");
            eprintln!("azbrokerd: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The connection limits: the defaults, or what a test asked for.
fn limits(args: &Args) -> Limits {
    let mut limits = Limits::new(
        args.max_connections
            .map_or(Limits::MAX_CONNECTIONS, |max| max as usize),
        args.idle_timeout_secs
            .map_or(Limits::IDLE_TIMEOUT, std::time::Duration::from_secs),
    );
    if let Some(per_process) = args.max_connections_per_process {
        limits.per_peer = per_process as usize;
    }
    limits
}

/// Foreground: stderr. Background: a 0600 file in the user's state directory.
/// `AZBROKER_LOG` sets the filter (default `info`).
fn init_logging(foreground: bool, log_file: Option<PathBuf>) -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("AZBROKER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if foreground {
        builder.with_writer(std::io::stderr).init();
        return Ok(());
    }
    let path = match log_file {
        Some(path) => path,
        None => azbroker_proto::paths::state_dir()
            .ok_or("cannot find a state directory: set HOME or XDG_STATE_HOME, or pass --log-file")?
            .join("azbrokerd.log"),
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        azbroker_daemon::paths::ensure_private_dir(dir)
            .map_err(|e| format!("log directory {}: {e}", dir.display()))?;
    }
    let file = azbroker_daemon::paths::open_private(&path, true)
        .map_err(|e| format!("log file {}: {e}", path.display()))?;
    builder
        .with_ansi(false)
        .with_writer(std::sync::Mutex::new(file))
        .init();
    Ok(())
}
