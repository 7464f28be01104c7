//! A private world for one benchmark run: a temporary directory with the fake
//! `az`, a test CA and the HTTPS Entra ID double, daemons on private sockets
//! in it, and the bare baseline server. Everything on loopback.

use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use azbroker_client::{Client, ClientOptions};
use azbroker_e2e::{EntraDouble, FakeAz, TestPki};
use azbroker_proto::ChainSpec;
use tempfile::TempDir;

use crate::binaries::Binaries;

/// The service principal the Environment credential uses against the Entra double.
pub const TENANT: &str = "11111111-1111-1111-1111-111111111111";
pub const CLIENT_ID: &str = "22222222-2222-2222-2222-222222222222";
const CLIENT_SECRET: &str = "bench-secret";

/// Soft open-file limit the daemons start with: below the connections of the
/// many-clients run, so that it only passes if the daemon raises its own limit.
pub const DAEMON_START_NOFILE: u64 = 512;

pub struct Sandbox {
    pub dir: TempDir,
    pub az: FakeAz,
    pub entra: EntraDouble,
    pub bins: Binaries,
    _pki: TestPki,
    ca_file: PathBuf,
}

impl Sandbox {
    pub fn new(bins: Binaries) -> Result<Sandbox, String> {
        let dir = tempfile::Builder::new()
            .prefix("azbroker-bench-")
            .tempdir()
            .map_err(|e| format!("temporary directory: {e}"))?;
        let bin_dir = dir.path().join("bin");
        std::fs::create_dir_all(&bin_dir).map_err(|e| format!("{}: {e}", bin_dir.display()))?;
        let az = FakeAz::install(&bin_dir);
        let pki = TestPki::generate(dir.path());
        let entra = EntraDouble::start(&pki);
        entra.register_client(CLIENT_ID, CLIENT_SECRET);
        Ok(Sandbox {
            ca_file: pki.ca_pem_path().to_path_buf(),
            dir,
            az,
            entra,
            bins,
            _pki: pki,
        })
    }

    /// A command with a clean environment: the fake `az` first on `PATH`, the
    /// test CA trusted, state files inside the sandbox.
    pub fn command(&self, program: &Path) -> Command {
        let mut command = Command::new(program);
        command
            .env_clear()
            .env("PATH", self.path())
            .env("HOME", self.dir.path())
            .env("XDG_STATE_HOME", self.dir.path().join("state"))
            .env("SSL_CERT_FILE", &self.ca_file)
            .stdin(Stdio::null());
        command
    }

    /// Starts `azbrokerd --foreground` on `<sandbox>/<name>/azbroker.sock` with
    /// a soft open-file limit of [`DAEMON_START_NOFILE`], and waits until it answers.
    pub fn start_daemon(&self, name: &str) -> Result<Daemon, String> {
        self.start_daemon_with(name, &[])
    }

    /// [`Sandbox::start_daemon`] with extra daemon arguments.
    pub fn start_daemon_with(&self, name: &str, args: &[&str]) -> Result<Daemon, String> {
        self.start_daemon_env(name, args, &[])
    }

    /// [`Sandbox::start_daemon_with`] with extra variables for the daemon.
    pub fn start_daemon_env(
        &self,
        name: &str,
        args: &[&str],
        vars: &[(&str, &Path)],
    ) -> Result<Daemon, String> {
        let socket = self.dir.path().join(name).join("azbroker.sock");
        let log_path = self.dir.path().join(format!("{name}.log"));
        let log =
            std::fs::File::create(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
        let mut command = self.command(&self.bins.azbrokerd);
        command
            .arg("--foreground")
            .arg("--socket")
            .arg(&socket)
            .args(args)
            .envs(vars.iter().copied())
            .stdout(Stdio::null())
            .stderr(log);
        // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            command.pre_exec(|| {
                use nix::sys::resource::{getrlimit, setrlimit, Resource};
                let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
                setrlimit(Resource::RLIMIT_NOFILE, DAEMON_START_NOFILE.min(hard), hard)?;
                Ok(())
            });
        }
        let child = command
            .spawn()
            .map_err(|e| format!("starting {}: {e}", self.bins.azbrokerd.display()))?;
        let daemon = Daemon {
            pid: child.id(),
            child,
            socket,
            log: log_path,
        };
        wait_for_socket(&daemon.socket, || daemon.log_tail())?;
        Ok(daemon)
    }

    /// Starts the bare baseline server answering every request with `reply_bytes`.
    pub fn start_bare(&self, reply_bytes: usize) -> Result<Bare, String> {
        let socket = self.dir.path().join("bare.sock");
        let child = self
            .command(&self.bins.bare_server)
            .arg(&socket)
            .arg(reply_bytes.to_string())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting {}: {e}", self.bins.bare_server.display()))?;
        let bare = Bare {
            pid: child.id(),
            child,
            socket,
            reply_bytes,
        };
        wait_for_socket(&bare.socket, String::new)?;
        Ok(bare)
    }

    /// The chain of a developer signed in with `az` (what the CLI selects with
    /// `AZURE_TOKEN_CREDENTIALS=AzureCliCredential`).
    pub fn cli_chain(&self) -> ChainSpec {
        let (path, home) = (self.path(), self.dir.path().to_string_lossy());
        chain(&[
            ("AZURE_TOKEN_CREDENTIALS", "AzureCliCredential"),
            // The requester's environment, which the daemon runs `az` with.
            ("PATH", path.to_str().expect("a UTF-8 PATH")),
            ("HOME", &home),
        ])
    }

    /// The fake `az` first, then the system directories.
    fn path(&self) -> std::ffi::OsString {
        let mut path = self.az.dir().as_os_str().to_owned();
        path.push(":/usr/local/bin:/usr/bin:/bin");
        path
    }

    /// A service principal against the Entra double.
    pub fn service_principal_chain(&self) -> ChainSpec {
        let authority = self.entra.authority();
        chain(&[
            ("AZURE_TOKEN_CREDENTIALS", "EnvironmentCredential"),
            ("AZURE_TENANT_ID", TENANT),
            ("AZURE_CLIENT_ID", CLIENT_ID),
            ("AZURE_CLIENT_SECRET", CLIENT_SECRET),
            ("AZURE_AUTHORITY_HOST", &authority),
        ])
    }
}

/// A service principal the Entra double does not know: the `n`th made-up
/// client id, a distinct credential identity each.
pub fn unknown_service_principal_chain(authority: &str, n: usize) -> ChainSpec {
    let client_id = format!("00000000-0000-4000-8000-{n:012}");
    chain(&[
        ("AZURE_TOKEN_CREDENTIALS", "EnvironmentCredential"),
        ("AZURE_TENANT_ID", TENANT),
        ("AZURE_CLIENT_ID", &client_id),
        ("AZURE_CLIENT_SECRET", CLIENT_SECRET),
        ("AZURE_AUTHORITY_HOST", authority),
    ])
}

/// A library client of the daemon at `socket` (connects on first use).
pub fn client_at(socket: &Path, chain: ChainSpec) -> Client {
    Client::new(ClientOptions {
        socket: socket.to_path_buf(),
        chain,
        client_name: "azbroker-bench".into(),
        autostart: false,
        start_with_managed_identity: false,
        request_timeout: Duration::from_secs(60),
    })
}

fn chain(vars: &[(&str, &str)]) -> ChainSpec {
    ChainSpec::from_lookup(|name| {
        vars.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    })
    .expect("a valid chain")
}

fn wait_for_socket(socket: &Path, why: impl Fn() -> String) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while UnixStream::connect(socket).is_err() {
        if Instant::now() > deadline {
            return Err(format!(
                "nothing answers on {} after 10 s {}",
                socket.display(),
                why()
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// A running `azbrokerd`; stopped when dropped.
pub struct Daemon {
    child: Child,
    pub pid: u32,
    pub socket: PathBuf,
    log: PathBuf,
}

impl Daemon {
    /// A library client with its own connection (connects on first use).
    pub fn client(&self, chain: &ChainSpec) -> Client {
        client_at(&self.socket, chain.clone())
    }

    /// Resident memory (`VmRSS`), in bytes.
    pub fn rss_bytes(&self) -> Result<u64, String> {
        let status = self.proc_file("status")?;
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().strip_suffix("kB"))
            .and_then(|kb| kb.trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .ok_or_else(|| "no VmRSS in /proc/<pid>/status".into())
    }

    /// The soft open-file limit the daemon runs with now.
    pub fn open_file_limit(&self) -> Result<u64, String> {
        let limits = self.proc_file("limits")?;
        limits
            .lines()
            .find(|line| line.starts_with("Max open files"))
            .and_then(|line| line.split_whitespace().nth(3))
            .and_then(|soft| soft.parse().ok())
            .ok_or_else(|| "no 'Max open files' in /proc/<pid>/limits".into())
    }

    /// File descriptors the daemon holds.
    pub fn open_files(&self) -> Result<usize, String> {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid))
            .map(|dir| dir.count())
            .map_err(|e| format!("/proc/{}/fd: {e}", self.pid))
    }

    fn proc_file(&self, name: &str) -> Result<String, String> {
        std::fs::read_to_string(format!("/proc/{}/{name}", self.pid))
            .map_err(|e| format!("/proc/{}/{name}: {e}", self.pid))
    }

    /// The end of the daemon's log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(5)..].join("\n");
        format!("(log {}:\n{tail})", self.log.display())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.pid as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The running bare baseline server; killed when dropped.
pub struct Bare {
    child: Child,
    pub pid: u32,
    pub socket: PathBuf,
    pub reply_bytes: usize,
}

impl Drop for Bare {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
