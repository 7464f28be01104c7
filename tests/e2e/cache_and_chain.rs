//! The cache, single-flight acquisition, and the two credentials of this stage.

use std::time::Duration;

use azbroker_e2e::{jwt, EntraDouble, Mode};

use crate::harness::Sandbox;

const ARM: &str = "https://management.azure.com/.default";
const STORAGE: &str = "https://storage.azure.com/.default";

fn access_token(json: &serde_json::Value) -> String {
    json["accessToken"]
        .as_str()
        .expect("accessToken")
        .to_string()
}

#[test]
fn second_request_is_served_from_cache_without_running_az_again() {
    let mut sandbox = Sandbox::new();
    sandbox.start_daemon();
    let first = sandbox.token(ARM, &[]);
    let second = sandbox.token(ARM, &[]);
    assert_eq!(access_token(&first), access_token(&second));
    assert_eq!(
        sandbox.az.invocations(),
        1,
        "az ran again for a cached token"
    );
    assert_eq!(first["credential"], "AzureCliCredential");
    assert_eq!(first["tokenType"], "Bearer");
    let expires_on = first["expires_on"].as_i64().unwrap();
    let claims = jwt::decode_claims(&access_token(&first)).expect("JWT claims");
    assert_eq!(claims["exp"].as_i64(), Some(expires_on));
    assert!(first["expiresOn"].as_str().unwrap().ends_with('Z'));

    let status = sandbox.status();
    let counters = &status["counters"];
    assert_eq!(counters["upstream_acquisitions"], 1);
    assert_eq!(counters["cache_hits"], 1);
    assert_eq!(status["cache"][0]["hits"], 1);
    assert_eq!(status["cache"][0]["scopes"][0], ARM);
}

#[test]
fn raw_prints_only_the_token() {
    let mut sandbox = Sandbox::new();
    sandbox.start_daemon();
    let json = sandbox.token(ARM, &[]);
    let out = sandbox.cli(&["token", "--scope", ARM, "--raw"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("{}\n", access_token(&json))
    );
}

#[test]
fn twenty_concurrent_processes_cause_one_acquisition() {
    let mut sandbox = Sandbox::new();
    sandbox.az.set_delay(Duration::from_millis(700));
    sandbox.start_daemon();
    let tokens = sandbox.concurrent_raw_tokens(20, ARM);
    assert!(
        tokens.iter().all(|t| t == &tokens[0]),
        "clients got different tokens"
    );
    assert_eq!(sandbox.az.invocations(), 1);
    assert_eq!(sandbox.status()["counters"]["upstream_acquisitions"], 1);
}

#[test]
fn scopes_and_tenants_get_their_own_tokens() {
    let mut sandbox = Sandbox::new();
    sandbox.start_daemon();
    let arm = access_token(&sandbox.token(ARM, &[]));
    let storage = access_token(&sandbox.token(STORAGE, &[]));
    let tenant = "72f988bf-86f1-41af-91ab-2d7cd011db47";
    let arm_other_tenant = sandbox.token(ARM, &["--tenant", tenant]);
    assert_eq!(arm_other_tenant["tenant"], tenant);
    let arm_other_tenant = access_token(&arm_other_tenant);
    assert_ne!(arm, storage);
    assert_ne!(arm, arm_other_tenant);
    assert_ne!(storage, arm_other_tenant);
    assert_eq!(sandbox.az.invocations(), 3);
    let claims = jwt::decode_claims(&storage).unwrap();
    assert_eq!(claims["aud"], "https://storage.azure.com");
    let args = sandbox.az.invocation_args();
    assert!(
        args.iter()
            .any(|a| a.contains(&format!("--tenant {tenant}"))),
        "{args:?}"
    );
    // A bare resource is the same key as its /.default scope.
    sandbox.token("https://management.azure.com/", &[]);
    assert_eq!(sandbox.az.invocations(), 3);
}

fn failing_token(sandbox: &Sandbox) -> String {
    let out = sandbox.cli(&["token", "--scope", ARM]);
    assert_eq!(out.status.code(), Some(1), "expected a broker error");
    assert!(out.stdout.is_empty());
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn az_missing_from_path_is_unavailable_with_its_reason() {
    let mut sandbox = Sandbox::new();
    sandbox.set("PATH", "/usr/bin:/bin");
    sandbox.start_daemon();
    let stderr = failing_token(&sandbox);
    assert!(
        stderr.contains("no credential in the chain is available"),
        "{stderr}"
    );
    assert!(
        stderr.contains("AzureCliCredential: Azure CLI (az) not found on PATH"),
        "{stderr}"
    );
    assert!(stderr.contains("VisualStudioCredential"), "{stderr}");
    assert_eq!(sandbox.az.invocations(), 0);
}

#[test]
fn az_not_logged_in_is_unavailable_with_its_reason() {
    let mut sandbox = Sandbox::new();
    sandbox.az.set_mode(Mode::NotLoggedIn);
    sandbox.start_daemon();
    let stderr = failing_token(&sandbox);
    assert!(
        stderr.contains("AzureCliCredential: Azure CLI is not logged in: run 'az login'"),
        "{stderr}"
    );
    let status = sandbox.status();
    let cli = status["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["credential"] == "AzureCliCredential")
        .expect("AzureCli in status");
    assert_eq!(cli["state"], "unavailable");
}

#[test]
fn az_errors_are_kept_as_failures() {
    let mut sandbox = Sandbox::new();
    sandbox.az.set_mode(Mode::refresh_token_expired());
    sandbox.start_daemon();
    let stderr = failing_token(&sandbox);
    assert!(stderr.contains("authentication failed"), "{stderr}");
    assert!(stderr.contains("AADSTS70043"), "{stderr}");
}

fn with_service_principal(sandbox: &mut Sandbox, entra: &EntraDouble, secret: &str) {
    sandbox.set("AZURE_TENANT_ID", "11111111-1111-1111-1111-111111111111");
    sandbox.set("AZURE_CLIENT_ID", "22222222-2222-2222-2222-222222222222");
    sandbox.set("AZURE_CLIENT_SECRET", secret);
    sandbox.set("AZURE_AUTHORITY_HOST", entra.authority());
}

#[test]
fn client_secret_tokens_come_from_the_https_endpoint_once() {
    let mut sandbox = Sandbox::new();
    let entra = EntraDouble::start(&sandbox.pki);
    entra.register_client("22222222-2222-2222-2222-222222222222", "right-secret");
    with_service_principal(&mut sandbox, &entra, "right-secret");
    sandbox.set("AZURE_TOKEN_CREDENTIALS", "prod");
    sandbox.start_daemon();
    let first = sandbox.token(ARM, &[]);
    let second = sandbox.token(ARM, &[]);
    assert_eq!(first["credential"], "EnvironmentCredential");
    assert_eq!(first["tenant"], "11111111-1111-1111-1111-111111111111");
    assert_eq!(access_token(&first), access_token(&second));
    assert_eq!(entra.token_requests(), 1);
    let request = &entra.requests()[0];
    assert_eq!(request.grant_type, "client_credentials");
    assert_eq!(request.scope, ARM);
    assert_eq!(request.tenant, "11111111-1111-1111-1111-111111111111");
    assert_eq!(sandbox.az.invocations(), 0);
}

#[test]
fn bad_client_secret_reports_aadsts7000215() {
    let mut sandbox = Sandbox::new();
    let entra = EntraDouble::start(&sandbox.pki);
    entra.register_client("22222222-2222-2222-2222-222222222222", "right-secret");
    with_service_principal(&mut sandbox, &entra, "wrong-secret");
    sandbox.set("AZURE_TOKEN_CREDENTIALS", "EnvironmentCredential");
    sandbox.start_daemon();
    let stderr = failing_token(&sandbox);
    assert!(
        stderr.contains("EnvironmentCredential: AADSTS7000215"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("wrong-secret"),
        "the secret leaked: {stderr}"
    );

    // In the default chain the failure is kept, and the chain moves on to az.
    sandbox.unset("AZURE_TOKEN_CREDENTIALS");
    let token = sandbox.token(ARM, &[]);
    assert_eq!(token["credential"], "AzureCliCredential");
    let status = sandbox.status();
    let env = status["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["credential"] == "EnvironmentCredential")
        .expect("Environment in status");
    assert_eq!(env["state"], "failing");
    assert!(env["last_error"]
        .as_str()
        .unwrap()
        .contains("AADSTS7000215"));
}

#[test]
fn throttling_is_reported_with_its_status() {
    let mut sandbox = Sandbox::new();
    let entra = EntraDouble::start(&sandbox.pki);
    entra.register_client("22222222-2222-2222-2222-222222222222", "right-secret");
    entra.throttle_next(1, 2);
    with_service_principal(&mut sandbox, &entra, "right-secret");
    sandbox.set("AZURE_TOKEN_CREDENTIALS", "EnvironmentCredential");
    sandbox.start_daemon();
    let stderr = failing_token(&sandbox);
    assert!(stderr.contains("HTTP 429"), "{stderr}");
    // Until the Retry-After passes, requests are answered without going upstream...
    let stderr = failing_token(&sandbox);
    assert!(stderr.contains("not retried for another"), "{stderr}");
    assert_eq!(entra.token_requests(), 1);
    // ...then the next request goes upstream again and succeeds.
    std::thread::sleep(std::time::Duration::from_secs(2));
    let token = sandbox.token(ARM, &[]);
    assert_eq!(token["credential"], "EnvironmentCredential");
    assert_eq!(entra.token_requests(), 2);
}
