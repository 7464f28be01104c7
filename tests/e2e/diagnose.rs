//! `azbroker diagnose`: each failure the guide describes, produced on loopback
//! and recognized with its remedy; the healthy case; secrets never shown.
//!
//! Every run points the authority at an Entra double on 127.0.0.1 and skips
//! the cloud's public endpoints (`--no-cloud-endpoints`): no test resolves or
//! reaches a name outside this machine (`.invalid` names fail by definition).

use std::process::Output;
use std::time::Duration;

use azbroker_e2e::diagnose_doubles::{closed_port, ForwardProxy, SilentEndpoint, TlsEndpoint};
use azbroker_e2e::fake_az::USER_UPN;
use azbroker_e2e::{EntraDouble, Mode, TestPki};
use serde_json::Value;

use crate::harness::{wait_until, Sandbox};

const CLIENT_ID: &str = "22222222-2222-2222-2222-222222222222";
const TENANT_ID: &str = "11111111-1111-1111-1111-111111111111";

/// A sandbox whose authority is an Entra double; developer credentials (the fake az).
fn sandbox() -> (Sandbox, EntraDouble) {
    let mut sandbox = Sandbox::new();
    let entra = EntraDouble::start(&sandbox.pki);
    entra.register_client(CLIENT_ID, "right-secret");
    sandbox.set("AZURE_AUTHORITY_HOST", entra.authority());
    (sandbox, entra)
}

fn run(sandbox: &Sandbox, args: &[&str]) -> Output {
    let mut all = vec!["diagnose", "--no-cloud-endpoints"];
    if !args.contains(&"--timeout") {
        all.extend(["--timeout", "2"]);
    }
    all.extend_from_slice(args);
    sandbox.cli(&all)
}

/// `azbroker diagnose --json ARGS`: exit code and report.
fn diagnose(sandbox: &Sandbox, args: &[&str]) -> (i32, Value) {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = run(sandbox, &all);
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "diagnose --json printed no JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().expect("exit code"), json)
}

/// `azbroker stop`, then a new daemon with the sandbox's current variables.
fn restart_daemon(sandbox: &mut Sandbox) {
    assert!(sandbox.cli(&["stop"]).status.success());
    wait_until(Duration::from_secs(10), "the daemon to exit", || {
        sandbox.daemon_pids().is_empty()
    });
    sandbox.start_daemon();
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The network check of `endpoint` in a report.
fn endpoint<'a>(report: &'a Value, endpoint: &str) -> &'a Value {
    report["network"]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["endpoint"] == endpoint)
        .unwrap_or_else(|| panic!("{endpoint} not checked: {report:#}"))
}

fn credential<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["credentials"]["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["credential"] == name)
        .unwrap_or_else(|| panic!("{name} not in the report: {report:#}"))
}

#[test]
fn a_healthy_setup_passes_and_exits_zero() {
    let (mut sandbox, _entra) = sandbox();
    let storage = TlsEndpoint::start(sandbox.pki.server_config());
    sandbox.start_daemon();
    let (code, report) = diagnose(&sandbox, &["--resource-endpoint", &storage.endpoint()]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["ok"], true);
    assert_eq!(
        report["problems"].as_array().unwrap().len(),
        0,
        "{report:#}"
    );
    assert_eq!(report["daemon"]["reachable"], true);
    assert_eq!(report["daemon"]["socket"]["mode"], "0600");
    assert_eq!(report["network"]["checked_by"], "azbrokerd");
    let resource = endpoint(&report, &storage.endpoint());
    assert_eq!(resource["status"], "ok");
    assert_eq!(resource["role"], "resource");
    let steps: Vec<&str> = resource["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["tcp", "tls"], "an IP address needs no lookup");
    // The server side finishes its handshake a moment after the client's.
    wait_until(Duration::from_secs(5), "the endpoint's handshake", || {
        storage.handshakes() == 1
    });
    assert_eq!(report["credentials"]["serving"], "AzureCliCredential");
    let cli = credential(&report, "AzureCliCredential");
    assert_eq!(cli["outcome"], "token");
    assert_eq!(cli["token"]["identity"]["name"], USER_UPN);
    assert_eq!(
        credential(&report, "VisualStudioCredential")["outcome"],
        "unavailable"
    );

    // The same for people: aligned text, no color when not on a terminal.
    let out = run(&sandbox, &["--resource-endpoint", &storage.endpoint()]);
    let shown = text(&out);
    assert!(out.status.success(), "{shown}");
    assert!(
        shown.contains("everything needed for a token works"),
        "{shown}"
    );
    assert!(
        !shown.contains('\x1b'),
        "colored output off a terminal: {shown}"
    );
}

#[test]
fn a_name_that_does_not_resolve_gets_the_private_dns_remedy() {
    let (mut sandbox, _entra) = sandbox();
    sandbox.start_daemon();
    let (code, report) = diagnose(
        &sandbox,
        &["--resource-endpoint", "mystorageaccount.invalid"],
    );
    assert_eq!(code, 1);
    let check = endpoint(&report, "mystorageaccount.invalid:443");
    assert_eq!(check["problem"], "dns");
    assert_eq!(check["steps"][0]["step"], "dns");
    let remedy = check["remedy"].as_str().unwrap();
    assert!(remedy.contains("private DNS zone"), "{remedy}");
    assert!(remedy.contains("VPN"), "{remedy}");
    assert!(remedy.contains("HTTPS_PROXY"), "{remedy}");
    assert_eq!(
        report["problems"][0]["subject"],
        "mystorageaccount.invalid:443"
    );
}

#[test]
fn an_untrusted_certificate_passes_once_its_ca_is_given_in_azbroker_ca_file() {
    let (mut sandbox, _entra) = sandbox();
    // Another CA than the sandbox's: azbrokerd does not trust it.
    let corporate_dir = tempfile::tempdir().unwrap();
    let corporate = TestPki::generate_named(corporate_dir.path(), "Contoso corporate root CA");
    let inspected = TlsEndpoint::start(corporate.server_config());
    sandbox.start_daemon();
    let (code, report) = diagnose(&sandbox, &["--resource-endpoint", &inspected.endpoint()]);
    assert_eq!(code, 1);
    let check = endpoint(&report, &inspected.endpoint());
    assert_eq!(check["problem"], "certificate", "{check:#}");
    let failed = &check["steps"][1];
    assert_eq!(failed["step"], "tls");
    assert!(
        failed["detail"].as_str().unwrap().contains("UnknownIssuer"),
        "{failed}"
    );
    let remedy = check["remedy"].as_str().unwrap();
    assert!(
        remedy.contains("AZBROKER_CA_FILE=/path/to/corporate-ca.pem"),
        "{remedy}"
    );
    assert!(remedy.contains("azbroker stop"), "{remedy}");

    // Do what the remedy says: the variable, then a daemon that reads it.
    sandbox.set("AZBROKER_CA_FILE", corporate.ca_pem_path());
    restart_daemon(&mut sandbox);
    let (code, report) = diagnose(&sandbox, &["--resource-endpoint", &inspected.endpoint()]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(endpoint(&report, &inspected.endpoint())["status"], "ok");
    let roots = report["network"]["settings"]["extra_roots"][0]
        .as_str()
        .unwrap();
    assert!(roots.starts_with("AZBROKER_CA_FILE="), "{roots}");
}

#[test]
fn a_server_that_never_answers_is_a_timeout_with_a_firewall_remedy() {
    let (mut sandbox, _entra) = sandbox();
    let silent = SilentEndpoint::start();
    sandbox.start_daemon();
    let (code, report) = diagnose(
        &sandbox,
        &["--timeout", "1", "--resource-endpoint", &silent.endpoint()],
    );
    assert_eq!(code, 1);
    let check = endpoint(&report, &silent.endpoint());
    assert_eq!(check["problem"], "timeout", "{check:#}");
    assert_eq!(check["steps"][0]["step"], "tcp");
    assert_eq!(check["steps"][0]["passed"], true);
    assert_eq!(check["steps"][1]["step"], "tls");
    let port = silent.endpoint().rsplit_once(':').unwrap().1.to_string();
    let remedy = check["remedy"].as_str().unwrap();
    assert!(
        remedy.contains(&format!("destination 127.0.0.1, TCP {port}")),
        "{remedy}"
    );
    assert_eq!(silent.accepted(), 1);
}

#[test]
fn a_closed_port_is_refused() {
    let (mut sandbox, _entra) = sandbox();
    sandbox.start_daemon();
    let target = format!("127.0.0.1:{}", closed_port());
    let (code, report) = diagnose(&sandbox, &["--resource-endpoint", &target]);
    assert_eq!(code, 1);
    let check = endpoint(&report, &target);
    assert_eq!(check["problem"], "refused", "{check:#}");
    assert_eq!(check["steps"][0]["step"], "tcp");
    assert!(check["remedy"].as_str().unwrap().contains("firewall rule"));
}

#[test]
fn a_proxy_that_must_be_used_is_checked_with_the_daemons_settings() {
    let (mut sandbox, _entra) = sandbox();
    // A name only the proxy resolves, served with a certificate for that name.
    let host = "storage.contoso.invalid";
    let storage = TlsEndpoint::start(sandbox.pki.server_config_for(&[host]));
    let proxy = ForwardProxy::start();
    proxy.route(&format!("{host}:443"), storage.addr());

    // The daemon was started without the proxy; this shell has it.
    sandbox.start_daemon();
    sandbox.set("HTTPS_PROXY", proxy.url());
    let (code, report) = diagnose(&sandbox, &["--resource-endpoint", host]);
    assert_eq!(code, 1);
    assert_eq!(endpoint(&report, &format!("{host}:443"))["problem"], "dns");
    let differences = report["network"]["differences"][0].as_str().unwrap();
    assert!(
        differences.contains("HTTPS_PROXY: azbrokerd has unset"),
        "{differences}"
    );
    let warning = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["subject"] == "azbrokerd settings")
        .expect("a warning about the daemon's settings");
    assert!(warning["remedy"]
        .as_str()
        .unwrap()
        .contains("azbroker stop"));
    assert!(proxy.connects().is_empty());

    // Restarted from this shell, the daemon goes through the proxy.
    restart_daemon(&mut sandbox);
    let (code, report) = diagnose(&sandbox, &["--resource-endpoint", host]);
    assert_eq!(code, 0, "{report:#}");
    let check = endpoint(&report, &format!("{host}:443"));
    assert_eq!(check["proxy"], proxy.url());
    let steps: Vec<&str> = check["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["tcp", "proxy", "tls"]);
    assert!(
        proxy.connects().contains(&format!("{host}:443")),
        "{:?}",
        proxy.connects()
    );
    // The server side finishes its handshake a moment after the client's.
    wait_until(Duration::from_secs(5), "the endpoint's handshake", || {
        storage.handshakes() == 1
    });
}

#[test]
fn no_proxy_bypasses_the_proxy() {
    let (mut sandbox, entra) = sandbox();
    let storage = TlsEndpoint::start(sandbox.pki.server_config());
    let proxy = ForwardProxy::start();
    sandbox.set("HTTPS_PROXY", proxy.url());
    sandbox.set("NO_PROXY", "localhost,127.0.0.1");
    sandbox.start_daemon();
    let (code, report) = diagnose(&sandbox, &["--resource-endpoint", &storage.endpoint()]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(endpoint(&report, &storage.endpoint())["proxy"], Value::Null);
    assert_eq!(
        endpoint(&report, &entra.addr().to_string())["proxy"],
        Value::Null
    );
    assert_eq!(
        report["network"]["settings"]["no_proxy"],
        "localhost,127.0.0.1"
    );
    assert!(proxy.connects().is_empty(), "{:?}", proxy.connects());
}

#[test]
fn a_proxy_that_wants_credentials_is_a_proxy_problem() {
    let (mut sandbox, _entra) = sandbox();
    let storage = TlsEndpoint::start(sandbox.pki.server_config());
    let proxy = ForwardProxy::start();
    proxy.require_credentials("alice", "proxy-pa55word");
    sandbox.set("HTTPS_PROXY", proxy.url());
    sandbox.start_daemon();
    let (code, report) = diagnose(&sandbox, &["--resource-endpoint", &storage.endpoint()]);
    assert_eq!(code, 1);
    let check = endpoint(&report, &storage.endpoint());
    assert_eq!(check["problem"], "proxy", "{check:#}");
    let detail = check["steps"][1]["detail"].as_str().unwrap();
    assert!(detail.contains("407"), "{detail}");
    assert!(detail.contains("has no user and password"), "{detail}");
    assert!(check["remedy"]
        .as_str()
        .unwrap()
        .contains("HTTPS_PROXY (http://[user:password@]proxy:port)"));
    assert_eq!(storage.handshakes(), 0);
}

#[test]
fn each_credential_is_unavailable_or_failing_for_its_own_reason() {
    let (mut sandbox, entra) = sandbox();
    sandbox.az.set_mode(Mode::NotLoggedIn);
    sandbox.unset("AZURE_TOKEN_CREDENTIALS"); // the default chain
    sandbox.set("AZURE_TENANT_ID", TENANT_ID);
    sandbox.set("AZURE_CLIENT_ID", CLIENT_ID);
    sandbox.set("AZURE_CLIENT_SECRET", "wrong-secret");
    sandbox.start_daemon();
    let (code, report) = diagnose(&sandbox, &[]);
    assert_eq!(code, 1, "{report:#}");
    let env = credential(&report, "EnvironmentCredential");
    assert_eq!(env["outcome"], "failed");
    assert_eq!(env["status"], "fail");
    assert_eq!(env["advice"]["kind"], "invalid_client_secret");
    assert!(env["advice"]["remedy"]
        .as_str()
        .unwrap()
        .contains("Value, not its Secret ID"));
    let vs = credential(&report, "VisualStudioCredential");
    assert_eq!(vs["outcome"], "unavailable");
    assert!(vs["reason"]
        .as_str()
        .unwrap()
        .contains("only available on Windows"));
    let cli = credential(&report, "AzureCliCredential");
    assert_eq!(cli["outcome"], "unavailable");
    assert!(cli["reason"]
        .as_str()
        .unwrap()
        .contains("not logged in: run 'az login'"));
    for name in ["AzurePowerShellCredential", "AzureDeveloperCliCredential"] {
        let other = credential(&report, name);
        assert_eq!(other["outcome"], "unavailable", "{other}");
        assert!(!other["reason"].as_str().unwrap().is_empty());
    }
    let browser = credential(&report, "InteractiveBrowserCredential");
    assert!(
        matches!(
            browser["outcome"].as_str(),
            Some("unavailable" | "not_tried")
        ),
        "{browser}"
    );
    assert_eq!(report["credentials"]["serving"], Value::Null);
    let chain = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["subject"] == "credential chain")
        .expect("the chain as a whole fails");
    assert!(chain["remedy"].as_str().unwrap().contains("az login"));

    // With az signed in the chain works; the broken service principal is a warning.
    sandbox.az.set_mode(Mode::Ok);
    // The daemon remembers "not logged in" for a few seconds (negative caching).
    let (mut code, mut report) = diagnose(&sandbox, &[]);
    crate::harness::wait_until(Duration::from_secs(15), "az to be asked again", || {
        (code, report) = diagnose(&sandbox, &[]);
        code == 0
    });
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["credentials"]["serving"], "AzureCliCredential");
    assert_eq!(
        credential(&report, "EnvironmentCredential")["status"],
        "warn"
    );

    // The guide's Entra errors, one at a time, on the service principal alone.
    sandbox.set("AZURE_TOKEN_CREDENTIALS", "EnvironmentCredential");
    sandbox.set("AZURE_CLIENT_SECRET", "right-secret");
    for (code, kind, words) in [
        (
            50076,
            "mfa_required",
            "service principal cannot complete MFA",
        ),
        (53003, "conditional_access", "Conditional Access"),
    ] {
        entra.fail_next(1, code);
        let (exit, report) = diagnose(&sandbox, &[]);
        assert_eq!(exit, 1);
        let env = credential(&report, "EnvironmentCredential");
        assert_eq!(env["advice"]["kind"], kind, "{env:#}");
        let said = format!("{} {}", env["advice"]["summary"], env["advice"]["remedy"]);
        assert!(said.contains(words), "{said}");
    }
    sandbox.set("AZURE_CLIENT_ID", "33333333-3333-3333-3333-333333333333");
    let (_, report) = diagnose(&sandbox, &[]);
    assert_eq!(
        credential(&report, "EnvironmentCredential")["advice"]["kind"],
        "unknown_application"
    );
    sandbox.set("AZURE_CLIENT_ID", CLIENT_ID);
    sandbox.unset("AZURE_CLIENT_SECRET");
    let (_, report) = diagnose(&sandbox, &[]);
    let env = credential(&report, "EnvironmentCredential");
    assert_eq!(env["outcome"], "unavailable");
    assert!(
        env["reason"]
            .as_str()
            .unwrap()
            .contains("AZURE_CLIENT_SECRET"),
        "{env}"
    );

    // The Azure CLI's expired sign-in (on a fresh daemon: the old one still
    // holds a cached token from az, and serves it until it expires).
    restart_daemon(&mut sandbox);
    sandbox.set("AZURE_TOKEN_CREDENTIALS", "AzureCliCredential");
    sandbox.az.set_mode(Mode::refresh_token_expired());
    let (_, report) = diagnose(&sandbox, &[]);
    let cli = credential(&report, "AzureCliCredential");
    assert_eq!(cli["outcome"], "failed");
    assert_eq!(cli["advice"]["kind"], "session_expired");
    assert!(cli["advice"]["remedy"]
        .as_str()
        .unwrap()
        .contains("az login"));
}

#[test]
fn no_secret_value_appears_in_text_json_or_the_admin_request() {
    let (mut sandbox, entra) = sandbox();
    let storage = TlsEndpoint::start(sandbox.pki.server_config());
    let proxy = ForwardProxy::start();
    proxy.require_credentials("alice", "Pr0xy-pa55word");
    let secrets = [
        ("AZURE_CLIENT_SECRET", "Sup3r-client-secret-value"),
        ("AZURE_CLIENT_CERTIFICATE_PASSWORD", "Cert-pa55word-value"),
        ("IDENTITY_HEADER", "identity-header-value"),
        ("MSI_SECRET", "msi-secret-value"),
        ("AZURE_PASSWORD", "user-pa55word-value"),
    ];
    for (name, value) in secrets {
        sandbox.set(name, value);
    }
    sandbox.set("AZURE_TENANT_ID", TENANT_ID);
    sandbox.set("AZURE_CLIENT_ID", CLIENT_ID);
    sandbox.set(
        "IDENTITY_ENDPOINT",
        format!("https://{}/msi/token", entra.addr()),
    );
    sandbox.set("HTTPS_PROXY", proxy.url_with("alice", "Pr0xy-pa55word"));
    sandbox.unset("AZURE_TOKEN_CREDENTIALS");
    sandbox.start_daemon();
    // A token the report must never show, though it is in the daemon's cache.
    sandbox.set("AZURE_TOKEN_CREDENTIALS", "AzureCliCredential");
    let token = sandbox.token("https://management.azure.com/.default", &[]);
    let token = token["accessToken"].as_str().unwrap().to_string();
    sandbox.unset("AZURE_TOKEN_CREDENTIALS");

    let endpoint_arg = storage.endpoint();
    let outputs = [
        run(&sandbox, &["--resource-endpoint", &endpoint_arg]),
        run(&sandbox, &["--json", "--resource-endpoint", &endpoint_arg]),
        run(
            &sandbox,
            &["--admin-request", "--resource-endpoint", &endpoint_arg],
        ),
    ];
    for out in &outputs {
        let shown = text(out);
        for (name, value) in secrets {
            assert!(!shown.contains(value), "{name}'s value leaked:\n{shown}");
        }
        assert!(
            !shown.contains("Pr0xy-pa55word"),
            "the proxy password leaked:\n{shown}"
        );
        assert!(!shown.contains(&token), "a token leaked:\n{shown}");
    }
    let json: Value = serde_json::from_slice(&outputs[1].stdout).unwrap();
    let variables = json["environment"]["variables"].as_array().unwrap();
    for (name, _) in secrets {
        let shown = variables.iter().find(|v| v["name"] == name).expect(name);
        assert_eq!(shown["value"], "(set, hidden)");
        assert_eq!(shown["secret"], true);
    }
    let proxy_var = variables
        .iter()
        .find(|v| v["name"] == "HTTPS_PROXY")
        .unwrap();
    assert_eq!(
        proxy_var["value"],
        format!("http://alice:***@{}", entra_free(&proxy.url()))
    );
    // The credentials did reach the proxy: the check went through it.
    assert_eq!(endpoint(&json, &endpoint_arg)["status"], "ok", "{json:#}");
    assert!(proxy.authorized().iter().all(|sent| *sent));
}

/// `http://host:port` -> `host:port`.
fn entra_free(url: &str) -> &str {
    url.trim_start_matches("http://")
}

#[test]
fn without_a_daemon_the_network_is_checked_from_this_process() {
    let (mut sandbox, _entra) = sandbox();
    let storage = TlsEndpoint::start(sandbox.pki.server_config());
    sandbox.set("AZBROKER_NO_AUTOSTART", "1");
    let (code, report) = diagnose(&sandbox, &["--resource-endpoint", &storage.endpoint()]);
    assert_eq!(code, 1);
    assert_eq!(report["daemon"]["reachable"], false);
    assert!(report["daemon"]["error"]
        .as_str()
        .unwrap()
        .contains("AZBROKER_NO_AUTOSTART"));
    assert_eq!(report["network"]["checked_by"], "azbroker");
    assert!(report["network"]["note"]
        .as_str()
        .unwrap()
        .contains("checked from this process"));
    assert_eq!(endpoint(&report, &storage.endpoint())["status"], "ok");
    assert_eq!(
        credential(&report, "AzureCliCredential")["outcome"],
        "not_checked"
    );
    assert!(
        sandbox.daemon_pids().is_empty(),
        "diagnose started a daemon"
    );
}

#[test]
fn a_bad_switch_is_reported_and_the_rest_still_checked() {
    let (mut sandbox, _entra) = sandbox();
    sandbox.set("AZURE_TOKEN_CREDENTIALS", "AzureCLI2");
    sandbox.start_daemon();
    let (code, report) = diagnose(&sandbox, &[]);
    assert_eq!(code, 1);
    let error = report["environment"]["chain"]["error"].as_str().unwrap();
    assert!(
        error.contains("AZURE_TOKEN_CREDENTIALS=\"AzureCLI2\""),
        "{error}"
    );
    assert_eq!(report["daemon"]["reachable"], true);
    assert_eq!(report["network"]["endpoints"][0]["status"], "ok");
}

#[test]
fn the_admin_request_names_endpoints_identity_and_roles() {
    let (mut sandbox, _entra) = sandbox();
    sandbox.start_daemon();
    let out = run(
        &sandbox,
        &[
            "--admin-request",
            "--resource-endpoint",
            "mystorageaccount.invalid",
        ],
    );
    let request = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{request}");
    for expected in [
        "login.microsoftonline.com:443",
        "login.windows.net:443",
        "management.azure.com:443",
        "graph.microsoft.com:443",
        "mystorageaccount.invalid:443",
        "*.vault.azure.net:443",
        &format!("user {USER_UPN}"),
        "signed in through AzureCliCredential",
        "Storage Blob Data Reader",
        "az ad sp create-for-rbac",
        "Conditional Access",
        "Name resolution failed: mystorageaccount.invalid does not resolve",
    ] {
        assert!(
            request.contains(expected),
            "missing {expected:?}:\n{request}"
        );
    }
}

#[test]
fn token_errors_name_the_network_problem_and_point_to_diagnose() {
    let mut sandbox = Sandbox::new();
    let entra = EntraDouble::start_with_tls(TestPki::untrusted_server_config());
    sandbox.set("AZURE_AUTHORITY_HOST", entra.authority());
    sandbox.set("AZURE_TENANT_ID", TENANT_ID);
    sandbox.set("AZURE_CLIENT_ID", CLIENT_ID);
    sandbox.set("AZURE_CLIENT_SECRET", "right-secret");
    sandbox.set("AZURE_TOKEN_CREDENTIALS", "EnvironmentCredential");
    sandbox.start_daemon();
    let out = sandbox.cli(&["token", "--scope", "https://management.azure.com/.default"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("EnvironmentCredential: Certificate trust failed"),
        "{stderr}"
    );
    assert!(stderr.contains("AZBROKER_CA_FILE="), "{stderr}");
    assert!(stderr.contains("Run `azbroker diagnose`"), "{stderr}");
}

#[test]
fn a_malformed_scope_is_one_problem_not_one_per_credential() {
    let (mut sandbox, _entra) = sandbox();
    sandbox.start_daemon();
    let (code, report) = diagnose(&sandbox, &["--scope", "not a scope"]);
    assert_eq!(code, 1);
    let problems = report["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert_eq!(problems[0]["subject"], "request");
    assert!(problems[0]["remedy"].as_str().unwrap().contains("--scope"));
    assert_eq!(
        credential(&report, "AzureCliCredential")["outcome"],
        "rejected"
    );
}

#[test]
fn off_azure_a_missing_managed_identity_is_not_a_firewall_problem() {
    let (mut sandbox, _entra) = sandbox();
    sandbox.set("AZURE_TOKEN_CREDENTIALS", "ManagedIdentityCredential");
    // The harness gives the daemon a closed loopback port for IMDS: nothing answers, as off Azure.
    sandbox.start_daemon();
    let (code, report) = diagnose(&sandbox, &[]);
    assert_eq!(code, 1, "no credential serves: {report:#}");
    let managed = credential(&report, "ManagedIdentityCredential");
    assert_eq!(
        managed["advice"]["kind"], "no_managed_identity",
        "{managed:#}"
    );
    assert_eq!(managed["status"], "info", "{managed:#}");
    assert!(managed["advice"]["summary"]
        .as_str()
        .unwrap()
        .starts_with("No managed identity here"));
    let problems = report["problems"].to_string();
    assert!(!problems.contains("firewall"), "{problems}");
}

#[test]
fn token_errors_name_the_endpoints_own_port() {
    let mut sandbox = Sandbox::new();
    let port = closed_port();
    sandbox.set("AZURE_AUTHORITY_HOST", format!("https://127.0.0.1:{port}"));
    sandbox.set("AZURE_TENANT_ID", TENANT_ID);
    sandbox.set("AZURE_CLIENT_ID", CLIENT_ID);
    sandbox.set("AZURE_CLIENT_SECRET", "right-secret");
    sandbox.set("AZURE_TOKEN_CREDENTIALS", "EnvironmentCredential");
    sandbox.start_daemon();
    let out = sandbox.cli(&["token", "--scope", "https://management.azure.com/.default"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Connection refused"), "{stderr}");
    assert!(stderr.contains(&format!("TCP {port} (HTTPS)")), "{stderr}");
    assert!(!stderr.contains("TCP 443"), "{stderr}");
}

#[test]
fn the_daemons_environment_is_compared_with_the_shells() {
    let (mut sandbox, _entra) = sandbox();
    sandbox.start_daemon();
    let (_, report) = diagnose(&sandbox, &[]);
    assert_eq!(report["daemon_environment"]["compared"], true, "{report:#}");
    assert_eq!(
        report["daemon_environment"]["differences"],
        serde_json::json!([]),
        "started from this environment"
    );

    // This shell now finds azd, uses a second Azure CLI profile and an http
    // proxy with a password; the daemon was started without them.
    let tools = sandbox.dir.path().join("more-tools");
    std::fs::create_dir(&tools).unwrap();
    let azd = tools.join("azd");
    std::fs::write(&azd, "#!/bin/sh\nexit 1\n").unwrap();
    std::fs::set_permissions(&azd, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    sandbox.set("PATH", sandbox.path_with_first(&[&tools]));
    let profile = sandbox.dir.path().join(".azure-work");
    sandbox.set("AZURE_CONFIG_DIR", &profile);
    sandbox.set("http_proxy", "http://alice:proxy-pa55@127.0.0.1:9");
    let (_, report) = diagnose(&sandbox, &[]);
    let differences = report["daemon_environment"]["differences"]
        .as_array()
        .unwrap();
    let difference = |name: &str| {
        differences
            .iter()
            .find(|d| d["name"] == name)
            .unwrap_or_else(|| panic!("{name} not among {differences:#?}"))
    };
    assert_eq!(difference("azd")["daemon"], Value::Null);
    assert_eq!(difference("azd")["shell"], azd.display().to_string());
    assert_eq!(
        difference("AZURE_CONFIG_DIR")["shell"],
        profile.display().to_string()
    );
    assert_eq!(
        difference("AZURE_CONFIG_DIR")["daemon"],
        sandbox.dir.path().join(".azure").display().to_string()
    );
    assert_eq!(
        difference("HTTP_PROXY")["shell"],
        "http://alice:***@127.0.0.1:9"
    );
    assert_eq!(differences.len(), 3, "{differences:#?}");
    let warning = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["subject"] == "azbrokerd settings")
        .expect("a warning about the daemon's environment");
    let summary = warning["summary"].as_str().unwrap();
    assert!(
        summary.contains("azd: azbrokerd finds none on its PATH"),
        "{summary}"
    );
    let remedy = warning["remedy"].as_str().unwrap();
    assert!(remedy.contains("azbroker stop"), "{remedy}");
    assert!(
        remedy.contains("systemctl --user restart azbrokerd"),
        "{remedy}"
    );
    let shown = text(&run(&sandbox, &[]));
    assert!(shown.contains("Daemon environment"), "{shown}");
    assert!(!shown.contains("proxy-pa55"), "{shown}");

    // Restarted from this shell, the daemon has the same environment.
    restart_daemon(&mut sandbox);
    let (_, report) = diagnose(&sandbox, &[]);
    assert_eq!(
        report["daemon_environment"]["differences"],
        serde_json::json!([]),
        "{report:#}"
    );
}
