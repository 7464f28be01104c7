//! The managed-identity endpoint: the App Service protocol on 127.0.0.1,
//! driven by Python azure-identity's ManagedIdentityCredential and by raw HTTP.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::time::Duration;

use azbroker_e2e::{jwt, Mode};
use serde_json::Value;

use crate::harness::{wait_until, Identity, Sandbox};

const ARM: &str = "https://management.azure.com/.default";
const NOBODY: u32 = 65534;

/// `azbroker env --managed-identity --plain`, parsed.
fn identity(sandbox: &Sandbox) -> Identity {
    sandbox.managed_identity_env()
}

fn vars(identity: &Identity) -> [(&'static str, &str); 2] {
    [
        ("IDENTITY_ENDPOINT", identity.endpoint.as_str()),
        ("IDENTITY_HEADER", identity.header.as_str()),
    ]
}

/// One HTTP/1.1 exchange over a fresh connection: (status, body).
fn http(endpoint: &str, method: &str, target: &str, header: Option<&str>) -> (u16, String) {
    let authority = endpoint
        .strip_prefix("http://")
        .and_then(|rest| rest.split('/').next())
        .expect("http://host:port/ endpoint");
    let mut stream = TcpStream::connect(authority).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut request =
        format!("{method} {target} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n");
    if let Some(header) = header {
        request.push_str(&format!("X-IDENTITY-HEADER: {header}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    parse_response(&response)
}

fn parse_response(response: &str) -> (u16, String) {
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or("");
    (status, body.to_string())
}

fn token_target(resource: &str) -> String {
    let query: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("resource", resource)
        .append_pair("api-version", "2019-08-01")
        .finish();
    format!("/msi/token?{query}")
}

#[test]
fn python_managed_identity_credential_gets_the_brokers_token() {
    let mut sandbox = Sandbox::new();
    sandbox.start_daemon_with(&["--managed-identity-endpoint"]);
    let identity = identity(&sandbox);
    assert!(
        identity.endpoint.starts_with("http://127.0.0.1:"),
        "{}",
        identity.endpoint
    );
    assert!(
        identity.endpoint.ends_with("/msi/token"),
        "{}",
        identity.endpoint
    );

    let out = sandbox.python("managed_identity.py", &["token", ARM], &vars(&identity));
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    let token = json["token"].as_str().unwrap();
    // The daemon's chain is this sandbox's (developer credentials): the same
    // cache entry the CLI reads, minted by one `az` run.
    assert_eq!(token, sandbox.raw_token(ARM));
    assert_eq!(sandbox.az.invocations(), 1);
    let exp = jwt::decode_claims(token).unwrap()["exp"].as_i64().unwrap();
    // The SDK computes expiry from expires_on (whole seconds, maybe 1 s apart).
    assert!(
        (json["expires_on"].as_i64().unwrap() - exp).abs() <= 1,
        "{json}"
    );

    // The export form, for eval (single-quoted), and the secret's file.
    let out = sandbox.cli(&["env", "--managed-identity"]);
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!(
            "export IDENTITY_ENDPOINT='{}'\nexport IDENTITY_HEADER='{}'\n",
            identity.endpoint, identity.header
        )
    );
    let header_file = azbroker_proto::paths::sibling(&sandbox.socket, "identity-header");
    let meta = std::fs::metadata(&header_file).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(
        std::fs::read_to_string(&header_file).unwrap(),
        identity.header
    );
    assert_eq!(identity.header.len(), 64);
    // Never in the log.
    assert!(!sandbox.log().contains(&identity.header));
}

#[test]
fn python_with_a_wrong_header_is_refused() {
    let mut sandbox = Sandbox::new();
    sandbox.start_daemon_with(&["--managed-identity-endpoint"]);
    let identity = Identity {
        header: "0".repeat(64),
        ..identity(&sandbox)
    };
    let out = sandbox.python("managed_identity.py", &["refused", ARM], &vars(&identity));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["status"], 401, "{json}");
    assert_eq!(json["got_token"], false, "{json}");
    assert!(json["credential_error"].is_string(), "{json}");
    assert!(!json["body"].as_str().unwrap().contains("access_token"));
    assert_eq!(
        sandbox.az.invocations(),
        0,
        "a refused request reached the chain"
    );
}

#[test]
fn the_endpoint_speaks_the_app_service_protocol() {
    let mut sandbox = Sandbox::new();
    sandbox.start_daemon_with(&["--managed-identity-endpoint"]);
    let Identity { endpoint, header } = identity(&sandbox);
    let target = token_target("https://vault.azure.net");

    for missing_or_wrong in [None, Some("wrong"), Some(&header[..63])] {
        let (status, body) = http(&endpoint, "GET", &target, missing_or_wrong);
        assert_eq!(status, 401, "{missing_or_wrong:?}: {body}");
        assert!(!body.contains("access_token"));
    }
    let (status, body) = http(&endpoint, "GET", &target, Some(&header));
    assert_eq!(status, 200, "{body}");
    let json: Value = serde_json::from_str(&body).unwrap();
    let keys: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        ["access_token", "expires_on", "resource", "token_type"]
    );
    assert_eq!(json["resource"], "https://vault.azure.net");
    assert_eq!(json["token_type"], "Bearer");
    let expires_on: i64 = json["expires_on"]
        .as_str()
        .expect("a string")
        .parse()
        .unwrap();
    let claims = jwt::decode_claims(json["access_token"].as_str().unwrap()).unwrap();
    assert_eq!(claims["aud"], "https://vault.azure.net");
    assert_eq!(claims["exp"].as_i64(), Some(expires_on));
    // An identity the daemon's chain does not serve is refused (issue 13 §4:
    // this used to serve the daemon's identity instead).
    let selected = format!("{target}&client_id=00000000-0000-0000-0000-000000000001");
    assert_eq!(http(&endpoint, "GET", &selected, Some(&header)).0, 400);
    assert_eq!(sandbox.az.invocations(), 1);

    let bad = [
        (
            "GET",
            "/other?resource=r&api-version=2019-08-01".to_string(),
            404,
        ),
        ("POST", target.clone(), 405),
        (
            "GET",
            "/msi/token?resource=r&api-version=2017-09-01".to_string(),
            400,
        ),
        ("GET", "/msi/token?api-version=2019-08-01".to_string(), 400),
        ("GET", token_target("https://x/.default; rm -rf /"), 400),
    ];
    for (method, target, expected) in bad {
        let (status, body) = http(&endpoint, method, &target, Some(&header));
        assert_eq!(status, expected, "{method} {target}: {body}");
        let json: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["statusCode"], expected);
        assert!(json["message"].is_string());
    }
}

#[test]
fn chain_failures_are_server_errors_with_reasons() {
    let mut sandbox = Sandbox::new();
    sandbox.az.set_mode(Mode::NotLoggedIn);
    sandbox.start_daemon_with(&["--managed-identity-endpoint"]);
    let Identity { endpoint, header } = identity(&sandbox);
    let (status, body) = http(
        &endpoint,
        "GET",
        &token_target("https://management.azure.com/"),
        Some(&header),
    );
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("AzureCliCredential"), "{body}");
}

#[test]
fn the_endpoint_is_off_by_default() {
    let mut sandbox = Sandbox::new();
    sandbox.start_daemon();
    let out = sandbox.cli(&["env", "--managed-identity"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("serves no managed-identity endpoint"),
        "{stderr}"
    );
    assert!(!azbroker_proto::paths::sibling(&sandbox.socket, "identity-header").exists());
}

#[test]
fn env_starts_a_daemon_that_serves_the_endpoint_and_stop_removes_the_secret() {
    let sandbox = Sandbox::new();
    let Identity { endpoint, header } = identity(&sandbox);
    assert_eq!(sandbox.daemon_pids().len(), 1);
    let (status, body) = http(
        &endpoint,
        "GET",
        &token_target("https://management.azure.com"),
        Some(&header),
    );
    assert_eq!(status, 200, "{body}");
    let header_file = azbroker_proto::paths::sibling(&sandbox.socket, "identity-header");
    assert!(header_file.exists());
    assert!(sandbox.cli(&["stop"]).status.success());
    wait_until(Duration::from_secs(10), "the daemon to exit", || {
        sandbox.daemon_pids().is_empty()
    });
    assert!(!header_file.exists(), "the secret outlived its daemon");
}

#[test]
fn another_user_is_refused_even_with_the_right_header() {
    let mut sandbox = Sandbox::new();
    sandbox.start_daemon_with(&["--managed-identity-endpoint"]);
    let Identity { endpoint, header } = identity(&sandbox);
    let authority = endpoint
        .strip_prefix("http://")
        .unwrap()
        .split('/')
        .next()
        .unwrap();
    let (host, port) = authority.split_once(':').unwrap();
    // bash's /dev/tcp: a loopback client running as 'nobody' that knows the secret.
    let script = format!(
        "exec 3<>/dev/tcp/{host}/{port} && printf 'GET {} HTTP/1.1\\r\\nHost: {authority}\\r\\nX-IDENTITY-HEADER: {header}\\r\\nConnection: close\\r\\n\\r\\n' >&3 && cat <&3",
        token_target("https://management.azure.com")
    );
    let out = std::process::Command::new("/bin/bash")
        .args(["-c", &script])
        .env_clear()
        .current_dir("/")
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .expect("run bash as nobody");
    let response = String::from_utf8_lossy(&out.stdout);
    let (status, body) = parse_response(&response);
    assert_eq!(status, 403, "{response}");
    assert!(!body.contains("access_token"));
    assert!(
        sandbox.status()["counters"]["connections_refused"]
            .as_u64()
            .unwrap()
            >= 1
    );
    assert_eq!(sandbox.az.invocations(), 0);
}

/// `managed_identity_user_assigned.py SCOPE [KIND VALUE]`: (exit success, JSON).
fn user_assigned(sandbox: &Sandbox, identity: &Identity, args: &[&str]) -> (bool, Value) {
    let out = sandbox.python("managed_identity_user_assigned.py", args, &vars(identity));
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), json)
}

fn target_naming(selector: &str, value: &str) -> String {
    format!(
        "{}&{}",
        token_target("https://management.azure.com/"),
        form_urlencoded::Serializer::new(String::new())
            .append_pair(selector, value)
            .finish()
    )
}

#[test]
fn a_user_assigned_identity_the_chain_does_not_serve_gets_400_not_a_token() {
    // The daemon's chain is the sandbox's developer chain: it has no
    // user-assigned identity at all.
    let mut sandbox = Sandbox::new();
    sandbox.start_daemon_with(&["--managed-identity-endpoint"]);
    let identity = identity(&sandbox);
    let someone = "33333333-3333-4333-8333-333333333333";
    let resource_id = "/subscriptions/s/resourcegroups/g/providers/Microsoft.ManagedIdentity/userAssignedIdentities/other";
    for (kind, value) in [
        ("client_id", someone),
        ("object_id", someone),
        ("resource_id", resource_id),
    ] {
        let (ok, json) = user_assigned(&sandbox, &identity, &[ARM, kind, value]);
        assert!(!ok, "{kind}: {json}");
        assert!(json.get("token").is_none(), "{kind}: {json}");
        // Unavailable, with the endpoint's reason: DefaultAzureCredential moves on.
        assert_eq!(
            json["error"], "CredentialUnavailableError",
            "{kind}: {json}"
        );
        assert!(
            json["message"]
                .as_str()
                .unwrap()
                .contains("no managed identity here matches"),
            "{kind}: {json}"
        );
    }
    for (selector, value) in [
        ("client_id", someone),
        ("object_id", someone),
        ("mi_res_id", resource_id),
    ] {
        let (status, body) = http(
            &identity.endpoint,
            "GET",
            &target_naming(selector, value),
            Some(&identity.header),
        );
        assert_eq!(status, 400, "{selector}: {body}");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["statusCode"], 400, "{body}");
        let message = body["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("{selector}={value}")),
            "{message}"
        );
        assert!(body.get("access_token").is_none(), "{body}");
    }
    // No credential was asked for a token on behalf of those identities.
    assert_eq!(sandbox.az.invocations(), 0);
    // The daemon's own identity is still served to a request naming none.
    let (ok, json) = user_assigned(&sandbox, &identity, &[ARM]);
    assert!(ok, "{json}");
    assert_eq!(sandbox.az.invocations(), 1);
}

#[test]
fn a_client_id_the_chain_is_configured_with_is_served_as_that_identity() {
    const CLIENT: &str = "22222222-2222-4222-8222-222222222222";
    const TENANT: &str = "11111111-1111-4111-8111-111111111111";
    let mut sandbox = Sandbox::new();
    let entra = azbroker_e2e::EntraDouble::start(&sandbox.pki);
    entra.register_client(CLIENT, "right-secret");
    sandbox.set("AZURE_TOKEN_CREDENTIALS", "EnvironmentCredential");
    sandbox.set("AZURE_AUTHORITY_HOST", entra.authority());
    sandbox.set("AZURE_TENANT_ID", TENANT);
    sandbox.set("AZURE_CLIENT_ID", CLIENT);
    sandbox.set("AZURE_CLIENT_SECRET", "right-secret");
    sandbox.start_daemon_with(&["--managed-identity-endpoint"]);
    let identity = identity(&sandbox);

    // Any case of the GUID names the same identity.
    let (ok, json) = user_assigned(
        &sandbox,
        &identity,
        &[ARM, "client_id", &CLIENT.to_ascii_uppercase()],
    );
    assert!(ok, "{json}");
    let claims = jwt::decode_claims(json["token"].as_str().unwrap()).unwrap();
    assert_eq!(claims["tid"], TENANT, "{claims}");
    // The same token as the daemon's chain gives a request naming no one.
    let (ok, plain) = user_assigned(&sandbox, &identity, &[ARM]);
    assert!(ok, "{plain}");
    assert_eq!(plain["token"], json["token"]);
    // Another client id is still not served.
    let (ok, json) = user_assigned(
        &sandbox,
        &identity,
        &[ARM, "client_id", "33333333-3333-4333-8333-333333333333"],
    );
    assert!(!ok, "{json}");
    assert_eq!(entra.token_requests(), 1);
}

#[test]
fn resources_are_normalized_like_azbroker_token() {
    let mut sandbox = Sandbox::new();
    sandbox.start_daemon_with(&["--managed-identity-endpoint"]);
    let identity = identity(&sandbox);
    // Python sends the scope's resource part verbatim: here a permission.
    let (ok, json) = user_assigned(
        &sandbox,
        &identity,
        &["https://graph.microsoft.com/User.Read"],
    );
    assert!(ok, "{json}");
    let token = json["token"].as_str().unwrap();
    let claims = jwt::decode_claims(token).unwrap();
    assert_eq!(claims["aud"], "https://graph.microsoft.com", "{claims}");
    // The very cache entry of the resource's /.default scope: one `az` run.
    assert_eq!(
        token,
        sandbox.raw_token("https://graph.microsoft.com/.default")
    );
    assert_eq!(sandbox.az.invocations(), 1);
}

#[test]
fn the_endpoint_never_opens_a_browser() {
    // The daemon's chain is InteractiveBrowser alone, with a browser that
    // would sign in at once if it were opened.
    let (mut sandbox, _entra) = crate::login_support::login_sandbox();
    let browser = crate::login_support::TestBrowser::install(&mut sandbox);
    sandbox.start_daemon_with(&["--managed-identity-endpoint"]);
    let identity = identity(&sandbox);
    let (ok, json) = user_assigned(&sandbox, &identity, &[ARM]);
    assert!(!ok, "{json}");
    assert_eq!(browser.invocations(), 0, "the endpoint opened a browser");
    // A client that may ask the user signs in (the browser was there), and
    // the endpoint is then served from that login.
    let token = sandbox.raw_token(ARM);
    assert_eq!(browser.invocations(), 1);
    let (ok, json) = user_assigned(&sandbox, &identity, &[ARM]);
    assert!(ok, "{json}");
    assert_eq!(json["token"], token.as_str());
    assert_eq!(browser.invocations(), 1);
}

/// `node tests/mcp/managed_identity.mjs SCOPE [CLIENT_ID]` (Node's
/// @azure/identity, from tests/mcp/node_modules): (exit success, JSON).
fn node_managed_identity(sandbox: &Sandbox, identity: &Identity, args: &[&str]) -> (bool, Value) {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("mcp/managed_identity.mjs");
    let out = sandbox
        .command_for("node")
        .arg(script)
        .args(args)
        .envs(vars(identity))
        .output()
        .expect("run node (Node.js must be on PATH, with tests/mcp/install run)");
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), json)
}

#[test]
fn node_managed_identity_credential_gets_the_token_and_a_400_for_another_identity() {
    let mut sandbox = Sandbox::new();
    sandbox.start_daemon_with(&["--managed-identity-endpoint"]);
    let identity = identity(&sandbox);
    let (ok, json) = node_managed_identity(
        &sandbox,
        &identity,
        &[ARM, "33333333-3333-4333-8333-333333333333"],
    );
    assert!(!ok, "{json}");
    assert!(json.get("token").is_none(), "{json}");
    // Node reads the 400 as "no such identity here": its chains move on. It
    // quotes the App Service error body's message (4.13 no longer says 400).
    assert_eq!(json["error"], "CredentialUnavailableError", "{json}");
    assert!(
        json["message"].as_str().unwrap().contains(
            "no managed identity here matches client_id=33333333-3333-4333-8333-333333333333"
        ),
        "{json}"
    );
    assert_eq!(sandbox.az.invocations(), 0);
    let (ok, json) = node_managed_identity(&sandbox, &identity, &[ARM]);
    assert!(ok, "{json}");
    assert_eq!(json["token"].as_str().unwrap(), sandbox.raw_token(ARM));
    assert_eq!(sandbox.az.invocations(), 1);
}
