//! Who may connect, and what never reaches the log.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;

use azbroker_e2e::EntraDouble;

use crate::harness::{bin, open_path_to, Sandbox};

const NOBODY: u32 = 65534;

#[test]
fn another_user_is_refused_even_when_the_socket_is_open_to_all() {
    let mut sandbox = Sandbox::new();
    sandbox.start_daemon();
    // Loosen everything on the way to the socket, as a careless admin might.
    let mut dir = sandbox.socket.parent().unwrap();
    loop {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        if dir == sandbox.dir.path() {
            break;
        }
        dir = dir.parent().unwrap();
    }
    std::fs::set_permissions(&sandbox.socket, std::fs::Permissions::from_mode(0o777)).unwrap();
    // A copy of the CLI that 'nobody' may execute.
    let cli = sandbox.dir.path().join("azbroker-for-nobody");
    std::fs::copy(bin("azbroker"), &cli).unwrap();
    std::fs::set_permissions(&cli, std::fs::Permissions::from_mode(0o755)).unwrap();
    open_path_to(sandbox.dir.path());

    let out = std::process::Command::new(&cli)
        .args(["status"])
        .env_clear()
        .env("AZBROKER_SOCKET", &sandbox.socket)
        .env("AZBROKER_NO_AUTOSTART", "1")
        .env("HOME", "/nonexistent")
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "nobody got an answer: {stderr}");
    // nobody's client refuses first: the socket's directory is not nobody's.
    assert!(stderr.contains("belongs to uid 0"), "{stderr}");
    // The daemon's own check, for a client that skips the client-side ones.
    let out = crate::harness::spawn_fresh(
        std::process::Command::new(crate::socket_trust::socket_peer(&sandbox))
            .arg("probe")
            .arg("--socket")
            .arg(&sandbox.socket)
            .env_clear()
            .uid(NOBODY)
            .gid(NOBODY)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped()),
    )
    .and_then(|child| child.wait_with_output())
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "nobody got an answer: {stderr}");
    assert!(
        stderr.contains("serves only its own user") && stderr.contains("uid 65534"),
        "{stderr}"
    );
    let status = sandbox.status();
    assert_eq!(status["counters"]["connections_refused"], 1);
}

#[test]
fn no_token_or_secret_reaches_the_daemon_log() {
    let mut sandbox = Sandbox::new();
    let entra = EntraDouble::start(&sandbox.pki);
    let secret = "s3cret-value-that-must-never-be-logged";
    entra.register_client("22222222-2222-2222-2222-222222222222", secret);
    sandbox.set("AZURE_TENANT_ID", "11111111-1111-1111-1111-111111111111");
    sandbox.set("AZURE_CLIENT_ID", "22222222-2222-2222-2222-222222222222");
    sandbox.set("AZURE_CLIENT_SECRET", secret);
    sandbox.set("AZURE_AUTHORITY_HOST", entra.authority());
    sandbox.set("AZBROKER_LOG", "trace");
    sandbox.unset("AZURE_TOKEN_CREDENTIALS");
    sandbox.start_daemon();

    let mut tokens = Vec::new();
    tokens.push(sandbox.token("https://management.azure.com/.default", &[]));
    // A chain without the service principal: the token comes from az.
    sandbox.set("AZURE_TOKEN_CREDENTIALS", "dev");
    tokens.push(sandbox.token("https://vault.azure.net/.default", &[]));
    // And a failure with the wrong secret.
    sandbox.set("AZURE_TOKEN_CREDENTIALS", "EnvironmentCredential");
    sandbox.set("AZURE_CLIENT_SECRET", "another-secret-never-to-be-logged");
    assert!(!sandbox
        .cli(&["token", "--scope", "https://storage.azure.com/.default"])
        .status
        .success());
    let status_text = String::from_utf8(sandbox.cli(&["status"]).stdout).unwrap();
    let status_json = sandbox.status().to_string();

    assert_eq!(tokens[0]["credential"], "EnvironmentCredential");
    assert_eq!(tokens[1]["credential"], "AzureCliCredential");
    let log = sandbox.log();
    assert!(
        log.contains("token acquired"),
        "the log is empty or not at trace level:\n{log}"
    );
    for haystack in [&log, &status_text, &status_json] {
        for needle in [secret, "another-secret-never-to-be-logged"] {
            assert!(!haystack.contains(needle), "a secret leaked");
        }
        for token in &tokens {
            let token = token["accessToken"].as_str().unwrap();
            // The signature part alone is unique to the token.
            let signature = token.rsplit('.').next().unwrap();
            assert!(!haystack.contains(signature), "a token leaked");
        }
    }
}
