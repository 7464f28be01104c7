//! Starting, stopping, and surviving the daemon.

use std::process::Stdio;
use std::time::Duration;

use crate::harness::{wait_until, Sandbox};

const ARM: &str = "https://management.azure.com/.default";

#[test]
fn the_first_client_starts_the_daemon_and_stop_removes_the_socket() {
    let sandbox = Sandbox::new();
    assert!(sandbox.daemon_pids().is_empty());
    sandbox.token(ARM, &[]);
    let pids = sandbox.daemon_pids();
    assert_eq!(pids.len(), 1);
    let status = sandbox.status();
    assert_eq!(status["pid"], pids[0]);
    assert_eq!(status["socket"], sandbox.socket.to_str().unwrap());
    // Background mode logs to the state directory, not to a terminal.
    assert!(sandbox
        .dir
        .path()
        .join("state/azbroker/azbrokerd.log")
        .is_file());

    let out = sandbox.cli(&["stop"]);
    assert!(out.status.success());
    wait_until(Duration::from_secs(10), "the daemon to exit", || {
        sandbox.daemon_pids().is_empty()
    });
    assert!(!sandbox.socket.exists(), "stop left the socket behind");
}

#[test]
fn sigterm_shuts_down_cleanly() {
    let mut sandbox = Sandbox::new();
    let pid = sandbox.start_daemon();
    sandbox.signal_daemon(pid as i32, nix::sys::signal::Signal::SIGTERM);
    assert!(!sandbox.socket.exists());
    assert!(sandbox.log().contains("shutting down"));
}

#[test]
fn a_second_daemon_on_the_same_socket_exits_zero() {
    let mut sandbox = Sandbox::new();
    let first = sandbox.start_daemon();
    let out = sandbox
        .command("azbrokerd")
        .args(["--foreground", "--socket"])
        .arg(&sandbox.socket)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already running"));
    assert_eq!(sandbox.daemon_pids(), vec![first as i32]);
    // The first one still serves.
    sandbox.token(ARM, &[]);
}

#[test]
fn a_stale_socket_from_a_crashed_daemon_is_reclaimed() {
    let mut sandbox = Sandbox::new();
    let pid = sandbox.start_daemon();
    sandbox.signal_daemon(pid as i32, nix::sys::signal::Signal::SIGKILL);
    assert!(sandbox.socket.exists(), "SIGKILL cannot clean up");
    sandbox.start_daemon();
    sandbox.token(ARM, &[]);
}

#[test]
fn killing_the_daemon_mid_flight_makes_the_next_call_start_a_fresh_one() {
    let sandbox = Sandbox::new();
    sandbox.token(ARM, &[]);
    let old = sandbox.daemon_pids();
    assert_eq!(old.len(), 1);

    // A request in flight (az takes 3 s) when the daemon dies.
    sandbox.az.set_delay(Duration::from_secs(3));
    let in_flight = sandbox
        .command("azbroker")
        .args([
            "token",
            "--scope",
            "https://vault.azure.net/.default",
            "--raw",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let az = &sandbox.az;
    wait_until(Duration::from_secs(10), "az to be running", || {
        az.invocations() >= 2
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(old[0]),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();

    // The interrupted client reconnects once, which starts a new daemon, and succeeds.
    let out = in_flight.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        sandbox.log()
    );
    let new = sandbox.daemon_pids();
    assert_eq!(new.len(), 1);
    assert_ne!(new, old);
    // And the next call is served by it.
    sandbox.token(ARM, &[]);
    assert_eq!(sandbox.status()["pid"], new[0]);
}

#[test]
fn twenty_clients_starting_at_once_make_one_daemon() {
    let sandbox = Sandbox::new();
    sandbox.az.set_delay(Duration::from_millis(300));
    let tokens = sandbox.concurrent_raw_tokens(20, ARM);
    assert!(tokens.iter().all(|t| t == &tokens[0]));
    assert_eq!(sandbox.daemon_pids().len(), 1);
    assert_eq!(sandbox.az.invocations(), 1);
}

#[test]
fn no_autostart_says_so() {
    let mut sandbox = Sandbox::new();
    sandbox.set("AZBROKER_NO_AUTOSTART", "1");
    let out = sandbox.cli(&["token", "--scope", ARM]);
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("AZBROKER_NO_AUTOSTART"), "{stderr}");
    assert!(sandbox.daemon_pids().is_empty());
}
