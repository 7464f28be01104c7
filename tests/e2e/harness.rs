//! Starts the real binaries in a private sandbox: a temporary directory with its
//! own socket, state directory, fake `az` and test CA, and an environment that
//! contains only what the test puts there.

use std::ffi::OsString;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use azbroker_client::{Client, ClientOptions};
use azbroker_e2e::{FakeAz, TestPki};
use azbroker_proto::ChainSpec;
use serde_json::Value;
use tempfile::TempDir;

/// A built binary of this workspace (`scripts/test` builds them before the tests).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/e2e-<hash> -> target/<profile>/<name>
    let path = exe
        .parent()
        .and_then(Path::parent)
        .expect("target directory")
        .join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the binaries first (scripts/test does)",
        path.display()
    );
    path
}

/// Polls `check` every 50 ms until it holds or `limit` passes.
pub fn wait_until(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub struct Sandbox {
    pub dir: TempDir,
    pub socket: PathBuf,
    pub az: FakeAz,
    pub pki: TestPki,
    /// Extra variables for every process started from here.
    vars: Vec<(String, OsString)>,
    daemons: Vec<Child>,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        let dir = tempfile::Builder::new()
            .prefix("azbroker-e2e-")
            .tempdir()
            .expect("temp dir");
        let bin_dir = dir.path().join("bin");
        std::fs::create_dir_all(&bin_dir).unwrap();
        let az = FakeAz::install(&bin_dir);
        let pki = TestPki::generate(dir.path());
        let socket = dir.path().join("run").join("azbroker.sock");
        let mut sandbox = Sandbox {
            dir,
            socket,
            az,
            pki,
            vars: Vec::new(),
            daemons: Vec::new(),
        };
        // Developer credentials by default: no test reaches for a browser or IMDS.
        sandbox.set("AZURE_TOKEN_CREDENTIALS", "dev");
        sandbox
    }

    /// Sets a variable for every process started from now on.
    pub fn set(&mut self, name: &str, value: impl Into<OsString>) {
        self.vars.retain(|(n, _)| n != name);
        self.vars.push((name.to_string(), value.into()));
    }

    pub fn unset(&mut self, name: &str) {
        self.vars.retain(|(n, _)| n != name);
    }

    /// PATH with the fake `az` first, then the system directories.
    pub fn path_with_az(&self) -> OsString {
        let mut path = self.az.dir().as_os_str().to_owned();
        path.push(":/usr/local/bin:/usr/bin:/bin");
        path
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("azbrokerd.log")
    }

    /// The whole environment of a process started from here (nothing is inherited).
    pub fn env(&self) -> Vec<(String, OsString)> {
        let mut env: Vec<(String, OsString)> = vec![
            ("PATH".into(), self.path_with_az()),
            ("HOME".into(), self.dir.path().into()),
            (
                "XDG_STATE_HOME".into(),
                self.dir.path().join("state").into(),
            ),
            ("AZBROKER_SOCKET".into(), self.socket.clone().into()),
            ("SSL_CERT_FILE".into(), self.pki.ca_pem_path().into()),
            ("AZBROKER_LOG".into(), "debug".into()),
        ];
        for (name, value) in &self.vars {
            env.retain(|(n, _)| n != name);
            env.push((name.clone(), value.clone()));
        }
        env
    }

    /// A command for one of our binaries with a clean, sandboxed environment.
    pub fn command(&self, name: &str) -> Command {
        let mut command = Command::new(bin(name));
        command.env_clear().envs(self.env()).stdin(Stdio::null());
        command
    }

    /// Starts `azbrokerd --foreground`, logging to [`Sandbox::log_path`], and waits until it answers.
    pub fn start_daemon(&mut self) -> u32 {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let child = self
            .command("azbrokerd")
            .arg("--foreground")
            .arg("--socket")
            .arg(&self.socket)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start azbrokerd");
        let pid = child.id();
        self.daemons.push(child);
        let socket = self.socket.clone();
        wait_until(Duration::from_secs(10), "azbrokerd to listen", || {
            UnixStream::connect(&socket).is_ok()
        });
        pid
    }

    /// Runs `azbroker ARGS` to completion.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.command("azbroker")
            .args(args)
            .output()
            .expect("run azbroker")
    }

    /// `azbroker token --scope SCOPE [extra]`, which must succeed; returns its JSON.
    pub fn token(&self, scope: &str, extra: &[&str]) -> Value {
        let mut args = vec!["token", "--scope", scope];
        args.extend_from_slice(extra);
        let out = self.cli(&args);
        assert!(
            out.status.success(),
            "azbroker token failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        serde_json::from_slice(&out.stdout).expect("token JSON")
    }

    pub fn status(&self) -> Value {
        let out = self.cli(&["status", "--json"]);
        assert!(
            out.status.success(),
            "azbroker status failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("status JSON")
    }

    /// The daemon's log so far (for assertions and failure messages).
    pub fn log(&self) -> String {
        let mut text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        // Autostarted daemons log to the state directory instead.
        let state_log = self.dir.path().join("state/azbroker/azbrokerd.log");
        text.push_str(&std::fs::read_to_string(state_log).unwrap_or_default());
        text
    }

    /// A library client with the chain that `vars` select.
    pub fn client(&self, vars: &[(&str, &str)]) -> Client {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let chain = ChainSpec::from_lookup(|name| {
            vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
        })
        .expect("chain");
        Client::new(ClientOptions {
            socket: self.socket.clone(),
            chain,
            client_name: "e2e".into(),
            autostart: false,
            request_timeout: Duration::from_secs(60),
        })
    }

    /// Pids of live `azbrokerd` processes serving this sandbox's socket.
    pub fn daemon_pids(&self) -> Vec<i32> {
        let socket = self.socket.to_string_lossy().into_owned();
        let mut pids = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            let zombie = stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
            if !zombie && cmdline.contains("azbrokerd") && cmdline.contains(&socket) {
                pids.push(pid);
            }
        }
        pids
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        for pid in self.daemon_pids() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        for child in &mut self.daemons {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
