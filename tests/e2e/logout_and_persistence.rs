//! Refresh tokens survive a daemon restart (and are never presented twice),
//! live in a private file here, and `azbroker logout` forgets them.

use std::os::unix::fs::PermissionsExt as _;
use std::time::Duration;

use crate::harness::wait_until;
use crate::login_support::{
    accounts_file, cli_error, grants, login_sandbox, refresh_tokens_in, TestBrowser, ARM, STORAGE,
};

#[test]
fn after_a_restart_tokens_come_from_the_persisted_refresh_token() {
    let (mut sandbox, entra) = login_sandbox();
    let browser = TestBrowser::install(&mut sandbox);
    sandbox.start_daemon();
    let first = sandbox.token(ARM, &[]);
    assert_eq!(browser.invocations(), 1);

    let file = accounts_file(&sandbox);
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        !text.contains(first["accessToken"].as_str().unwrap()),
        "an access token was persisted"
    );
    assert!(text.contains("testuser@contoso.example"), "{text}");
    let before = refresh_tokens_in(&text);
    assert_eq!(before.len(), 1);
    let status = sandbox.status();
    assert_eq!(
        status["store"]
            .as_str()
            .unwrap()
            .split(" (")
            .next()
            .unwrap(),
        format!("file {}", file.display())
    );
    let shown = serde_json::to_string(&status).unwrap() + &sandbox.log();
    assert!(
        !shown.contains(&before[0]),
        "the refresh token reached status or the log"
    );

    assert!(sandbox.cli(&["stop"]).status.success());
    wait_until(Duration::from_secs(10), "the daemon to stop", || {
        sandbox.daemon_pids().is_empty()
    });
    sandbox.start_daemon();

    let second = sandbox.token(STORAGE, &[]);
    assert_eq!(second["credential"], "InteractiveBrowserCredential");
    let third = sandbox.token(ARM, &[]);
    assert_ne!(
        third["accessToken"], first["accessToken"],
        "the access token came from memory"
    );
    assert_eq!(
        browser.invocations(),
        1,
        "the restart asked the user to log in again"
    );
    assert_eq!(entra.authorize_requests(), 1);
    assert_eq!(
        grants(&entra),
        ["authorization_code", "refresh_token", "refresh_token"]
    );
    assert!(entra.requests().iter().all(|r| r.status == 200));
    assert_eq!(
        entra.refresh_token_reuses(),
        0,
        "a refresh token was presented twice"
    );
    let after = refresh_tokens_in(&std::fs::read_to_string(&file).unwrap());
    assert_eq!(after.len(), 1);
    assert_ne!(after, before, "the rotated refresh token was not persisted");
}

#[test]
fn a_revoked_refresh_token_leads_back_to_a_browser_login() {
    let (mut sandbox, entra) = login_sandbox();
    let browser = TestBrowser::install(&mut sandbox);
    sandbox.start_daemon();
    sandbox.token(ARM, &[]);
    entra.revoke_refresh_tokens();
    // A new scope needs the refresh token, which is dead: one new browser login.
    let token = sandbox.token(STORAGE, &[]);
    assert_eq!(token["credential"], "InteractiveBrowserCredential");
    assert_eq!(browser.invocations(), 2);
    let statuses: Vec<u16> = entra.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 400, 200]);
}

#[test]
fn logout_forgets_the_account_and_drops_its_cached_tokens() {
    let (mut sandbox, entra) = login_sandbox();
    let browser = TestBrowser::install(&mut sandbox);
    sandbox.start_daemon();
    sandbox.token(ARM, &[]);
    assert_eq!(sandbox.status()["cache"].as_array().unwrap().len(), 1);

    let out = sandbox.cli(&["logout"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "azbroker: forgot 1 account(s) and dropped 1 cached token(s)"
    );
    assert!(sandbox.status()["cache"].as_array().unwrap().is_empty());
    let text = std::fs::read_to_string(accounts_file(&sandbox)).unwrap();
    assert!(refresh_tokens_in(&text).is_empty(), "{text}");

    // Nothing left to log in with, and no browser this time: the user is told what to run.
    browser.set_mode("fail");
    let stderr = cli_error(&sandbox, &["token", "--scope", ARM]);
    assert!(stderr.contains("azbroker login --device-code"), "{stderr}");
    assert_eq!(entra.refresh_token_reuses(), 0);
}

#[test]
fn logout_all_forgets_every_account() {
    let (mut sandbox, _entra) = login_sandbox();
    let _browser = TestBrowser::install(&mut sandbox);
    sandbox.start_daemon();
    for tenant in [None, Some("72f988bf-86f1-41af-91ab-2d7cd011db47")] {
        let mut args = vec!["login"];
        args.extend(tenant.iter().flat_map(|t| ["--tenant", *t]));
        let out = sandbox.cli(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = std::fs::read_to_string(accounts_file(&sandbox)).unwrap();
    assert_eq!(refresh_tokens_in(&text).len(), 2);
    let out = sandbox.cli(&["logout", "--all"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("forgot 2 account(s)"));
    let text = std::fs::read_to_string(accounts_file(&sandbox)).unwrap();
    assert!(refresh_tokens_in(&text).is_empty());
}
