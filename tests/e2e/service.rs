//! Running as a service: socket activation (`systemd-socket-activate` stands
//! in for the user's service manager) and the unit files `azbroker service`
//! writes.

use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::process::{Child, Stdio};
use std::time::Duration;

use crate::harness::{bin, wait_until, Sandbox};

const ARM: &str = "https://management.azure.com/.default";
/// Where the activated daemon looks for the VM metadata endpoint: a closed loopback port.
const CLOSED_IMDS: &str = "http://127.0.0.1:1/metadata/identity/oauth2/token";

/// Debian's `systemd` package has it (scripts/setup-tests installs it).
const SOCKET_ACTIVATE: &str = "systemd-socket-activate";

/// Listens on the sandbox's socket like `azbrokerd.socket` does and execs
/// `azbrokerd` (same pid) on the first connection. Clients must not start a
/// daemon of their own, so a test passes only through activation.
fn activate(sandbox: &mut Sandbox) -> Child {
    activate_with(sandbox, &[])
}

/// [`activate`] with extra daemon arguments.
fn activate_with(sandbox: &mut Sandbox, args: &[&str]) -> Child {
    sandbox.set("AZBROKER_NO_AUTOSTART", "1");
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(sandbox.socket.parent().unwrap())
        .unwrap();
    let log = std::fs::File::create(sandbox.log_path()).unwrap();
    let child = sandbox
        .command_for(SOCKET_ACTIVATE)
        .arg("--listen")
        .arg(&sandbox.socket)
        .arg(bin("azbrokerd"))
        .args(["--foreground", "--imds-endpoint", CLOSED_IMDS, "--socket"])
        .arg(&sandbox.socket)
        .args(args)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {SOCKET_ACTIVATE} (Debian package systemd): {e}"));
    let socket = sandbox.socket.clone();
    wait_until(Duration::from_secs(10), "the activator to listen", || {
        socket.exists()
    });
    child
}

fn inode(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).expect("socket file").ino()
}

#[test]
fn socket_activation_starts_the_daemon_on_the_first_connection_and_keeps_its_socket() {
    let mut sandbox = Sandbox::new();
    let mut activator = activate(&mut sandbox);
    let socket_inode = inode(&sandbox.socket);
    assert!(
        !sandbox.log().contains("azbrokerd listening"),
        "the daemon started before any client connected"
    );

    let token = sandbox.token(ARM, &[]);
    assert!(token["accessToken"].is_string());
    assert_eq!(token["credential"], "AzureCliCredential");
    let status = sandbox.status();
    // systemd-socket-activate execs the daemon in its own process.
    assert_eq!(status["pid"], activator.id());
    assert_eq!(status["socket"], sandbox.socket.to_str().unwrap());
    let log = sandbox.log();
    assert!(!log.contains("removed a stale socket"), "{log}");
    assert_eq!(
        inode(&sandbox.socket),
        socket_inode,
        "the daemon replaced the activated socket"
    );

    let out = sandbox.cli(&["stop"]);
    assert!(out.status.success());
    let exit = activator.wait().unwrap();
    assert!(exit.success(), "azbrokerd exited with {exit}");
    assert!(sandbox.log().contains("shutting down"));
    // The socket belongs to the service manager, which keeps listening on it.
    assert_eq!(inode(&sandbox.socket), socket_inode);
}

#[test]
fn an_activated_daemon_stops_cleanly_on_sigterm_and_leaves_the_socket() {
    let mut sandbox = Sandbox::new();
    let mut activator = activate(&mut sandbox);
    let socket_inode = inode(&sandbox.socket);
    let out = sandbox.cli(&["status"]);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        sandbox.log()
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("pid        {}", activator.id()))
    );

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(activator.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let exit = activator.wait().unwrap();
    assert!(exit.success(), "azbrokerd exited with {exit}");
    assert!(sandbox.log().contains("shutting down"));
    assert_eq!(inode(&sandbox.socket), socket_inode);
}

#[test]
fn an_activated_daemon_serves_the_managed_identity_endpoint_its_unit_asks_for() {
    let mut sandbox = Sandbox::new();
    let mut activator = activate_with(&mut sandbox, &["--managed-identity-endpoint"]);
    let identity = sandbox.managed_identity_env();
    assert!(
        identity.endpoint.starts_with("http://127.0.0.1:"),
        "{}",
        identity.endpoint
    );
    assert!(!identity.header.is_empty());
    assert!(sandbox.cli(&["stop"]).status.success());
    assert!(activator.wait().unwrap().success());
}

#[test]
fn an_activated_socket_at_another_path_than_the_daemons_is_refused() {
    let mut sandbox = Sandbox::new();
    sandbox.set("AZBROKER_SOCKET", sandbox.dir.path().join("elsewhere.sock"));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(sandbox.socket.parent().unwrap())
        .unwrap();
    // The listening socket goes straight to the daemon (no waiting for a client).
    let out = sandbox
        .command_for("python3")
        .args([
            "-c",
            "import os, socket, sys\n\
             s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen()\n\
             os.dup2(s.fileno(), 3); os.set_inheritable(3, True)\n\
             os.environ['LISTEN_FDS'] = '1'; os.environ['LISTEN_PID'] = str(os.getpid())\n\
             os.execv(sys.argv[2], [sys.argv[2], '--foreground'])\n\
             ",
        ])
        .arg(&sandbox.socket)
        .arg(bin("azbrokerd"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("passed a socket bound to") && stderr.contains("elsewhere.sock"),
        "{stderr}"
    );
}

/// A sandbox whose clients compute the socket from `XDG_RUNTIME_DIR` (as on
/// a desktop session) and whose configuration lives in the sandbox. That
/// runtime directory has no service manager in it, so `systemctl --user`
/// reaches none, whatever runs on the machine.
fn unit_sandbox() -> (Sandbox, std::path::PathBuf) {
    let mut sandbox = Sandbox::new();
    let runtime = sandbox.dir.path().join("rt");
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&runtime)
        .unwrap();
    sandbox.unset("AZBROKER_SOCKET");
    sandbox.set("XDG_RUNTIME_DIR", &runtime);
    sandbox.set("XDG_CONFIG_HOME", sandbox.dir.path().join("config"));
    sandbox.socket = runtime.join("azbroker/azbroker.sock");
    let units = sandbox.dir.path().join("config/systemd/user");
    (sandbox, units)
}

fn service(sandbox: &Sandbox, args: &[&str]) -> std::process::Output {
    let mut all = vec!["service"];
    all.extend_from_slice(args);
    sandbox.cli(&all)
}

/// What `systemd-analyze --user verify` says about `units` (it needs only a
/// runtime directory, no running manager); warnings about them included.
fn verify(sandbox: &Sandbox, units: &[std::path::PathBuf]) -> (bool, Vec<String>) {
    let out = sandbox
        .command_for("systemd-analyze")
        .args(["--user", "verify"])
        .args(units)
        .output()
        .expect("run systemd-analyze (Debian package systemd)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let about_ours = stderr
        .lines()
        .filter(|line| line.contains("azbrokerd"))
        .map(str::to_string)
        .collect();
    (out.status.success(), about_ours)
}

#[test]
fn service_install_writes_units_that_systemd_analyze_verify_accepts() {
    let (sandbox, dir) = unit_sandbox();
    let out = service(&sandbox, &["install", "--no-start"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let socket_unit = std::fs::read_to_string(dir.join("azbrokerd.socket")).unwrap();
    let service_unit = std::fs::read_to_string(dir.join("azbrokerd.service")).unwrap();
    // The path clients compute from XDG_RUNTIME_DIR.
    assert!(socket_unit.contains("\nListenStream=%t/azbroker/azbroker.sock\n"));
    let daemon = std::fs::canonicalize(bin("azbrokerd")).unwrap();
    assert!(
        service_unit.contains(&format!(
            "\nExecStart={} --foreground --socket %t/azbroker/azbroker.sock\n",
            daemon.display()
        )),
        "{service_unit}"
    );

    let units = [dir.join("azbrokerd.socket"), dir.join("azbrokerd.service")];
    let (ok, complaints) = verify(&sandbox, &units);
    assert!(ok && complaints.is_empty(), "{complaints:?}");

    // The check is real: a damaged copy draws a complaint.
    let damaged = sandbox.dir.path().join("azbrokerd-damaged.service");
    std::fs::write(&damaged, service_unit.replace("Type=notify", "Type=bogus")).unwrap();
    let (_, complaints) = verify(&sandbox, &[damaged]);
    assert!(
        complaints.iter().any(|line| line.contains("bogus")),
        "{complaints:?}"
    );

    let out = service(&sandbox, &["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("azbrokerd.socket   written"), "{text}");
    let out = service(&sandbox, &["uninstall"]);
    assert!(out.status.success());
    assert!(!units[0].exists() && !units[1].exists());
}

#[test]
fn without_a_user_manager_install_says_so_and_clients_still_start_the_daemon() {
    let (sandbox, dir) = unit_sandbox();
    let out = service(&sandbox, &["install"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("no systemd user manager"), "{stderr}");
    assert!(dir.join("azbrokerd.socket").is_file());
    let out = service(&sandbox, &["status"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("clients start azbrokerd themselves"));

    sandbox.token(ARM, &[]);
    assert_eq!(sandbox.daemon_pids().len(), 1);
}
