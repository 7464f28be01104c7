//! Failures are remembered too (issue 13, section 5): a failing credential is
//! run once for the clients asking the same within a few seconds, and again
//! after; a request a credential cannot serve is not held against it.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use azbroker_e2e::Mode;

use crate::harness::Sandbox;

const ARM: &str = "https://management.azure.com/.default";
const STORAGE: &str = "https://storage.azure.com/.default";
/// How long the daemon remembers a failed `az` run.
const WINDOW: Duration = Duration::from_secs(5);
/// What the daemon adds to a failure it answers from memory.
const REMEMBERED: &str = "the same request failed moments ago: not retried for another";

fn az_only() -> Sandbox {
    let mut sandbox = Sandbox::new();
    sandbox.set("AZURE_TOKEN_CREDENTIALS", "AzureCliCredential");
    sandbox
}

fn spawn_token(sandbox: &Sandbox, scopes: &[&str]) -> Child {
    let mut command = sandbox.command("azbroker");
    command.arg("token");
    for scope in scopes {
        command.args(["--scope", scope]);
    }
    command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run azbroker")
}

/// Waits for `azbroker token`, which must fail; returns its stderr.
fn failed(child: Child) -> String {
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "expected a broker error: {stderr}"
    );
    assert!(out.stdout.is_empty());
    stderr
}

fn failing_token(sandbox: &Sandbox, scopes: &[&str]) -> String {
    failed(spawn_token(sandbox, scopes))
}

/// The sign-in session expired: `az` prints AADSTS70043 as the real CLI does
/// (`docs/spec/wire-formats.md`).
fn assert_session_expired(stderr: &str) {
    assert!(stderr.contains("authentication failed"), "{stderr}");
    assert!(
        stderr.contains("AzureCliCredential: ERROR: AADSTS70043: The refresh token has expired"),
        "{stderr}"
    );
}

#[test]
fn a_failing_az_runs_once_per_window_however_many_ask() {
    let mut sandbox = az_only();
    sandbox.az.set_mode(Mode::refresh_token_expired());
    // Long enough for the concurrent requests to find the first run in flight.
    sandbox.az.set_delay(Duration::from_millis(500));
    sandbox.start_daemon();

    let started = Instant::now();
    let concurrent: Vec<Child> = (0..6).map(|_| spawn_token(&sandbox, &[ARM])).collect();
    for child in concurrent {
        assert_session_expired(&failed(child));
    }
    let first_failed = Instant::now();
    for _ in 0..3 {
        let stderr = failing_token(&sandbox, &[ARM]);
        assert_session_expired(&stderr);
        assert!(stderr.contains(REMEMBERED), "{stderr}");
    }
    assert!(
        started.elapsed() < WINDOW,
        "the requests took longer than the window: {:?}",
        started.elapsed()
    );
    assert_eq!(
        sandbox.az.invocations(),
        1,
        "az ran again within the window"
    );

    // After the window az is asked again, and still fails.
    std::thread::sleep(WINDOW.saturating_sub(first_failed.elapsed()) + Duration::from_millis(500));
    let stderr = failing_token(&sandbox, &[ARM]);
    assert_session_expired(&stderr);
    assert!(!stderr.contains(REMEMBERED), "{stderr}");
    assert_eq!(sandbox.az.invocations(), 2);

    // The user signs in again: right away the failure is still remembered,
    // a few seconds later the token comes.
    sandbox.az.set_mode(Mode::Ok);
    sandbox.az.set_delay(Duration::ZERO);
    let second_failed = Instant::now();
    let stderr = failing_token(&sandbox, &[ARM]);
    assert!(stderr.contains(REMEMBERED), "{stderr}");
    assert_eq!(sandbox.az.invocations(), 2);
    std::thread::sleep(WINDOW.saturating_sub(second_failed.elapsed()) + Duration::from_millis(500));
    let token = sandbox.token(ARM, &[]);
    assert_eq!(token["credential"], "AzureCliCredential");
    assert_eq!(sandbox.az.invocations(), 3);
}

#[test]
fn another_scope_is_not_held_by_a_failed_one() {
    let mut sandbox = az_only();
    sandbox.az.set_mode(Mode::refresh_token_expired());
    sandbox.start_daemon();
    assert_session_expired(&failing_token(&sandbox, &[ARM]));
    sandbox.az.set_mode(Mode::Ok);
    let token = sandbox.token(STORAGE, &[]);
    assert_eq!(token["credential"], "AzureCliCredential");
    assert_eq!(sandbox.az.invocations(), 2);
}

#[test]
fn a_two_scope_request_leaves_az_healthy_in_status() {
    let mut sandbox = az_only();
    sandbox.start_daemon();
    sandbox.token(ARM, &[]);

    let stderr = failing_token(&sandbox, &[ARM, STORAGE]);
    assert!(
        stderr.contains("no credential in the chain is available"),
        "{stderr}"
    );
    assert!(
        stderr.contains("AzureCliCredential takes exactly one scope per token"),
        "{stderr}"
    );
    let status = sandbox.status();
    let cli = status["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["credential"] == "AzureCliCredential")
        .expect("AzureCli in status");
    assert_eq!(cli["state"], "healthy", "{status}");
    assert!(cli["last_error"].is_null(), "{status}");

    // Nothing is remembered against az: the next request runs it.
    sandbox.token(STORAGE, &[]);
    assert_eq!(sandbox.az.invocations(), 2);
}
