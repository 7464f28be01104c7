//! Every credential of the chain against its double: success, each documented
//! failure mode, scopes, tenants and claims. The daemon is the real binary.

use std::time::{Duration, Instant};

use azbroker_e2e::certs::{self, SpCertificate};
use azbroker_e2e::client_assertion::{Presented, TOKEN_EXCHANGE_AUDIENCE};
use azbroker_e2e::fake_azd::AzdMode;
use azbroker_e2e::fake_pwsh::PwshMode;
use azbroker_e2e::managed_identity_double::{self, ManagedIdentityDouble, Protocol};
use azbroker_e2e::{jwt, EntraDouble, Mode};
use serde_json::Value;

use crate::harness::{wait_until, Sandbox};

const ARM: &str = "https://management.azure.com/.default";
const STORAGE: &str = "https://storage.azure.com/.default";
const VAULT: &str = "https://vault.azure.net/.default";
const TENANT: &str = "11111111-1111-1111-1111-111111111111";
const OTHER_TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const CLIENT: &str = "22222222-2222-2222-2222-222222222222";

/// `azbroker token` with these arguments, which must fail; returns stderr.
fn fails(sandbox: &Sandbox, args: &[&str]) -> String {
    let mut all = vec!["token"];
    all.extend_from_slice(args);
    let out = sandbox.cli(&all);
    assert_eq!(
        out.status.code(),
        Some(1),
        "expected a broker error: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr).unwrap()
}

fn claims_of(json: &Value) -> Value {
    jwt::decode_claims(json["accessToken"].as_str().unwrap()).expect("JWT")
}

fn credential_status(sandbox: &Sandbox, name: &str) -> Value {
    let status = sandbox.status();
    status["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["credential"] == name)
        .unwrap_or_else(|| panic!("{name} not in status: {status}"))
        .clone()
}

// ---------------------------------------------------------------- Environment

fn service_principal(sandbox: &mut Sandbox, entra: &EntraDouble) {
    sandbox.set("AZURE_TENANT_ID", TENANT);
    sandbox.set("AZURE_CLIENT_ID", CLIENT);
    sandbox.set("AZURE_AUTHORITY_HOST", entra.authority());
    sandbox.set("AZURE_TOKEN_CREDENTIALS", "EnvironmentCredential");
}

#[test]
fn certificate_as_pem_encrypted_pem_and_pfx_signs_client_assertions() {
    let mut sandbox = Sandbox::new();
    let entra = EntraDouble::start(&sandbox.pki);
    let cert = SpCertificate::generate(sandbox.dir.path(), "sp");
    entra.register_certificate_client(CLIENT, &cert.der());
    service_principal(&mut sandbox, &entra);
    sandbox.start_daemon();

    sandbox.set("AZURE_CLIENT_CERTIFICATE_PATH", &cert.pem);
    let pem = sandbox.token(ARM, &[]);
    assert_eq!(pem["credential"], "EnvironmentCredential");
    assert_eq!(pem["tenant"], TENANT);
    assert_eq!(claims_of(&pem)["appid"], CLIENT);

    sandbox.set("AZURE_CLIENT_CERTIFICATE_PATH", &cert.encrypted_pem);
    sandbox.set("AZURE_CLIENT_CERTIFICATE_PASSWORD", certs::PASSWORD);
    sandbox.token(ARM, &[]);
    sandbox.set("AZURE_CLIENT_CERTIFICATE_PATH", &cert.pfx);
    sandbox.token(ARM, &[]);

    // Three chains (the path is part of the identity), three assertions, all
    // signed by the registered key; no secret was ever sent.
    let presented = entra.assertions();
    assert_eq!(presented.len(), 3, "{presented:?}");
    for assertion in &presented {
        assert!(
            matches!(assertion, Presented::Certificate { client_id, accepted: true, .. } if client_id == CLIENT),
            "{assertion:?}"
        );
    }
    assert!(entra
        .requests()
        .iter()
        .all(|r| r.grant_type == "client_credentials" && r.status == 200));

    // Another tenant is passed on as the authority.
    let other = sandbox.token(ARM, &["--tenant", OTHER_TENANT]);
    assert_eq!(other["tenant"], OTHER_TENANT);
    assert_eq!(entra.requests().last().unwrap().tenant, OTHER_TENANT);
}

#[test]
fn certificate_failures_say_what_is_wrong_without_the_password() {
    let mut sandbox = Sandbox::new();
    let entra = EntraDouble::start(&sandbox.pki);
    let registered = SpCertificate::generate(sandbox.dir.path(), "registered");
    let stranger = SpCertificate::generate(sandbox.dir.path(), "stranger");
    entra.register_certificate_client(CLIENT, &registered.der());
    service_principal(&mut sandbox, &entra);
    sandbox.start_daemon();

    sandbox.set("AZURE_CLIENT_CERTIFICATE_PATH", &stranger.pem);
    let stderr = fails(&sandbox, &["--scope", ARM]);
    assert!(stderr.contains("EnvironmentCredential: AADSTS700027: The certificate with identifier used to sign the client assertion is not registered"), "{stderr}");
    assert!(stderr.contains("(HTTP 401)"), "{stderr}");

    sandbox.set("AZURE_CLIENT_CERTIFICATE_PATH", &registered.pfx);
    sandbox.set("AZURE_CLIENT_CERTIFICATE_PASSWORD", "not-the-password");
    let stderr = fails(&sandbox, &["--scope", ARM]);
    assert!(
        stderr.contains("wrong AZURE_CLIENT_CERTIFICATE_PASSWORD"),
        "{stderr}"
    );
    assert!(
        !sandbox.log().contains("not-the-password"),
        "the password reached the log"
    );
    assert!(
        !stderr.contains("not-the-password"),
        "password leaked: {stderr}"
    );

    sandbox.unset("AZURE_CLIENT_CERTIFICATE_PASSWORD");
    sandbox.set("AZURE_CLIENT_CERTIFICATE_PATH", &registered.encrypted_pem);
    let stderr = fails(&sandbox, &["--scope", ARM]);
    assert!(
        stderr.contains("AZURE_CLIENT_CERTIFICATE_PASSWORD for an encrypted one"),
        "{stderr}"
    );

    let missing = sandbox.dir.path().join("missing.pem");
    sandbox.set("AZURE_CLIENT_CERTIFICATE_PATH", &missing);
    let stderr = fails(&sandbox, &["--scope", ARM]);
    assert!(
        stderr.contains("cannot read AZURE_CLIENT_CERTIFICATE_PATH"),
        "{stderr}"
    );
    assert!(
        stderr.contains("authentication failed"),
        "a configured credential fails: {stderr}"
    );
    assert_eq!(
        entra.token_requests(),
        1,
        "only the stranger's assertion reached Entra"
    );
}

#[test]
fn environment_without_its_variables_is_unavailable_and_takes_one_resource_at_a_time() {
    let mut sandbox = Sandbox::new();
    let entra = EntraDouble::start(&sandbox.pki);
    entra.register_client(CLIENT, "right-secret");
    sandbox.set("AZURE_TOKEN_CREDENTIALS", "EnvironmentCredential");
    sandbox.set("AZURE_TENANT_ID", TENANT);
    sandbox.start_daemon();
    let stderr = fails(&sandbox, &["--scope", ARM]);
    assert!(
        stderr.contains("no credential in the chain is available"),
        "{stderr}"
    );
    assert!(
        stderr.contains("EnvironmentCredential: environment variables not set: AZURE_CLIENT_ID"),
        "{stderr}"
    );

    service_principal(&mut sandbox, &entra);
    sandbox.set("AZURE_CLIENT_SECRET", "right-secret");
    let stderr = fails(&sandbox, &["--scope", ARM, "--scope", STORAGE]);
    assert!(stderr.contains("one resource at a time"), "{stderr}");
    let stderr = fails(&sandbox, &["--scope", ARM, "--claims", "e30"]);
    assert!(
        stderr.contains("cannot answer a claims challenge"),
        "{stderr}"
    );
    assert_eq!(entra.token_requests(), 0);
}

// ----------------------------------------------------------- WorkloadIdentity

const ISSUER: &str = "https://oidc.prod-aks.azure.com/00000000-0000-0000-0000-000000000000/";
const SUBJECT: &str = "system:serviceaccount:tools:mcp";

/// A service account token as Kubernetes projects it.
fn service_account_token(subject: &str, jti: &str, expires_in: i64) -> String {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    jwt::mint(&serde_json::json!({
        "aud": [TOKEN_EXCHANGE_AUDIENCE],
        "exp": now + expires_in,
        "iat": now - 60,
        "iss": ISSUER,
        "jti": jti,
        "nbf": now - 60,
        "sub": subject,
    }))
}

/// Replaces the token file the way the kubelet does: a new file renamed over the old.
fn rotate(path: &std::path::Path, token: &str) {
    let next = path.with_extension("next");
    std::fs::write(&next, token).unwrap();
    std::fs::rename(&next, path).unwrap();
}

fn federated_jtis(entra: &EntraDouble) -> Vec<(String, bool)> {
    entra
        .assertions()
        .into_iter()
        .filter_map(|a| match a {
            Presented::Federated { jti, accepted, .. } => Some((jti, accepted)),
            _ => None,
        })
        .collect()
}

fn workload_identity(sandbox: &mut Sandbox, entra: &EntraDouble) -> std::path::PathBuf {
    let token_file = sandbox.dir.path().join("azure-identity-token");
    sandbox.set("AZURE_TOKEN_CREDENTIALS", "WorkloadIdentityCredential");
    sandbox.set("AZURE_TENANT_ID", TENANT);
    sandbox.set("AZURE_CLIENT_ID", CLIENT);
    sandbox.set("AZURE_FEDERATED_TOKEN_FILE", &token_file);
    sandbox.set("AZURE_AUTHORITY_HOST", entra.authority());
    token_file
}

#[test]
fn workload_identity_rereads_the_token_file_after_kubernetes_rotates_it() {
    let mut sandbox = Sandbox::new();
    let entra = EntraDouble::start(&sandbox.pki);
    entra.register_federated_client(CLIENT, ISSUER, SUBJECT);
    let token_file = workload_identity(&mut sandbox, &entra);
    rotate(&token_file, &service_account_token(SUBJECT, "first", 3600));
    sandbox.start_daemon();

    let first = sandbox.token(ARM, &[]);
    assert_eq!(first["credential"], "WorkloadIdentityCredential");
    assert_eq!(claims_of(&first)["appid"], CLIENT);
    assert_eq!(federated_jtis(&entra), [("first".to_string(), true)]);

    rotate(&token_file, &service_account_token(SUBJECT, "second", 3600));
    sandbox.token(STORAGE, &[]);
    assert_eq!(federated_jtis(&entra)[1], ("second".to_string(), true));

    // An expired token in the file is refused by Entra with its reason; once
    // the kubelet writes a fresh one, the next request succeeds.
    rotate(&token_file, &service_account_token(SUBJECT, "stale", -600));
    let stderr = fails(&sandbox, &["--scope", VAULT]);
    assert!(stderr.contains("WorkloadIdentityCredential: AADSTS700024: Client assertion is not within its valid time range"), "{stderr}");
    rotate(&token_file, &service_account_token(SUBJECT, "fresh", 3600));
    sandbox.token(VAULT, &[]);
    let jtis: Vec<String> = federated_jtis(&entra).into_iter().map(|(j, _)| j).collect();
    assert_eq!(jtis, ["first", "second", "stale", "fresh"]);
}

#[test]
fn workload_identity_failures() {
    let mut sandbox = Sandbox::new();
    let entra = EntraDouble::start(&sandbox.pki);
    entra.register_federated_client(CLIENT, ISSUER, SUBJECT);
    let token_file = workload_identity(&mut sandbox, &entra);
    sandbox.unset("AZURE_FEDERATED_TOKEN_FILE");
    sandbox.start_daemon();
    let stderr = fails(&sandbox, &["--scope", ARM]);
    assert!(
        stderr.contains(
            "WorkloadIdentityCredential: environment variables not set: AZURE_FEDERATED_TOKEN_FILE"
        ),
        "{stderr}"
    );

    sandbox.set("AZURE_FEDERATED_TOKEN_FILE", &token_file);
    let stderr = fails(&sandbox, &["--scope", ARM]);
    assert!(
        stderr.contains("cannot read AZURE_FEDERATED_TOKEN_FILE"),
        "{stderr}"
    );

    rotate(
        &token_file,
        &service_account_token("system:serviceaccount:other:sa", "x", 3600),
    );
    let stderr = fails(&sandbox, &["--scope", ARM]);
    assert!(
        stderr.contains("AADSTS70021: No matching federated identity record found"),
        "{stderr}"
    );
    assert!(
        stderr.contains("system:serviceaccount:other:sa"),
        "{stderr}"
    );

    rotate(&token_file, "not a token");
    let stderr = fails(&sandbox, &["--scope", ARM]);
    assert!(stderr.contains("does not hold a token"), "{stderr}");
    assert_eq!(entra.token_requests(), 1, "a bad file never reaches Entra");
}

// ------------------------------------------------------------ ManagedIdentity

fn managed_identity(sandbox: &mut Sandbox) {
    sandbox.set("AZURE_TOKEN_CREDENTIALS", "ManagedIdentityCredential");
}

#[test]
fn managed_identity_app_service_system_and_user_assigned() {
    let mut sandbox = Sandbox::new();
    let mi = ManagedIdentityDouble::start();
    mi.add_user_assigned(CLIENT);
    managed_identity(&mut sandbox);
    sandbox.set("IDENTITY_ENDPOINT", mi.app_service_endpoint());
    sandbox.set("IDENTITY_HEADER", mi.app_service_secret());
    sandbox.start_daemon();

    // A bare resource and a permission scope both become the resource.
    let system = sandbox.token("https://vault.azure.net", &[]);
    assert_eq!(system["credential"], "ManagedIdentityCredential");
    assert_eq!(system["tenant"], managed_identity_double::DEFAULT_TENANT);
    assert_eq!(
        claims_of(&system)["appid"],
        managed_identity_double::SYSTEM_CLIENT_ID
    );
    sandbox.token("https://graph.microsoft.com/User.Read", &[]);
    sandbox.set("AZURE_CLIENT_ID", CLIENT);
    let user = sandbox.token(ARM, &[]);
    assert_eq!(claims_of(&user)["appid"], CLIENT);

    let requests = mi.requests();
    let seen: Vec<(Protocol, &str, Option<&str>, &str)> = requests
        .iter()
        .map(|r| {
            (
                r.protocol,
                r.resource.as_str(),
                r.client_id.as_deref(),
                r.api_version.as_str(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (
                Protocol::AppService,
                "https://vault.azure.net",
                None,
                "2019-08-01"
            ),
            (
                Protocol::AppService,
                "https://graph.microsoft.com",
                None,
                "2019-08-01"
            ),
            (
                Protocol::AppService,
                "https://management.azure.com",
                Some(CLIENT),
                "2019-08-01"
            ),
        ]
    );
    assert!(requests.iter().all(|r| r.status == 200));

    // Its own tenant is fine; another is refused clearly.
    sandbox.token(ARM, &["--tenant", managed_identity_double::DEFAULT_TENANT]);
    let stderr = fails(&sandbox, &["--scope", STORAGE, "--tenant", OTHER_TENANT]);
    assert!(
        stderr.contains("only gets tokens in its own tenant"),
        "{stderr}"
    );
}

#[test]
fn managed_identity_app_service_failures() {
    let mut sandbox = Sandbox::new();
    let mi = ManagedIdentityDouble::start();
    managed_identity(&mut sandbox);
    sandbox.set("IDENTITY_ENDPOINT", mi.app_service_endpoint());
    sandbox.set("IDENTITY_HEADER", "wrong-secret");
    sandbox.start_daemon();
    let stderr = fails(&sandbox, &["--scope", ARM]);
    assert!(stderr.contains("ManagedIdentityCredential: the App Service managed identity endpoint answered HTTP 401"), "{stderr}");
    assert!(!stderr.contains("wrong-secret"), "{stderr}");

    sandbox.set("IDENTITY_HEADER", mi.app_service_secret());
    sandbox.set("AZURE_CLIENT_ID", "99999999-9999-9999-9999-999999999999");
    let stderr = fails(&sandbox, &["--scope", ARM]);
    assert!(
        stderr.contains("HTTP 400: Unable to load the proper Managed Identity."),
        "{stderr}"
    );

    sandbox.unset("AZURE_CLIENT_ID");
    mi.fail_next(&[500]);
    let stderr = fails(&sandbox, &["--scope", ARM]);
    assert!(stderr.contains("HTTP 500"), "{stderr}");
    sandbox.token(ARM, &[]);

    let stderr = fails(&sandbox, &["--scope", ARM, "--scope", VAULT]);
    assert!(stderr.contains("one resource at a time"), "{stderr}");
    let stderr = fails(&sandbox, &["--scope", VAULT, "--claims", "e30"]);
    assert!(
        stderr.contains("cannot answer a claims challenge"),
        "{stderr}"
    );
    let log = sandbox.log();
    assert!(
        !log.contains(&mi.app_service_secret()),
        "IDENTITY_HEADER reached the log"
    );
    assert!(
        !log.contains("wrong-secret"),
        "IDENTITY_HEADER reached the log"
    );
}

#[test]
fn managed_identity_imds_system_and_user_assigned_over_loopback() {
    let mut sandbox = Sandbox::new();
    let mi = ManagedIdentityDouble::start();
    mi.add_user_assigned(CLIENT);
    managed_identity(&mut sandbox);
    sandbox.start_daemon_with_imds(&mi.imds_endpoint());
    let system = sandbox.token(ARM, &[]);
    assert_eq!(system["credential"], "ManagedIdentityCredential");
    sandbox.set("AZURE_CLIENT_ID", CLIENT);
    let user = sandbox.token(ARM, &[]);
    assert_eq!(claims_of(&user)["appid"], CLIENT);
    let requests = mi.requests();
    assert_eq!(requests.len(), 2);
    assert!(requests.iter().all(|r| r.protocol == Protocol::Imds
        && r.api_version == "2018-02-01"
        && r.resource == "https://management.azure.com"
        && r.status == 200));
    assert_eq!(requests[1].client_id.as_deref(), Some(CLIENT));
}

#[test]
fn managed_identity_imds_unavailable_is_remembered() {
    let mut sandbox = Sandbox::new();
    let mi = ManagedIdentityDouble::start();
    mi.set_system_assigned(false);
    managed_identity(&mut sandbox);
    sandbox.start_daemon_with_imds(&mi.imds_endpoint());
    let stderr = fails(&sandbox, &["--scope", ARM]);
    assert!(
        stderr.contains("no credential in the chain is available"),
        "{stderr}"
    );
    assert!(
        stderr.contains("ManagedIdentityCredential: this machine has no system-assigned identity: IMDS answered HTTP 400: Identity not found"),
        "{stderr}"
    );
    // Asked again at once: the answer is remembered, IMDS is not asked again.
    let again = fails(&sandbox, &["--scope", STORAGE]);
    assert!(again.contains("Identity not found"), "{again}");
    assert_eq!(mi.requests().len(), 1);
    assert_eq!(
        credential_status(&sandbox, "ManagedIdentityCredential")["state"],
        "unavailable"
    );
}

#[test]
fn managed_identity_without_any_endpoint_moves_on_quickly() {
    let mut sandbox = Sandbox::new();
    managed_identity(&mut sandbox);
    // start_daemon points IMDS at a closed loopback port: nothing answers.
    sandbox.start_daemon();
    let started = Instant::now();
    let stderr = fails(&sandbox, &["--scope", ARM]);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(stderr.contains("ManagedIdentityCredential: no managed identity here: the VM metadata endpoint (IMDS) did not answer"), "{stderr}");
}

// ----------------------------------------------------------- AzureDeveloperCli

#[test]
fn azd_gets_tokens_with_tenant_and_several_scopes() {
    let mut sandbox = Sandbox::new();
    let azd = sandbox.install_azd();
    sandbox.set("AZURE_TOKEN_CREDENTIALS", "AzureDeveloperCliCredential");
    sandbox.start_daemon();
    let token = sandbox.token(ARM, &[]);
    assert_eq!(token["credential"], "AzureDeveloperCliCredential");
    assert_eq!(claims_of(&token)["aud"], "https://management.azure.com");
    let tenant = sandbox.token(ARM, &["--tenant", OTHER_TENANT]);
    assert_eq!(tenant["tenant"], OTHER_TENANT);
    assert_eq!(claims_of(&tenant)["tid"], OTHER_TENANT);
    let out = sandbox.cli(&["token", "--scope", ARM, "--scope", STORAGE]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        azd.invocation_args(),
        [
            format!("auth token -o json --no-prompt --scope {ARM}"),
            format!("auth token -o json --no-prompt --scope {ARM} --tenant-id {OTHER_TENANT}"),
            format!("auth token -o json --no-prompt --scope {ARM} --scope {STORAGE}"),
        ]
    );
    assert_eq!(sandbox.az.invocations(), 0);
}

#[test]
fn azd_failures() {
    let mut sandbox = Sandbox::new();
    sandbox.set("AZURE_TOKEN_CREDENTIALS", "AzureDeveloperCliCredential");
    sandbox.start_daemon();
    let stderr = fails(&sandbox, &["--scope", ARM]);
    assert!(
        stderr.contains("AzureDeveloperCliCredential: Azure Developer CLI (azd) not found on PATH"),
        "{stderr}"
    );

    // A fresh daemon each time: "unavailable" is remembered for a few seconds.
    let mut sandbox = Sandbox::new();
    let azd = sandbox.install_azd();
    azd.set_mode(AzdMode::NotLoggedIn);
    sandbox.set("AZURE_TOKEN_CREDENTIALS", "AzureDeveloperCliCredential");
    sandbox.start_daemon();
    let stderr = fails(&sandbox, &["--scope", ARM]);
    assert!(stderr.contains("AzureDeveloperCliCredential: Azure Developer CLI is not logged in: run 'azd auth login'"), "{stderr}");

    // An AADSTS error is a failure, not "unavailable"; it shows once the
    // remembered "not logged in" (a few seconds) has lapsed.
    azd.set_mode(AzdMode::Aadsts(
        70043,
        "The refresh token has expired or is invalid due to sign-in frequency checks by conditional access.".into(),
    ));
    wait_until(Duration::from_secs(15), "azd to be asked again", || {
        let out = sandbox.cli(&["token", "--scope", STORAGE]);
        String::from_utf8_lossy(&out.stderr).contains("AADSTS70043")
    });
    let stderr = fails(&sandbox, &["--scope", VAULT]);
    assert!(stderr.contains("authentication failed"), "{stderr}");
    assert!(
        stderr.contains("AzureDeveloperCliCredential: ERROR: fetching token: AADSTS70043"),
        "{stderr}"
    );

    let stderr = fails(&sandbox, &["--scope", ARM, "--claims", "e30"]);
    assert!(stderr.contains("azd auth login --scope"), "{stderr}");
}

#[test]
fn azd_that_hangs_is_killed_at_13_seconds() {
    let mut sandbox = Sandbox::new();
    let azd = sandbox.install_azd();
    azd.set_mode(AzdMode::Hang);
    sandbox.set("AZURE_TOKEN_CREDENTIALS", "AzureDeveloperCliCredential");
    sandbox.start_daemon();
    let started = Instant::now();
    let stderr = fails(&sandbox, &["--scope", ARM]);
    let took = started.elapsed();
    assert!(
        stderr.contains("azd auth token did not answer within 13 s"),
        "{stderr}"
    );
    assert!(stderr.contains("(timeout)"), "{stderr}");
    assert!(
        took >= Duration::from_secs(13) && took < Duration::from_secs(20),
        "{took:?}"
    );
    wait_until(Duration::from_secs(5), "the hung azd to be killed", || {
        azd.live_hung_pids().is_empty()
    });
}

// ------------------------------------------------------------ AzurePowerShell

#[test]
fn pwsh_gets_tokens_from_securestring_and_plain_az_accounts() {
    let mut sandbox = Sandbox::new();
    let pwsh = sandbox.install_pwsh();
    sandbox.set("AZURE_TOKEN_CREDENTIALS", "AzurePowerShellCredential");
    sandbox.start_daemon();
    // Az.Accounts 5: the token is a SecureString the script must convert.
    let token = sandbox.token("https://graph.microsoft.com/User.Read", &[]);
    assert_eq!(token["credential"], "AzurePowerShellCredential");
    assert_eq!(claims_of(&token)["aud"], "https://graph.microsoft.com");
    let expires_on = token["expires_on"].as_i64().unwrap();
    assert_eq!(claims_of(&token)["exp"].as_i64(), Some(expires_on));
    assert_eq!(token["tenant"], azbroker_e2e::fake_tool::DEFAULT_TENANT);

    pwsh.set_az_accounts_major(4);
    let tenant = sandbox.token(ARM, &["--tenant", OTHER_TENANT]);
    assert_eq!(claims_of(&tenant)["tid"], OTHER_TENANT);
    assert_eq!(tenant["tenant"], OTHER_TENANT);
    assert_eq!(
        pwsh.invocation_args(),
        [
            "-NoProfile -NonInteractive | resource=https://graph.microsoft.com tenant=".to_string(),
            format!("-NoProfile -NonInteractive | resource=https://management.azure.com tenant={OTHER_TENANT}"),
        ]
    );
}

#[test]
fn pwsh_failures() {
    let mut sandbox = Sandbox::new();
    sandbox.set("AZURE_TOKEN_CREDENTIALS", "AzurePowerShellCredential");
    sandbox.start_daemon();
    let stderr = fails(&sandbox, &["--scope", ARM]);
    assert!(
        stderr.contains("AzurePowerShellCredential: PowerShell (pwsh) not found on PATH"),
        "{stderr}"
    );

    for (mode, expected) in [
        (PwshMode::NotLoggedIn, "AzurePowerShellCredential: Azure PowerShell is not logged in: run 'Connect-AzAccount' (Get-AzAccessToken: Run Connect-AzAccount to login.)"),
        (PwshMode::NoModule, "AzurePowerShellCredential: the Az.Accounts module (2.2.0 or later) is not installed"),
    ] {
        let mut sandbox = Sandbox::new();
        let pwsh = sandbox.install_pwsh();
        pwsh.set_mode(mode);
        sandbox.set("AZURE_TOKEN_CREDENTIALS", "AzurePowerShellCredential");
        sandbox.start_daemon();
        let stderr = fails(&sandbox, &["--scope", ARM]);
        assert!(stderr.contains(expected), "{stderr}");
        assert!(stderr.contains("no credential in the chain is available"), "{stderr}");
    }

    let mut sandbox = Sandbox::new();
    let pwsh = sandbox.install_pwsh();
    pwsh.set_mode(PwshMode::Aadsts(50076, "Due to a configuration change made by your administrator, you must use multi-factor authentication.".into()));
    sandbox.set("AZURE_TOKEN_CREDENTIALS", "AzurePowerShellCredential");
    sandbox.start_daemon();
    let stderr = fails(&sandbox, &["--scope", ARM]);
    assert!(stderr.contains("authentication failed"), "{stderr}");
    assert!(
        stderr.contains("AzurePowerShellCredential: Get-AzAccessToken: AADSTS50076"),
        "{stderr}"
    );

    let stderr = fails(&sandbox, &["--scope", ARM, "--scope", STORAGE]);
    assert!(stderr.contains("exactly one scope"), "{stderr}");
    let stderr = fails(
        &sandbox,
        &["--scope", ARM, "--claims", "{}", "--tenant", OTHER_TENANT],
    );
    assert!(
        stderr.contains(&format!(
            "run: Connect-AzAccount -ClaimsChallenge e30= -Tenant {OTHER_TENANT}"
        )),
        "{stderr}"
    );
    assert_eq!(
        pwsh.invocations(),
        1,
        "scope and claims errors never start pwsh"
    );
}

#[test]
fn pwsh_that_hangs_is_killed_at_10_seconds() {
    let mut sandbox = Sandbox::new();
    let pwsh = sandbox.install_pwsh();
    pwsh.set_mode(PwshMode::Hang);
    sandbox.set("AZURE_TOKEN_CREDENTIALS", "AzurePowerShellCredential");
    sandbox.start_daemon();
    let started = Instant::now();
    let stderr = fails(&sandbox, &["--scope", ARM]);
    let took = started.elapsed();
    assert!(
        stderr.contains("pwsh Get-AzAccessToken did not answer within 10 s"),
        "{stderr}"
    );
    assert!(
        took >= Duration::from_secs(10) && took < Duration::from_secs(17),
        "{took:?}"
    );
    wait_until(Duration::from_secs(5), "the hung pwsh to be killed", || {
        pwsh.live_hung_pids().is_empty()
    });
}

// ------------------------------------------------------- chain and its memory

#[test]
fn the_default_chain_walks_az_then_pwsh_then_azd() {
    let mut sandbox = Sandbox::new();
    let pwsh = sandbox.install_pwsh();
    let azd = sandbox.install_azd();
    sandbox.unset("AZURE_TOKEN_CREDENTIALS");
    sandbox.az.set_mode(Mode::NotLoggedIn);
    pwsh.set_mode(PwshMode::NotLoggedIn);
    sandbox.start_daemon();
    let token = sandbox.token(ARM, &[]);
    assert_eq!(token["credential"], "AzureDeveloperCliCredential");
    assert_eq!(
        (
            sandbox.az.invocations(),
            pwsh.invocations(),
            azd.invocations()
        ),
        (1, 1, 1)
    );
    // Each credential's last result, in status.
    assert_eq!(
        credential_status(&sandbox, "EnvironmentCredential")["state"],
        "unavailable"
    );
    assert_eq!(
        credential_status(&sandbox, "AzureCliCredential")["state"],
        "unavailable"
    );
    assert_eq!(
        credential_status(&sandbox, "AzurePowerShellCredential")["state"],
        "unavailable"
    );
    assert_eq!(
        credential_status(&sandbox, "AzureDeveloperCliCredential")["state"],
        "healthy"
    );
}

#[test]
fn token_credentials_prod_and_single_names_select_the_new_credentials() {
    let mut sandbox = Sandbox::new();
    let mi = ManagedIdentityDouble::start();
    let pwsh = sandbox.install_pwsh();
    let azd = sandbox.install_azd();
    sandbox.start_daemon_with_imds(&mi.imds_endpoint());

    // prod: Environment, WorkloadIdentity, ManagedIdentity; never a developer tool.
    sandbox.set("AZURE_TOKEN_CREDENTIALS", "prod");
    let token = sandbox.token(ARM, &[]);
    assert_eq!(token["credential"], "ManagedIdentityCredential");
    mi.set_system_assigned(false);
    let stderr = fails(&sandbox, &["--scope", STORAGE]);
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("  - ")).collect();
    assert_eq!(lines.len(), 3, "{stderr}");
    assert!(
        lines[0].starts_with("  - EnvironmentCredential: "),
        "{stderr}"
    );
    assert!(
        lines[1].starts_with("  - WorkloadIdentityCredential: environment variables not set"),
        "{stderr}"
    );
    assert!(
        lines[2].starts_with("  - ManagedIdentityCredential: "),
        "{stderr}"
    );
    assert_eq!(
        (
            sandbox.az.invocations(),
            pwsh.invocations(),
            azd.invocations()
        ),
        (0, 0, 0)
    );

    // A single name (any case) is that credential alone.
    sandbox.set("AZURE_TOKEN_CREDENTIALS", "azurepowershellcredential");
    assert_eq!(
        sandbox.token(ARM, &[])["credential"],
        "AzurePowerShellCredential"
    );
    sandbox.set("AZURE_TOKEN_CREDENTIALS", "AzureDeveloperCliCredential");
    assert_eq!(
        sandbox.token(ARM, &[])["credential"],
        "AzureDeveloperCliCredential"
    );
    assert_eq!(
        (
            sandbox.az.invocations(),
            pwsh.invocations(),
            azd.invocations()
        ),
        (0, 1, 1)
    );
}

#[test]
fn az_login_is_noticed_within_seconds_but_unavailable_tools_are_not_rerun_per_request() {
    let mut sandbox = Sandbox::new();
    sandbox.az.set_mode(Mode::NotLoggedIn);
    sandbox.set("AZURE_TOKEN_CREDENTIALS", "AzureCliCredential");
    sandbox.start_daemon();
    for scope in [ARM, STORAGE, VAULT, ARM] {
        let stderr = fails(&sandbox, &["--scope", scope]);
        assert!(stderr.contains("run 'az login'"), "{stderr}");
    }
    assert_eq!(
        sandbox.az.invocations(),
        1,
        "az ran again for a remembered answer"
    );

    // The user runs `az login`.
    sandbox.az.set_mode(Mode::Ok);
    let logged_in = Instant::now();
    wait_until(Duration::from_secs(10), "the login to be noticed", || {
        sandbox.cli(&["token", "--scope", ARM]).status.success()
    });
    assert!(
        logged_in.elapsed() < Duration::from_secs(8),
        "{:?}",
        logged_in.elapsed()
    );
    assert_eq!(
        credential_status(&sandbox, "AzureCliCredential")["state"],
        "healthy"
    );
}
