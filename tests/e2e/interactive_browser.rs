//! Browser login (authorization code + PKCE through the loopback listener):
//! one prompt however many clients wait, and each way a login can end badly.

use std::collections::HashSet;
use std::time::Duration;

use azbroker_e2e::jwt;
use azbroker_proto::GetToken;

use crate::harness::wait_until;
use crate::login_support::{
    cli_error, grants, login_sandbox, TestBrowser, ARM, DEVELOPER_CLIENT_ID,
};

fn request(scope: &str) -> GetToken {
    GetToken {
        scopes: vec![scope.to_string()],
        tenant: None,
        claims: None,
        min_validity_secs: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_clients_at_once_share_one_browser_login() {
    let (mut sandbox, entra) = login_sandbox();
    let browser = TestBrowser::install(&mut sandbox);
    sandbox.start_daemon();
    let authority = entra.authority();
    let vars = [
        ("AZURE_TOKEN_CREDENTIALS", "InteractiveBrowserCredential"),
        ("AZURE_AUTHORITY_HOST", authority.as_str()),
    ];
    let mut tasks = Vec::new();
    for i in 0..10 {
        // Ten processes' worth of clients, each on its own connection, each
        // asking for another resource: ten cache keys, one account.
        let client = sandbox.client(&vars);
        let scope = format!("https://resource{i}.example/.default");
        tasks.push(tokio::spawn(async move {
            let token = client.get_token(request(&scope)).await;
            (scope, token)
        }));
    }
    let mut tokens = HashSet::new();
    for task in tasks {
        let (scope, token) = task.await.unwrap();
        let token = token.unwrap_or_else(|e| panic!("{scope}: {e}\n{}", sandbox.log()));
        assert_eq!(token.credential, "InteractiveBrowserCredential");
        let claims = jwt::decode_claims(token.access_token.expose()).unwrap();
        assert_eq!(claims["aud"], scope.trim_end_matches("/.default"));
        assert_eq!(claims["upn"], azbroker_e2e::fake_az::USER_UPN);
        assert_eq!(claims["appid"], DEVELOPER_CLIENT_ID);
        tokens.insert(token.access_token.expose().to_string());
    }
    assert_eq!(tokens.len(), 10);
    assert_eq!(
        browser.invocations(),
        1,
        "one browser prompt for ten clients"
    );
    assert_eq!(entra.authorize_requests(), 1);
    let grants = grants(&entra);
    assert_eq!(
        grants.iter().filter(|g| *g == "authorization_code").count(),
        1,
        "{grants:?}"
    );
    assert_eq!(
        grants.iter().filter(|g| *g == "refresh_token").count(),
        9,
        "{grants:?}"
    );
    assert!(entra.requests().iter().all(|r| r.status == 200));
    assert_eq!(entra.refresh_token_reuses(), 0);
    assert_eq!(
        entra.live_refresh_tokens(),
        1,
        "each rotation kills the previous refresh token"
    );
    assert!(
        browser
            .wait_for_pages()
            .contains("You can close this window"),
        "{}",
        browser.pages()
    );
}

#[test]
fn a_cached_login_serves_the_cli_and_refreshes_in_the_background_without_a_browser() {
    let (mut sandbox, entra) = login_sandbox();
    let browser = TestBrowser::install(&mut sandbox);
    // The server's refresh_in hint makes the daemon refresh 2 s after minting.
    entra.set_refresh_in(Some(2));
    sandbox.start_daemon();
    let first = sandbox.token(ARM, &[]);
    assert_eq!(first["credential"], "InteractiveBrowserCredential");
    assert_eq!(first["tenant"], azbroker_e2e::fake_az::DEFAULT_TENANT);
    let again = sandbox.token(ARM, &[]);
    assert_eq!(
        first["accessToken"], again["accessToken"],
        "served from the cache"
    );
    wait_until(Duration::from_secs(20), "a background refresh", || {
        sandbox.status()["counters"]["refreshes"].as_u64() >= Some(1)
    });
    let refreshed = sandbox.token(ARM, &[]);
    assert_ne!(first["accessToken"], refreshed["accessToken"]);
    assert_eq!(browser.invocations(), 1);
    assert_eq!(entra.refresh_token_reuses(), 0);
    assert!(grants(&entra).iter().any(|g| g == "refresh_token"));
}

#[test]
fn a_browser_that_never_returns_times_out() {
    let (mut sandbox, entra) = login_sandbox();
    let browser = TestBrowser::install(&mut sandbox);
    browser.set_mode("ignore");
    sandbox.set("AZURE_MCP_BROWSER_AUTH_TIMEOUT_SECONDS", "2");
    sandbox.start_daemon();
    let stderr = cli_error(&sandbox, &["token", "--scope", ARM]);
    assert!(stderr.contains("did not complete within 2 s"), "{stderr}");
    assert!(
        stderr.contains("AZURE_MCP_BROWSER_AUTH_TIMEOUT_SECONDS"),
        "{stderr}"
    );
    assert!(stderr.contains("(timeout)"), "{stderr}");
    assert_eq!(browser.invocations(), 1);
    assert_eq!(entra.token_requests(), 0);
}

#[test]
fn a_redirect_with_the_wrong_state_is_rejected_and_its_code_never_redeemed() {
    let (mut sandbox, entra) = login_sandbox();
    let browser = TestBrowser::install(&mut sandbox);
    browser.set_mode("tamper-state");
    // A wrong state no longer ends the login (issue 11): it waits for its own until the timeout.
    sandbox.set("AZURE_MCP_BROWSER_AUTH_TIMEOUT_SECONDS", "3");
    sandbox.start_daemon();
    let stderr = cli_error(&sandbox, &["token", "--scope", ARM]);
    assert!(stderr.contains("did not complete within 3 s"), "{stderr}");
    assert_eq!(entra.authorize_requests(), 1);
    assert_eq!(
        entra.token_requests(),
        0,
        "the forged response's code was redeemed"
    );
    assert!(
        browser.wait_for_pages().starts_with("400 Bad Request"),
        "{}",
        browser.pages()
    );
}

#[test]
fn a_user_who_cancels_gets_access_denied() {
    let (mut sandbox, entra) = login_sandbox();
    let _browser = TestBrowser::install(&mut sandbox);
    entra.deny_next_authorize(1);
    sandbox.start_daemon();
    let stderr = cli_error(&sandbox, &["token", "--scope", ARM]);
    assert!(stderr.contains("cancelled or refused"), "{stderr}");
    assert!(stderr.contains("access_denied: AADSTS65004"), "{stderr}");
    assert!(stderr.contains("(authentication failed)"), "{stderr}");
    assert_eq!(entra.token_requests(), 0);
}

#[test]
fn without_a_browser_the_error_says_which_command_to_run() {
    // The sandbox's BROWSER fails at once: a headless machine.
    let (mut sandbox, entra) = login_sandbox();
    sandbox.start_daemon();
    let stderr = cli_error(&sandbox, &["token", "--scope", ARM]);
    assert!(stderr.contains("azbroker login --device-code"), "{stderr}");
    assert!(stderr.contains("(credential unavailable)"), "{stderr}");
    assert!(entra.device_code_polls().is_empty());
    assert_eq!(
        entra.token_requests(),
        0,
        "a device code login started implicitly"
    );
}

#[test]
fn azbroker_login_opens_the_browser_in_the_daemon() {
    let (mut sandbox, entra) = login_sandbox();
    let browser = TestBrowser::install(&mut sandbox);
    sandbox.start_daemon();
    let out = sandbox.cli(&["login"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("logged in as testuser@contoso.example"),
        "{stdout}"
    );
    assert!(stdout.contains("refresh token kept in file "), "{stdout}");
    assert_eq!(browser.invocations(), 1);
    // Then every client is served from that login, without a browser.
    let token = sandbox.token(ARM, &[]);
    assert_eq!(token["credential"], "InteractiveBrowserCredential");
    assert_eq!(browser.invocations(), 1);
    assert_eq!(grants(&entra), ["authorization_code", "refresh_token"]);
}

/// The same login through a real browser: headless Chromium from Debian's
/// packages follows the authorize redirect to the loopback listener. It trusts
/// the double's test CA only through `--ignore-certificate-errors`, which this
/// loopback-only test allows. `scripts/setup-tests` installs Chromium; without
/// it the test fails and says how to install it.
#[test]
fn headless_chromium_completes_a_browser_login() {
    let chromium = std::path::Path::new("/usr/bin/chromium");
    assert!(
        chromium.is_file(),
        "/usr/bin/chromium is not installed: run scripts/setup-tests (scripts/test does), \
         or apt-get install chromium"
    );
    let (mut sandbox, entra) = login_sandbox();
    let profile = sandbox.dir.path().join("chromium-profile");
    let browser = [
        chromium.to_str().unwrap(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--no-proxy-server",
        "--ignore-certificate-errors",
        &format!("--user-data-dir={}", profile.display()),
        "--dump-dom",
        "%s",
    ]
    .join(" ");
    sandbox.set("BROWSER", browser);
    sandbox.set("AZURE_MCP_BROWSER_AUTH_TIMEOUT_SECONDS", "90");
    sandbox.start_daemon();
    let token = sandbox.token(ARM, &[]);
    assert_eq!(token["credential"], "InteractiveBrowserCredential");
    assert_eq!(entra.authorize_requests(), 1);
    assert_eq!(grants(&entra), ["authorization_code"]);
}
