//! The daemon: reachable (starting it as any client would), its version,
//! its socket's path and permissions, where it stores refresh tokens.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use azbroker_client::{connect, Client, ClientError, ClientOptions};
use azbroker_proto::{ChainSpec, StatusReport};
use serde::Serialize;

use super::env::Environment;
use super::{Level, Problem};

/// Limit for the daemon's answers (token checks run `az` with a 13 s limit of its own).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Serialize)]
pub struct DaemonReport {
    pub status: Level,
    pub reachable: bool,
    /// This run started the daemon (none was running and autostart is on).
    pub started_by_diagnose: bool,
    pub socket: SocketReport,
    pub version: Option<String>,
    pub protocol_version: Option<u32>,
    pub pid: Option<u32>,
    pub uptime_secs: Option<u64>,
    /// Where refresh tokens are kept, as the daemon reports it.
    pub store: Option<String>,
    pub error: Option<String>,
}

#[derive(Serialize)]
pub struct SocketReport {
    pub path: String,
    /// Permission bits, e.g. `0600`, when the socket exists.
    pub mode: Option<String>,
    pub owned_by_you: Option<bool>,
    pub directory_mode: Option<String>,
    pub directory_owned_by_you: Option<bool>,
    /// Permission problems found.
    pub issues: Vec<String>,
}

/// A connection to the daemon (when one answers) and what is known about it.
pub struct Daemon {
    pub report: DaemonReport,
    client: Option<Client>,
    socket: PathBuf,
    authority_host: String,
}

pub async fn connect(env: &Environment) -> Daemon {
    let socket = connect::default_socket_path();
    // A junk value is reported by the environment part; here it means "do not start".
    let autostart = matches!(
        azbroker_proto::env::boolean("AZBROKER_NO_AUTOSTART"),
        Ok(false)
    );
    // A checked connect (`trust`): nothing is sent to a socket that is not ours.
    let was_running = matches!(connect::connect(&socket).await, Ok(Some(_)));
    let client = Client::new(ClientOptions {
        socket: socket.clone(),
        chain: empty_chain(&env.authority_url),
        client_name: "azbroker-diagnose".into(),
        autostart,
        start_with_managed_identity: false,
        request_timeout: REQUEST_TIMEOUT,
    });
    let welcome = client.welcome().await;
    let mut report = DaemonReport {
        status: Level::Ok,
        reachable: welcome.is_ok(),
        started_by_diagnose: welcome.is_ok() && !was_running,
        socket: inspect_socket(&socket),
        version: None,
        protocol_version: None,
        pid: None,
        uptime_secs: None,
        store: None,
        error: None,
    };
    match &welcome {
        Ok(welcome) => {
            report.version = Some(welcome.daemon_version.clone());
            report.protocol_version = Some(welcome.protocol_version);
            report.pid = Some(welcome.daemon_pid);
        }
        Err(e) => {
            report.status = Level::Fail;
            report.error = Some(unreachable_reason(e, autostart));
        }
    }
    if report.reachable && !report.socket.issues.is_empty() {
        report.status = Level::Warn;
    }
    Daemon {
        report,
        client: welcome.is_ok().then_some(client),
        socket,
        authority_host: env.authority_url.clone(),
    }
}

impl Daemon {
    pub fn reachable(&self) -> bool {
        self.client.is_some()
    }

    /// A fresh connection to the running daemon that sends `chain`; `None` when none answers.
    pub fn client_with(&self, chain: ChainSpec) -> Option<Client> {
        self.client_waiting(chain, REQUEST_TIMEOUT)
    }

    /// A fresh connection with no credentials whose requests may take `timeout`.
    pub fn plain_client(&self, timeout: Duration) -> Option<Client> {
        self.client_waiting(empty_chain(&self.authority_host), timeout)
    }

    fn client_waiting(&self, chain: ChainSpec, timeout: Duration) -> Option<Client> {
        self.reachable().then(|| {
            Client::new(ClientOptions {
                socket: self.socket.clone(),
                chain,
                client_name: "azbroker-diagnose".into(),
                autostart: false,
                start_with_managed_identity: false,
                request_timeout: timeout,
            })
        })
    }

    pub async fn status(&self) -> Option<StatusReport> {
        self.client.as_ref()?.status().await.ok()
    }

    pub fn apply_status(&mut self, status: Option<&StatusReport>) {
        if let Some(status) = status {
            self.report.uptime_secs = Some(status.uptime_secs);
            self.report.store = Some(status.store.clone());
        }
    }
}

/// Hello needs a chain; requests that use none send this one.
fn empty_chain(authority_host: &str) -> ChainSpec {
    ChainSpec {
        authority_host: authority_host.to_string(),
        credentials: Vec::new(),
        selected_by: "azbroker diagnose".into(),
        interactive: false,
    }
}

fn unreachable_reason(error: &ClientError, autostart: bool) -> String {
    let text = match error {
        ClientError::Connect(why) | ClientError::Untrusted(why) => why.clone(),
        other => other.to_string(),
    };
    if autostart || text.contains("AZBROKER_NO_AUTOSTART") {
        text
    } else {
        format!("{text} (autostart is off: AZBROKER_NO_AUTOSTART)")
    }
}

fn inspect_socket(socket: &Path) -> SocketReport {
    let me = nix::unistd::geteuid().as_raw();
    let mut report = SocketReport {
        path: socket.display().to_string(),
        mode: None,
        owned_by_you: None,
        directory_mode: None,
        directory_owned_by_you: None,
        issues: Vec::new(),
    };
    if let Ok(meta) = std::fs::metadata(socket) {
        let mode = meta.mode() & 0o777;
        report.mode = Some(format!("{mode:04o}"));
        report.owned_by_you = Some(meta.uid() == me);
        if meta.uid() != me {
            report.issues.push(format!(
                "the socket belongs to uid {}, not you (uid {me})",
                meta.uid()
            ));
        }
        if mode & 0o077 != 0 {
            report.issues.push(format!(
                "the socket is open to other users (mode {mode:04o}); azbrokerd still refuses them, but it should be 0600"
            ));
        }
    }
    if let Some(dir) = socket.parent() {
        if let Ok(meta) = std::fs::metadata(dir) {
            let mode = meta.mode() & 0o777;
            report.directory_mode = Some(format!("{mode:04o}"));
            report.directory_owned_by_you = Some(meta.uid() == me);
            if meta.uid() != me {
                report.issues.push(format!(
                    "the socket's directory {} belongs to uid {}, not you",
                    dir.display(),
                    meta.uid()
                ));
            }
            // The clients' rule (`trust`): readable by others is fine (the
            // socket is 0600 and every peer is checked), writable is not.
            if mode & 0o022 != 0 {
                report.issues.push(format!(
                    "the socket's directory {} is writable by other users (mode {mode:04o}); clients refuse it: `chmod go-w {}`",
                    dir.display(),
                    dir.display()
                ));
            }
        }
    }
    report
}

pub fn problems(report: &DaemonReport, out: &mut Vec<Problem>) {
    let subject = "azbrokerd";
    if let Some(error) = &report.error {
        let remedy = if error.contains("AZBROKER_NO_AUTOSTART") {
            "Start it with `azbrokerd` (or unset AZBROKER_NO_AUTOSTART so clients start it)."
                .to_string()
        } else if error.starts_with("refusing") {
            // The client's trust check named the path, its owner and the fix.
            "Do what the message says: the socket path is not safe to use (it, its \
             directory or the process behind it is not yours), so nothing was sent."
                .to_string()
        } else if error.contains("cannot find azbrokerd") {
            "Install azbrokerd beside azbroker, put it on PATH, or set AZBROKER_DAEMON to its path."
                .to_string()
        } else {
            let log = azbroker_proto::paths::state_dir()
                .map(|dir| dir.join("azbrokerd.log").display().to_string())
                .unwrap_or_else(|| "its log file".into());
            format!("Read the daemon's log ({log}) for the cause; `azbrokerd --foreground` shows it on the terminal.")
        };
        out.push(Problem::fail(
            "daemon",
            subject,
            format!(
                "azbrokerd cannot be reached: {}.",
                error.trim_end_matches('.')
            ),
            remedy,
        ));
        return;
    }
    let cli = env!("CARGO_PKG_VERSION");
    if let Some(version) = report.version.as_deref().filter(|v| *v != cli) {
        out.push(Problem::warn(
            "daemon",
            subject,
            format!("azbrokerd {version} is running, but this azbroker is {cli}."),
            "Restart it so the versions match: `azbroker stop` (the next command starts the new one).",
        ));
    }
    for issue in &report.socket.issues {
        out.push(Problem::warn(
            "daemon",
            "socket",
            format!("{}: {issue}.", report.socket.path),
            "Run `azbroker stop`; azbrokerd recreates its directory (0700) and socket (0600) when it starts.",
        ));
    }
}
