//! Starts the real binaries in a private sandbox: a temporary directory with its
//! own socket, state directory, fake `az` and test CA, and an environment that
//! contains only what the test puts there.

use std::ffi::{OsStr, OsString};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use azbroker_client::{Client, ClientOptions};
use azbroker_e2e::fake_azd::FakeAzd;
use azbroker_e2e::fake_pwsh::FakePwsh;
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

/// The Python interpreter that drives real Azure SDK clients:
/// `$AZBROKER_TEST_PYTHON`, else the project's venv `target/test-python` that
/// `scripts/setup-tests` makes, else `python3` on `PATH`; resolved to its real
/// executable (sandboxes clear the environment a pyenv shim would need). It
/// must have the packages of `tests/python/requirements.txt`.
pub fn python() -> PathBuf {
    static PYTHON: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    let found = PYTHON.get_or_init(|| {
        let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-python/bin/python");
        let requested = std::env::var_os("AZBROKER_TEST_PYTHON")
            .or_else(|| venv.is_file().then(|| venv.into_os_string()))
            .unwrap_or_else(|| "python3".into());
        let install = "install them with scripts/setup-tests (scripts/test runs it), \
                       or point AZBROKER_TEST_PYTHON at a Python that has them";
        let out = Command::new(&requested)
            .args(["-c", "import sys, azure.identity; print(sys.executable)"])
            .output()
            .map_err(|e| format!("cannot run {requested:?}: {e}; {install}"))?;
        if !out.status.success() {
            return Err(format!(
                "{requested:?} lacks the Python package azure-identity ({}); {install}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
    });
    match found {
        Ok(path) => path.clone(),
        Err(e) => panic!("{e}"),
    }
}

/// A script of `tests/python/`.
pub fn python_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("python")
        .join(name)
}

/// Spawns `command`, retrying while its program is "busy": a program this
/// process has just written can still be open for writing in a child that
/// another test thread forked meanwhile, until that child execs.
pub fn spawn_fresh(command: &mut Command) -> std::io::Result<std::process::Child> {
    let mut tries = 0;
    loop {
        match command.spawn() {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && tries < 100 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            spawned => return spawned,
        }
    }
}

/// Polls `check` every 50 ms until it holds or `limit` passes.
pub fn wait_until(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Lets others traverse every ancestor of `path` (for tests that run a process as
/// another user; the temp dir's parents are usually open already).
pub fn open_path_to(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for ancestor in path.ancestors() {
        let Ok(meta) = std::fs::metadata(ancestor) else {
            continue;
        };
        let mode = meta.permissions().mode();
        if mode & 0o001 == 0 {
            let _ =
                std::fs::set_permissions(ancestor, std::fs::Permissions::from_mode(mode | 0o001));
        }
    }
}

/// What `azbroker env --managed-identity --plain` printed.
pub struct Identity {
    pub endpoint: String,
    pub header: String,
}

/// Where the daemon under test looks for the VM metadata endpoint: a closed loopback port.
const CLOSED_IMDS: &str = "http://127.0.0.1:1/metadata/identity/oauth2/token";

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
        // Developer credentials by default: no test reaches for IMDS, and the
        // browser login at the end of the chain finds a browser that fails at
        // once (a test that wants one installs the test browser).
        sandbox.set("AZURE_TOKEN_CREDENTIALS", "dev");
        sandbox.set("BROWSER", "/bin/false");
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

    /// `dirs`, then the fake `az`, then the system directories: a `PATH`.
    pub fn path_with_first(&self, dirs: &[&Path]) -> OsString {
        let mut path = OsString::new();
        for dir in dirs {
            path.push(dir.as_os_str());
            path.push(":");
        }
        path.push(self.path_with_az());
        path
    }

    /// Runs `azbroker shim install --dir <sandbox>/shim`; returns the directory.
    pub fn install_shim(&self) -> PathBuf {
        let dir = self.dir.path().join("shim");
        let out = self
            .command("azbroker")
            .args(["shim", "install", "--dir"])
            .arg(&dir)
            .output()
            .expect("run azbroker shim install");
        assert!(
            out.status.success(),
            "shim install failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let dir = std::fs::canonicalize(&dir).unwrap();
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            format!("export PATH=\"{}:$PATH\"\n", dir.display())
        );
        dir
    }

    /// Runs a script of `tests/python/` with the sandboxed environment.
    pub fn python(&self, script: &str, args: &[&str], vars: &[(&str, &str)]) -> Output {
        let mut command = self.command_for(python());
        command.arg(python_script(script)).args(args);
        for (name, value) in vars {
            command.env(name, value);
        }
        command.output().expect("run python")
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
        self.command_for(bin(name))
    }

    /// A command for any program with the sandboxed environment.
    pub fn command_for(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new(program);
        command.env_clear().envs(self.env()).stdin(Stdio::null());
        command
    }

    /// Installs a fake `azd` beside the fake `az` (on `PATH` from now on).
    pub fn install_azd(&self) -> FakeAzd {
        FakeAzd::install(self.az.dir())
    }

    /// Installs a fake `pwsh` beside the fake `az` (on `PATH` from now on).
    pub fn install_pwsh(&self) -> FakePwsh {
        FakePwsh::install(self.az.dir())
    }

    /// Starts `azbrokerd --foreground`, logging to [`Sandbox::log_path`], and waits until it answers.
    /// The VM metadata endpoint is replaced by a closed loopback port, so no
    /// test ever reaches for 169.254.169.254.
    pub fn start_daemon(&mut self) -> u32 {
        self.start_daemon_with(&[])
    }

    /// [`Sandbox::start_daemon`] with IMDS at `imds_url` (a loopback double).
    pub fn start_daemon_with_imds(&mut self, imds_url: &str) -> u32 {
        self.start_daemon_with(&["--imds-endpoint", imds_url])
    }

    /// [`Sandbox::start_daemon`] with extra daemon arguments. Unless they say
    /// otherwise, IMDS is a closed loopback port: no test reaches 169.254.169.254.
    pub fn start_daemon_with(&mut self, args: &[&str]) -> u32 {
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
            .args(
                (!args.contains(&"--imds-endpoint"))
                    .then_some(["--imds-endpoint", CLOSED_IMDS])
                    .into_iter()
                    .flatten(),
            )
            .args(args)
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
    /// `azbroker token --scope <scope> --raw`, which must succeed: the token.
    pub fn raw_token(&self, scope: &str) -> String {
        let out = self.cli(&["token", "--scope", scope, "--raw"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

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

    /// Runs `azbroker token --scope SCOPE --raw` in `n` processes at once; returns each token.
    pub fn concurrent_raw_tokens(&self, n: usize, scope: &str) -> Vec<String> {
        let children: Vec<Child> = (0..n)
            .map(|_| {
                self.command("azbroker")
                    .args(["token", "--scope", scope, "--raw"])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("run azbroker")
            })
            .collect();
        children
            .into_iter()
            .map(|child| {
                let out = child.wait_with_output().unwrap();
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                String::from_utf8(out.stdout).unwrap()
            })
            .collect()
    }

    /// Sends `signal` to a daemon and waits until none serves this sandbox.
    pub fn signal_daemon(&self, pid: i32, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal).unwrap();
        wait_until(Duration::from_secs(10), "the daemon to exit", || {
            self.daemon_pids().is_empty()
        });
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

    /// `azbroker env --managed-identity --plain`, which must succeed, parsed.
    pub fn managed_identity_env(&self) -> Identity {
        let out = self.cli(&["env", "--managed-identity", "--plain"]);
        assert!(
            out.status.success(),
            "azbroker env failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let value = |name: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(&format!("{name}=")))
                .unwrap_or_else(|| panic!("no {name} in {text:?}"))
                .to_string()
        };
        Identity {
            endpoint: value("IDENTITY_ENDPOINT"),
            header: value("IDENTITY_HEADER"),
        }
    }

    /// The chain a client process of this sandbox selects with `vars` set
    /// on top of the sandbox's environment ([`Sandbox::env`]: the fake `az`
    /// on `PATH`, the sandbox's home).
    pub fn chain(&self, vars: &[(&str, &str)]) -> ChainSpec {
        let mut env: Vec<(String, String)> = self
            .env()
            .into_iter()
            .map(|(k, v)| (k, v.to_string_lossy().into_owned()))
            .collect();
        for (name, value) in vars {
            env.retain(|(k, _)| k != name);
            env.push((name.to_string(), value.to_string()));
        }
        ChainSpec::from_lookup(|name| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
            .expect("chain")
    }

    /// A library client with the chain that `vars` select (see [`Sandbox::chain`]).
    pub fn client(&self, vars: &[(&str, &str)]) -> Client {
        let chain = self.chain(vars);
        Client::new(ClientOptions {
            socket: self.socket.clone(),
            chain,
            client_name: "e2e".into(),
            autostart: false,
            start_with_managed_identity: false,
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
