//! Clients trust only their own user's daemon (issue 11, section 1): a socket
//! directory or socket of another user, or a peer running as another user, gets
//! nothing (not a byte) and starts no daemon; nothing beside the socket is
//! opened through a symlink; the default socket lives in the user's state
//! directory; the daemon leaves the mode of a directory it did not create; and
//! `azbroker env --managed-identity` prints only checked, quoted values.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use azbroker_client::{Client, ClientError, ClientOptions};
use azbroker_proto::{ChainSpec, GetToken};

use crate::harness::{bin, open_path_to, spawn_fresh, wait_until, Sandbox};

const NOBODY: u32 = 65534;
const ARM: &str = "https://management.azure.com/.default";
const FORGED: &str = "forged-token-from-a-fake-daemon";

/// `azbroker-test-socket-peer`, copied where any user may execute it.
pub fn socket_peer(sandbox: &Sandbox) -> PathBuf {
    let program = sandbox.dir.path().join("socket-peer");
    if !program.exists() {
        std::fs::copy(bin("azbroker-test-socket-peer"), &program).unwrap();
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    program
}

/// The fake daemon (`socket-peer listen`), running until dropped.
struct FakeDaemon {
    child: Child,
    record: PathBuf,
    socket: PathBuf,
    /// Marker connections made so far (see `client_connections`).
    markers: std::cell::Cell<usize>,
}

impl FakeDaemon {
    /// Starts it as `uid` (copied where that user may execute it), listening on `socket`.
    fn start(
        sandbox: &Sandbox,
        uid: u32,
        socket: &Path,
        record: &Path,
        extra: &[&str],
    ) -> FakeDaemon {
        let child = spawn_fresh(
            std::process::Command::new(socket_peer(sandbox))
                .args(["listen", "--socket"])
                .arg(socket)
                .arg("--record")
                .arg(record)
                .args(extra)
                .env_clear()
                .current_dir("/")
                .stdin(Stdio::null())
                .uid(uid)
                .gid(uid),
        )
        .expect("start the fake daemon");
        let fake = FakeDaemon {
            child,
            record: record.to_path_buf(),
            socket: socket.to_path_buf(),
            markers: std::cell::Cell::new(0),
        };
        wait_until(Duration::from_secs(10), "the fake daemon to listen", || {
            fake.lines().iter().any(|l| l == "listening")
        });
        fake
    }

    fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.record)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The `close` line of every connection the fake served so far, other than
    /// this test's own markers. A marker is a connection of ours that sends
    /// one byte: queued after any client's, and the fake serves connections in
    /// order, so once its line is there every earlier client's is too.
    fn client_connections(&self, socket: &Path) -> Vec<String> {
        let mut marker = UnixStream::connect(socket).expect("connect to the fake daemon");
        marker.write_all(&[0]).unwrap();
        drop(marker);
        self.markers.set(self.markers.get() + 1);
        let marker_line = format!("close pid={} bytes=1", std::process::id());
        wait_until(
            Duration::from_secs(20),
            "the fake daemon to see our marker",
            || self.lines().iter().filter(|l| **l == marker_line).count() == self.markers.get(),
        );
        self.lines()
            .into_iter()
            .filter(|l| l.starts_with("close ") && *l != marker_line)
            .collect()
    }
}

impl Drop for FakeDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn mkdir(path: &Path, mode: u32) {
    std::fs::create_dir_all(path).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `azbroker token`, the az shim and the async library against `sandbox.socket`:
/// each must fail with an error containing every one of `expected`, and print
/// no forged token.
fn assert_every_client_refuses(sandbox: &Sandbox, expected: &[&str]) {
    let check = |what: &str, out: &Output| {
        let text = stderr(out);
        assert!(!out.status.success(), "{what} succeeded: {text}");
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains(FORGED),
            "{what} printed the forged token"
        );
        for needle in expected {
            assert!(text.contains(needle), "{what}: no {needle:?} in: {text}");
        }
    };
    check("azbroker token", &sandbox.cli(&["token", "--scope", ARM]));
    check(
        "the az shim",
        &sandbox
            .command("azbroker-az-shim")
            .args([
                "account",
                "get-access-token",
                "--output",
                "json",
                "--resource",
                "https://management.azure.com/",
            ])
            .output()
            .unwrap(),
    );
    check("azbroker status", &sandbox.cli(&["status"]));

    // The library itself, with autostart on.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = Client::new(ClientOptions {
        socket: sandbox.socket.clone(),
        chain: ChainSpec {
            authority_host: "https://login.microsoftonline.com".into(),
            credentials: Vec::new(),
            selected_by: "socket_trust test".into(),
            interactive: true,
        },
        client_name: "socket-trust-test".into(),
        autostart: true,
        start_with_managed_identity: false,
        request_timeout: Duration::from_secs(30),
    });
    let result = runtime.block_on(client.get_token(GetToken {
        scopes: vec![ARM.into()],
        tenant: None,
        claims: None,
        min_validity_secs: 0,
    }));
    match result {
        Err(ClientError::Untrusted(text)) => {
            for needle in expected {
                assert!(text.contains(needle), "library: no {needle:?} in: {text}");
            }
        }
        other => panic!("the library did not refuse: {other:?}"),
    }
}

#[test]
fn a_socket_directory_squatted_by_another_user_gets_nothing_and_starts_no_daemon() {
    let mut sandbox = Sandbox::new();
    open_path_to(sandbox.dir.path());
    // A shared sticky directory like /tmp, where nobody made our directory first.
    let shared = sandbox.dir.path().join("shared");
    mkdir(&shared, 0o1777);
    let squatted = shared.join(format!("azbroker-{}", nix::unistd::geteuid()));
    sandbox.socket = squatted.join("azbroker.sock");
    let fake = FakeDaemon::start(
        &sandbox,
        NOBODY,
        &sandbox.socket,
        &squatted.join("record"),
        &["--dir-mode", "777"],
    );
    sandbox.set(
        "AZURE_CLIENT_SECRET",
        "a-secret-the-squatter-must-never-see",
    );

    let dir = squatted.display().to_string();
    assert_every_client_refuses(&sandbox, &[&dir, "uid 65534", "AZBROKER_SOCKET"]);

    assert_eq!(fake.client_connections(&fake.socket), Vec::<String>::new());
    assert!(sandbox.daemon_pids().is_empty(), "a daemon was started");
}

#[test]
fn a_socket_or_a_peer_of_another_user_in_our_own_directory_is_refused() {
    let sandbox = Sandbox::new();
    open_path_to(sandbox.dir.path());
    let theirs = sandbox.dir.path().join("nobody");
    mkdir(&theirs, 0o700);
    nix::unistd::chown(&theirs, Some(NOBODY.into()), Some(NOBODY.into())).unwrap();
    let fake = FakeDaemon::start(
        &sandbox,
        NOBODY,
        &theirs.join("fake.sock"),
        &theirs.join("record"),
        &[],
    );
    // Our own private directory, holding nobody's listening socket.
    let ours = sandbox.dir.path().join("run");
    mkdir(&ours, 0o700);
    std::fs::rename(&fake.socket, &sandbox.socket).unwrap();

    // The socket file is nobody's: refused before connecting.
    assert_every_client_refuses(
        &sandbox,
        &[&sandbox.socket.display().to_string(), "uid 65534"],
    );
    assert_eq!(
        fake.client_connections(&sandbox.socket),
        Vec::<String>::new()
    );

    // The file made ours, the listener still nobody: the peer check refuses.
    nix::unistd::chown(&sandbox.socket, Some(nix::unistd::geteuid()), None).unwrap();
    assert_every_client_refuses(
        &sandbox,
        &["runs as uid 65534", &sandbox.socket.display().to_string()],
    );
    let connections = fake.client_connections(&sandbox.socket);
    assert!(!connections.is_empty(), "no client connected");
    for line in &connections {
        assert!(
            line.ends_with(" bytes=0"),
            "a client sent bytes: {connections:?}"
        );
    }
    assert!(sandbox.daemon_pids().is_empty(), "a daemon was started");
}

/// Runs `command` to its end, or kills it after `limit` (an old daemon that
/// followed the symlink would serve forever).
fn run_bounded(mut command: std::process::Command, limit: Duration) -> Output {
    let child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let deadline = Instant::now() + limit;
    let watchdog = std::thread::spawn(move || {
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            if nix::sys::signal::kill(pid, None).is_err() {
                return;
            }
        }
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
    });
    let out = child.wait_with_output().unwrap();
    let _ = watchdog.join();
    out
}

#[test]
fn symlinks_beside_the_socket_are_never_followed() {
    let sandbox = Sandbox::new();
    let run = sandbox.socket.parent().unwrap();
    mkdir(run, 0o700);
    let elsewhere = sandbox.dir.path().join("elsewhere");
    mkdir(&elsewhere, 0o700);

    // The client's autostart lock.
    let target = elsewhere.join("client-target");
    let lock = azbroker_proto::paths::sibling(&sandbox.socket, "autostart.lock");
    std::os::unix::fs::symlink(&target, &lock).unwrap();
    let out = sandbox.cli(&["token", "--scope", ARM]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("symbolic link")
            && stderr(&out).contains(&lock.display().to_string()),
        "{}",
        stderr(&out)
    );
    assert!(
        !target.exists(),
        "the client created a file through the symlink"
    );
    assert!(sandbox.daemon_pids().is_empty(), "a daemon was started");

    // The daemon's lifetime lock.
    let target = elsewhere.join("daemon-target");
    let lock = azbroker_proto::paths::sibling(&sandbox.socket, "lock");
    std::os::unix::fs::symlink(&target, &lock).unwrap();
    let mut daemon = sandbox.command("azbrokerd");
    daemon
        .arg("--foreground")
        .arg("--socket")
        .arg(&sandbox.socket);
    let out = run_bounded(daemon, Duration::from_secs(20));
    assert!(!out.status.success(), "azbrokerd ran: {}", stderr(&out));
    assert!(stderr(&out).contains("symbolic link"), "{}", stderr(&out));
    assert!(
        !target.exists(),
        "the daemon created a file through the symlink"
    );
}

#[test]
fn the_default_socket_is_in_the_users_state_directory() {
    let mut sandbox = Sandbox::new();
    let tmp = sandbox.dir.path().join("tmp");
    mkdir(&tmp, 0o1777);
    sandbox.set("TMPDIR", &tmp);
    let state = sandbox.dir.path().join("state");
    sandbox.set("XDG_STATE_HOME", &state);
    let expected = state.join("azbroker").join("azbroker.sock");
    // Drop (and daemon_pids) look for the daemon by this path.
    sandbox.socket = expected.clone();
    let default_env = |mut command: std::process::Command| {
        command
            .env_remove("AZBROKER_SOCKET")
            .env_remove("XDG_RUNTIME_DIR");
        command
    };

    let out = default_env(sandbox.command("azbroker"))
        .args(["token", "--scope", ARM])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(expected.exists(), "no socket at {}", expected.display());
    assert_eq!(sandbox.daemon_pids().len(), 1);
    assert_eq!(
        std::fs::metadata(expected.parent().unwrap())
            .unwrap()
            .mode()
            & 0o777,
        0o700
    );
    let old_default = tmp.join(format!("azbroker-{}", nix::unistd::geteuid()));
    assert!(!old_default.exists(), "the socket went to the temp dir");
    let out = default_env(sandbox.command("azbroker"))
        .args(["status", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn a_too_long_socket_path_is_named_with_the_fix() {
    let mut sandbox = Sandbox::new();
    let long_dir = sandbox.dir.path().join("d".repeat(110));
    sandbox.socket = long_dir.join("azbroker.sock");
    let shown = sandbox.socket.display().to_string();
    let length = format!("{} bytes", shown.len());

    let out = sandbox.cli(&["token", "--scope", ARM]);
    assert!(!out.status.success());
    for needle in [&shown, &length, "AZBROKER_SOCKET"] {
        assert!(
            stderr(&out).contains(needle),
            "no {needle:?} in: {}",
            stderr(&out)
        );
    }
    assert!(sandbox.daemon_pids().is_empty());

    let mut daemon = sandbox.command("azbrokerd");
    daemon
        .arg("--foreground")
        .arg("--socket")
        .arg(&sandbox.socket);
    let out = run_bounded(daemon, Duration::from_secs(20));
    assert!(!out.status.success());
    for needle in [&shown, &length, "AZBROKER_SOCKET"] {
        assert!(
            stderr(&out).contains(needle),
            "no {needle:?} in: {}",
            stderr(&out)
        );
    }

    // The same when the long path is the state-directory default.
    let out = sandbox
        .command("azbroker")
        .env_remove("AZBROKER_SOCKET")
        .env("XDG_STATE_HOME", sandbox.dir.path().join("s".repeat(110)))
        .args(["token", "--scope", ARM])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("bytes long") && stderr(&out).contains("XDG_RUNTIME_DIR"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_daemon_keeps_the_mode_of_a_directory_it_did_not_create() {
    let mut sandbox = Sandbox::new();
    let run = sandbox.socket.parent().unwrap().to_path_buf();
    mkdir(&run, 0o755);
    sandbox.start_daemon();
    assert_eq!(std::fs::metadata(&run).unwrap().mode() & 0o777, 0o755);
    sandbox.token(ARM, &[]);
    assert_eq!(std::fs::metadata(&run).unwrap().mode() & 0o777, 0o755);

    // Writable by others: the daemon refuses it (and leaves it as it is).
    let open = sandbox.dir.path().join("open");
    mkdir(&open, 0o777);
    let mut daemon = sandbox.command("azbrokerd");
    daemon
        .arg("--foreground")
        .arg("--socket")
        .arg(open.join("azbroker.sock"));
    let out = run_bounded(daemon, Duration::from_secs(20));
    assert!(!out.status.success(), "azbrokerd ran: {}", stderr(&out));
    assert!(
        stderr(&out).contains("writable by other users") && stderr(&out).contains("0777"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::metadata(&open).unwrap().mode() & 0o777, 0o777);
}

/// `bash -ec 'eval "$(azbroker env --managed-identity)"; <then>'` in the sandbox.
fn eval_env(sandbox: &Sandbox, then: &str) -> Output {
    let script = format!(
        "eval \"$('{}' env --managed-identity)\"; {then}",
        bin("azbroker").display()
    );
    sandbox
        .command_for("/bin/bash")
        .args(["-ec", &script])
        .output()
        .unwrap()
}

#[test]
fn env_refuses_a_hostile_endpoint_and_fails_the_eval() {
    let mut sandbox = Sandbox::new();
    let run = sandbox.socket.parent().unwrap().to_path_buf();
    mkdir(&run, 0o700);
    let header_file = run.join("header");
    std::fs::write(&header_file, "ab".repeat(32)).unwrap();
    std::fs::set_permissions(&header_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let marker = sandbox.dir.path().join("pwned");
    let injection = format!("http://127.0.0.1:1/x;touch${{IFS}}{}", marker.display());
    let symlinked_header = run.join("header-link");
    std::os::unix::fs::symlink(&header_file, &symlinked_header).unwrap();
    let cases = [
        (injection.as_str(), &header_file),
        ("http://10.0.0.1:80/msi/token", &header_file),
        ("http://127.0.0.1:8080/msi/token", &symlinked_header),
    ];
    let me = nix::unistd::geteuid().as_raw();
    for (i, (endpoint, header)) in cases.iter().enumerate() {
        let socket = run.join(format!("fake-{i}.sock"));
        let _fake = FakeDaemon::start(
            &sandbox,
            me,
            &socket,
            &run.join(format!("record-{i}")),
            &[
                "--endpoint",
                endpoint,
                "--header-file",
                &header.display().to_string(),
            ],
        );
        sandbox.socket = socket;
        let out = eval_env(&sandbox, "echo reached");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            !out.status.success(),
            "eval succeeded for {endpoint}: {stdout}"
        );
        assert!(!stdout.contains("reached"), "{stdout}");
        assert!(!marker.exists(), "the endpoint ran a command");
        assert!(stderr(&out).contains("refus"), "{}", stderr(&out));
    }
}

#[test]
fn env_exports_the_daemons_endpoint_for_eval() {
    let mut sandbox = Sandbox::new();
    sandbox.start_daemon_with(&["--managed-identity-endpoint"]);
    let plain = sandbox.cli(&["env", "--managed-identity", "--plain"]);
    assert!(plain.status.success(), "{}", stderr(&plain));
    let out = eval_env(
        &sandbox,
        "printf 'IDENTITY_ENDPOINT=%s\\nIDENTITY_HEADER=%s\\n' \"$IDENTITY_ENDPOINT\" \"$IDENTITY_HEADER\"",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(plain.stdout).unwrap()
    );
}
