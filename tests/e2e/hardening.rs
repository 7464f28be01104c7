//! The daemon hardens itself like ssh-agent: no secret of the environment it
//! was started from reaches its children or stays in its memory, it cannot be
//! dumped or traced by its own user, and client-chosen text cannot forge log
//! lines.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::process::{Child, Stdio};
use std::time::Duration;

use azbroker_client::{Client, ClientOptions};
use azbroker_e2e::EntraDouble;
use azbroker_proto::ChainSpec;

use crate::harness::{bin, open_path_to, wait_until, Sandbox};
use crate::login_support::{login_sandbox, TestBrowser, ARM};

const NOBODY: u32 = 65534;

/// Secret variables a daemon may inherit from whoever started it, each with a
/// value that appears nowhere else.
const SECRETS: &[(&str, &str)] = &[
    ("AZURE_CLIENT_SECRET", "client-secret-b1c7f0e2"),
    (
        "AZURE_CLIENT_CERTIFICATE_PASSWORD",
        "cert-password-5d9a33c4",
    ),
    ("IDENTITY_HEADER", "identity-header-8e21aa07"),
    ("AZURE_DEVOPS_EXT_PAT", "devops-pat-43f0c9d1"),
    ("GITHUB_TOKEN", "github-token-7a6b5c4d"),
];

/// Variables a shell adds on its own (the fake tools run through `/bin/sh`).
const SET_BY_SHELL: &[&str] = &["PWD", "OLDPWD", "SHLVL", "_"];

fn set_secrets(sandbox: &mut Sandbox) {
    for (name, value) in SECRETS {
        sandbox.set(name, *value);
    }
}

fn assert_no_secret(what: &str, env: &[(String, String)]) {
    for (name, value) in env {
        for (secret_name, secret) in SECRETS {
            assert_ne!(name, secret_name, "{what} got {secret_name}");
            assert!(
                !value.contains(secret),
                "{what} got {secret_name}'s value in {name}"
            );
        }
    }
}

fn names(env: &[(String, String)]) -> Vec<&str> {
    env.iter().map(|(n, _)| n.as_str()).collect()
}

#[test]
fn credential_tools_get_a_minimal_environment_without_secrets() {
    let mut sandbox = Sandbox::new();
    set_secrets(&mut sandbox);
    let azure_config = sandbox.dir.path().join("azure-profile");
    sandbox.set("AZURE_CONFIG_DIR", &azure_config);
    sandbox.set("LANG", "C.UTF-8");
    sandbox.set("no_proxy", "localhost");
    sandbox.set("SOME_UNRELATED_SETTING", "not-for-tools");
    sandbox.az.record_environment();
    sandbox.start_daemon();
    sandbox.token("https://management.azure.com/.default", &[]);

    let env = sandbox
        .az
        .recorded_environment()
        .expect("az ran and recorded its environment");
    assert_no_secret("az", &env);
    let allowed = [
        "PATH",
        "HOME",
        "XDG_STATE_HOME",
        "SSL_CERT_FILE",
        "LANG",
        "no_proxy",
        "AZURE_CONFIG_DIR",
        "AZBROKER_DAEMON_CHILD",
    ];
    for name in names(&env) {
        assert!(
            allowed.contains(&name) || SET_BY_SHELL.contains(&name),
            "az got {name}, which is not on the tools' allowlist: {:?}",
            names(&env)
        );
    }
    let value = |name: &str| {
        env.iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("az did not get {name}: {:?}", names(&env)))
    };
    assert_eq!(value("AZBROKER_DAEMON_CHILD"), "1");
    assert_eq!(value("AZURE_CONFIG_DIR"), azure_config.to_str().unwrap());
    assert_eq!(value("HOME"), sandbox.dir.path().to_str().unwrap());
    assert_eq!(value("LANG"), "C.UTF-8");
    assert!(value("PATH").contains(sandbox.az.dir().to_str().unwrap()));
}

#[test]
fn the_browser_gets_a_minimal_environment_without_secrets() {
    let (mut sandbox, _entra) = login_sandbox();
    let browser = TestBrowser::install(&mut sandbox);
    set_secrets(&mut sandbox);
    sandbox.set("DISPLAY", ":7");
    sandbox.set("AZURE_CONFIG_DIR", sandbox.dir.path().join("azure-profile"));
    sandbox.start_daemon();
    let token = sandbox.token(ARM, &[]);
    assert_eq!(token["credential"], "InteractiveBrowserCredential");
    assert_eq!(browser.invocations(), 1);

    let env = browser.environment();
    assert_no_secret("the browser", &env);
    let env_names = names(&env);
    for expected in ["PATH", "HOME", "DISPLAY", "BROWSER", "SSL_CERT_FILE"] {
        assert!(env_names.contains(&expected), "{expected}: {env_names:?}");
    }
    for absent in [
        "AZURE_CONFIG_DIR",
        "AZBROKER_DAEMON_CHILD",
        "AZBROKER_SOCKET",
        "AZURE_AUTHORITY_HOST",
    ] {
        assert!(!env_names.contains(&absent), "{absent}: {env_names:?}");
    }
}

#[test]
fn secrets_are_wiped_from_the_daemons_own_environment() {
    let mut sandbox = Sandbox::new();
    set_secrets(&mut sandbox);
    let pid = sandbox.start_daemon();
    // Tests run as root, which may read a non-dumpable process's environ.
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let environ = String::from_utf8_lossy(&environ);
    assert!(
        environ.contains("AZBROKER_SOCKET="),
        "not the daemon's environment: {environ:?}"
    );
    for (name, value) in SECRETS {
        assert!(
            !environ.contains(value),
            "{name}'s value is still in the daemon's memory"
        );
    }
    let log = sandbox.log();
    assert!(
        log.contains("removed secret variables") && log.contains("AZURE_CLIENT_SECRET"),
        "{log}"
    );
    for (_, value) in SECRETS {
        assert!(!log.contains(value), "a secret reached the log");
    }
}

/// One HTTP/1.1 GET over a fresh connection: (status, body).
fn http_get(endpoint: &str, target: &str, header: &str) -> (u16, String) {
    let authority = endpoint
        .strip_prefix("http://")
        .and_then(|rest| rest.split('/').next())
        .expect("http://host:port/ endpoint");
    let mut stream = TcpStream::connect(authority).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let request = format!(
        "GET {target} HTTP/1.1\r\nHost: {authority}\r\nX-IDENTITY-HEADER: {header}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {response:?}"));
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, body.to_string())
}

#[test]
fn the_managed_identity_endpoint_still_uses_a_scrubbed_client_secret() {
    let mut sandbox = Sandbox::new();
    let entra = EntraDouble::start(&sandbox.pki);
    let secret = "scrubbed-but-still-used-3f9e";
    entra.register_client("22222222-2222-2222-2222-222222222222", secret);
    sandbox.set("AZURE_TENANT_ID", "11111111-1111-1111-1111-111111111111");
    sandbox.set("AZURE_CLIENT_ID", "22222222-2222-2222-2222-222222222222");
    sandbox.set("AZURE_CLIENT_SECRET", secret);
    sandbox.set("AZURE_AUTHORITY_HOST", entra.authority());
    sandbox.set("AZURE_TOKEN_CREDENTIALS", "EnvironmentCredential");
    let pid = sandbox.start_daemon_with(&["--managed-identity-endpoint"]);
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    assert!(!String::from_utf8_lossy(&environ).contains(secret));

    let identity = sandbox.managed_identity_env();
    let target = format!(
        "/msi/token?{}",
        form_urlencoded::Serializer::new(String::new())
            .append_pair("resource", "https://management.azure.com/")
            .append_pair("api-version", "2019-08-01")
            .finish()
    );
    let (status, body) = http_get(&identity.endpoint, &target, &identity.header);
    assert_eq!(status, 200, "{body}\n{}", sandbox.log());
    assert!(body.contains("access_token"), "{body}");
    assert_eq!(entra.token_requests(), 1);
}

/// Kills the daemon started as `nobody` when the test ends, however it ends.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `azbrokerd` as `nobody` in a directory of its own; returns it and its socket.
fn start_daemon_as_nobody(sandbox: &Sandbox) -> KillOnDrop {
    let home = sandbox.dir.path().join("nobody-home");
    std::fs::create_dir(&home).unwrap();
    std::os::unix::fs::chown(&home, Some(NOBODY), Some(NOBODY)).unwrap();
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();
    let daemon = sandbox.dir.path().join("azbrokerd-for-nobody");
    std::fs::copy(bin("azbrokerd"), &daemon).unwrap();
    std::fs::set_permissions(&daemon, std::fs::Permissions::from_mode(0o755)).unwrap();
    open_path_to(sandbox.dir.path());
    let socket = home.join("azbroker.sock");
    let child = std::process::Command::new(&daemon)
        .args(["--foreground", "--socket"])
        .arg(&socket)
        .args([
            "--imds-endpoint",
            "http://127.0.0.1:1/metadata/identity/oauth2/token",
        ])
        .env_clear()
        .env("HOME", &home)
        .env("XDG_STATE_HOME", home.join("state"))
        .env("AZURE_TOKEN_CREDENTIALS", "dev")
        .env("AZURE_CLIENT_SECRET", "nobody-secret-0c1d")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .uid(NOBODY)
        .gid(NOBODY)
        .spawn()
        .expect("start azbrokerd as nobody");
    let guard = KillOnDrop(child);
    // The socket exists once the daemon is past its start-up hardening.
    wait_until(
        Duration::from_secs(10),
        "azbrokerd (nobody) to listen",
        || socket.exists(),
    );
    guard
}

#[test]
fn the_daemon_cannot_be_dumped_or_read_by_its_own_user() {
    let sandbox = Sandbox::new();
    let daemon = start_daemon_as_nobody(&sandbox);
    let pid = daemon.0.id();
    let proc_dir = format!("/proc/{pid}");
    assert_eq!(
        std::fs::metadata(&proc_dir).unwrap().uid(),
        NOBODY,
        "the daemon runs as nobody"
    );
    // The kernel hands a non-dumpable process's /proc files to root: this is
    // PR_GET_DUMPABLE as others see it.
    let status = std::fs::metadata(format!("{proc_dir}/status")).unwrap();
    assert_eq!(status.uid(), 0, "the daemon is dumpable");
    // Its own user can no longer read its memory's environment (nor ptrace it).
    let out = std::process::Command::new("/bin/cat")
        .arg(format!("{proc_dir}/environ"))
        .env_clear()
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "nobody read the daemon's environ: {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    // And no core file, whatever the signal.
    let limits = std::fs::read_to_string(format!("{proc_dir}/limits")).unwrap();
    let core = limits
        .lines()
        .find(|line| line.starts_with("Max core file size"))
        .expect("a core limit");
    let fields: Vec<&str> = core.split_whitespace().collect();
    assert_eq!(&fields[4..6], ["0", "0"], "{core}");
}

#[test]
fn a_newline_in_the_client_name_forges_no_log_line() {
    let mut sandbox = Sandbox::new();
    sandbox.start_daemon();
    let forged = "2030-01-01T00:00:00.000000Z  INFO azbrokerd: forged line";
    let client = Client::new(ClientOptions {
        socket: sandbox.socket.clone(),
        chain: ChainSpec::from_lookup(|name| {
            (name == "AZURE_TOKEN_CREDENTIALS").then(|| "dev".to_string())
        })
        .unwrap(),
        client_name: format!("evil\n{forged}\r\u{1b}[2K"),
        autostart: false,
        start_with_managed_identity: false,
        request_timeout: Duration::from_secs(60),
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(client.status()).expect("status");
    runtime.block_on(client.shutdown()).expect("shutdown");
    wait_until(Duration::from_secs(10), "the daemon to exit", || {
        sandbox.daemon_pids().is_empty()
    });

    let log = sandbox.log();
    assert!(
        !log.lines().any(|line| line.starts_with(forged)),
        "a client forged a log line:\n{log}"
    );
    // (The log itself is coloured: only the client's own escape sequence must not pass.)
    assert!(
        !log.contains("\u{1b}[2K"),
        "a client's terminal escape reached the log"
    );
    let shutdown = log
        .lines()
        .find(|line| line.contains("shutdown requested"))
        .unwrap_or_else(|| panic!("no shutdown line:\n{log}"));
    assert!(
        shutdown.contains(&format!(r"evil\n{forged}\r\u{{1b}}[2K")),
        "{shutdown}"
    );
}
