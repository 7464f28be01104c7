//! MCP servers nobody here wrote (issue 14 §6): a Python one on the MCP SDK's
//! FastMCP with azure-identity and azure-storage-blob, a TypeScript one on the
//! MCP TypeScript SDK with @azure/identity (run by tsx). The MCP Python SDK's
//! client starts each the way an MCP host would, through
//! `azbroker exec --name NAME`, with a minimal `PATH` and no shim set up by
//! hand: their SDKs must reach the broker through the shim that exec puts
//! first, share its tokens across NAMEs, and get only what their NAME allows.
//!
//! Servers and client: `tests/mcp/third_party/`; their pinned dependencies
//! are installed by `tests/mcp/install` (`scripts/setup-tests` runs it) into
//! `tests/mcp/.venv` and `tests/mcp/node_modules`.

use std::io::Read as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use azbroker_e2e::fake_az::{DEFAULT_TENANT, USER_OID};
use azbroker_e2e::jwt::{self, AppClaims};
use azbroker_e2e::Azurite;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

use crate::harness::{bin, wait_until, Sandbox};

const ARM: &str = "https://management.azure.com/.default";
const STORAGE: &str = "https://storage.azure.com/.default";
/// Longest the client may run, servers' start-up included (it gives up at 120 s itself).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(150);
/// How long a server may outlive its client before it counts as leaked.
const SERVER_EXIT_TIMEOUT: Duration = Duration::from_secs(15);

const INSTALL_HINT: &str = "run scripts/setup-tests to install the MCP test dependencies";

fn mcp_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("mcp")
}

/// `tests/mcp/.venv`'s interpreter: the MCP SDK (client and server) and the Azure SDK.
fn venv_python() -> PathBuf {
    let python = mcp_dir().join(".venv/bin/python");
    let ready = Command::new(&python)
        .args([
            "-c",
            "import mcp.server.mcpserver, azure.identity, azure.storage.blob",
        ])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ready,
        "{} lacks the MCP or Azure SDK: {INSTALL_HINT}",
        python.display()
    );
    python
}

/// `node` by absolute path (the servers' `PATH` need not hold it), with the
/// TypeScript server's packages installed.
fn node() -> PathBuf {
    for package in [
        "tsx",
        "@azure/identity",
        "@modelcontextprotocol/sdk",
        "azurite",
    ] {
        let manifest = mcp_dir()
            .join("node_modules")
            .join(package)
            .join("package.json");
        assert!(
            manifest.is_file(),
            "{} is missing: {INSTALL_HINT}",
            manifest.display()
        );
    }
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|dir| dir.join("node"))
        .find(|path| path.is_file())
        .expect("Node.js ('node') on PATH")
}

/// An MCP host's server entry: COMMAND through `azbroker exec EXEC_ARGS`, with
/// only the fake `az` and the system directories on `PATH`.
fn entry(sandbox: &Sandbox, exec_args: &[&str], command: &[String]) -> Value {
    let mut args = vec!["exec"];
    args.extend(exec_args);
    args.push("--");
    args.extend(command.iter().map(String::as_str));
    json!({
        "command": bin("azbroker"),
        "args": args,
        "env": {
            "PATH": format!("{}:/usr/bin:/bin", sandbox.az.dir().display()),
            "HOME": sandbox.dir.path(),
            "AZBROKER_SOCKET": sandbox.socket,
            // The test started the daemon; none with real endpoints may start.
            "AZBROKER_NO_AUTOSTART": "1",
            // Developer credentials only: the SDKs never probe for a managed identity.
            "AZURE_TOKEN_CREDENTIALS": "dev",
            // Azurite's certificate (Python's requests reads its own variable).
            "REQUESTS_CA_BUNDLE": sandbox.pki.ca_pem_path(),
            "PYTHONDONTWRITEBYTECODE": "1",
        },
        // Where `node --import tsx` finds tsx.
        "cwd": mcp_dir(),
    })
}

fn python_server(sandbox: &Sandbox, exec_args: &[&str]) -> Value {
    let script = mcp_dir().join("third_party/python_server.py");
    let command = [venv_python(), script].map(|p| p.display().to_string());
    entry(sandbox, exec_args, &command)
}

fn typescript_server(sandbox: &Sandbox, exec_args: &[&str]) -> Value {
    let script = mcp_dir().join("third_party/typescript_server.ts");
    let command = [
        node().display().to_string(),
        "--import".into(),
        "tsx".into(),
        script.display().to_string(),
    ];
    entry(sandbox, exec_args, &command)
}

/// One tool call's answer: whether it is an error, and its text.
struct Answer {
    is_error: bool,
    text: String,
}

impl Answer {
    /// The JSON of a call that must have succeeded.
    fn ok(&self) -> Value {
        assert!(!self.is_error, "the tool failed: {}", self.text);
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("{e}: {}", self.text))
    }
}

/// Runs `client.py` with `servers` and `calls` (all made at once once every
/// server is up); returns each call's answer. Fails if the client hangs or
/// a server outlives it.
fn run_client(sandbox: &Sandbox, servers: Value, calls: Value) -> Vec<Answer> {
    let config = sandbox.dir.path().join("third-party-client.json");
    let body = json!({"servers": servers, "calls": calls});
    std::fs::write(&config, serde_json::to_vec_pretty(&body).unwrap()).unwrap();
    let mut child = Command::new(venv_python())
        .arg(mcp_dir().join("third_party/client.py"))
        .arg(&config)
        .current_dir(mcp_dir())
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", sandbox.dir.path())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        // Its own process group, so a stray server can be found and killed.
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the MCP client");
    let group = nix::unistd::Pid::from_raw(child.id() as i32);
    // The servers write to the client's stderr: it closes when the last one exits.
    let read = |mut pipe: Box<dyn std::io::Read + Send>| {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            let _ = tx.send(text);
        });
        rx
    };
    let stdout = read(Box::new(child.stdout.take().unwrap()));
    let stderr = read(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + CLIENT_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let kill_group = || {
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
    };
    if status.is_none() {
        kill_group();
        let _ = child.wait();
    }
    let stderr = stderr.recv_timeout(SERVER_EXIT_TIMEOUT);
    // Only a live member keeps the group (and so its id) in use.
    let leaked = stderr.is_err();
    if leaked {
        kill_group();
    }
    let stderr = stderr.unwrap_or_default();
    let stdout = stdout.recv_timeout(SERVER_EXIT_TIMEOUT).unwrap_or_default();
    let Some(status) = status else {
        panic!(
            "the MCP client hung; killed.\n{stderr}\n--- azbrokerd log\n{}",
            sandbox.log()
        );
    };
    assert!(!leaked, "a server outlived its MCP client");
    assert!(
        status.success(),
        "the MCP client failed ({status}).\n--- stdout\n{stdout}\n--- stderr (client and servers)\n{stderr}\n--- azbrokerd log\n{}",
        sandbox.log()
    );
    let answers: Vec<Value> = serde_json::from_str(stdout.trim()).expect("the client's JSON");
    answers
        .into_iter()
        .map(|a| Answer {
            is_error: a["is_error"].as_bool().unwrap(),
            text: a["text"].as_str().unwrap().to_string(),
        })
        .collect()
}

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `azbroker audit --json --name NAME`: each record's outcome and executable.
fn audited(sandbox: &Sandbox, name: &str) -> Vec<(String, String)> {
    crate::audit::audit(sandbox, &["--name", name])
        .iter()
        .map(|record| {
            assert_eq!(record["name"], name, "{record}");
            let field = |key: &str| record[key].as_str().unwrap_or_default().to_string();
            (field("outcome"), field("exe"))
        })
        .collect()
}

fn outcomes(records: &[(String, String)]) -> Vec<&str> {
    let mut outcomes: Vec<&str> = records.iter().map(|(o, _)| o.as_str()).collect();
    outcomes.sort_unstable();
    outcomes
}

#[test]
fn third_party_python_and_typescript_servers_under_two_names_share_one_acquisition() {
    let mut sandbox = Sandbox::new();
    // As slow as the real CLI from its cache: both servers' requests overlap.
    sandbox.az.set_delay(Duration::from_millis(300));
    sandbox.start_daemon();
    let servers = json!({
        "python": python_server(&sandbox, &["--name", "python-agent"]),
        "typescript": typescript_server(&sandbox, &["--name", "typescript-agent"]),
    });
    let calls = json!([
        {"server": "python", "tool": "token_claims", "arguments": {"scope": ARM}},
        {"server": "typescript", "tool": "token_claims", "arguments": {"scope": ARM}},
    ]);
    let answers = run_client(&sandbox, servers, calls);
    // exec installed the shim it put first on their PATH.
    assert!(sandbox
        .dir
        .path()
        .join(".local/share/azbroker/shim/az")
        .exists());
    // One run, by the daemon (the SDKs would ask with `--output json --resource`).
    assert_eq!(
        sandbox.az.invocation_args(),
        [format!("account get-access-token -o json --scope {ARM}")],
        "one az run for both servers"
    );

    // Both hold the broker's one token (a cache hit here; compared by digest only).
    let digest = sha256_hex(&sandbox.raw_token(ARM));
    for (server, answer) in ["python", "typescript"].iter().zip(&answers) {
        let claims = answer.ok();
        assert_eq!(claims["sha256"], digest.as_str(), "{server}: {claims}");
        assert_eq!(claims["aud"], "https://management.azure.com", "{server}");
        assert_eq!(claims["tid"], DEFAULT_TENANT, "{server}");
        assert_eq!(claims["oid"], USER_OID, "{server}");
    }
    assert_eq!(sandbox.az.invocations(), 1);
    // The audit names each server's request: one acquired it, the other
    // was served the same token (its acquisition or the cache).
    let python = audited(&sandbox, "python-agent");
    let typescript = audited(&sandbox, "typescript-agent");
    assert_eq!((python.len(), typescript.len()), (1, 1));
    let mut both = [python[0].0.as_str(), typescript[0].0.as_str()];
    both.sort_unstable();
    assert_eq!(both, ["acquired", "hit"]);
}

/// Fills Azurite with the container `reports` through its Blob REST API,
/// with a storage token minted here (the broker's cache stays empty).
fn fill_azurite(sandbox: &Sandbox, azurite: &Azurite, blobs: &[&str]) {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let token = jwt::mint(&AppClaims::new(
        STORAGE,
        DEFAULT_TENANT,
        "app",
        "oid",
        now,
        3600,
    ));
    let ca = reqwest::Certificate::from_pem(sandbox.pki.ca_pem().as_bytes()).unwrap();
    let client = reqwest::Client::builder()
        .tls_certs_only([ca])
        .build()
        .unwrap();
    let endpoint = azurite.account_endpoint();
    let mut urls = vec![format!("{endpoint}/reports?restype=container")];
    urls.extend(blobs.iter().map(|b| format!("{endpoint}/reports/{b}")));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        for url in urls {
            let response = client
                .put(&url)
                .bearer_auth(&token)
                .header("x-ms-version", "2024-11-04")
                .header("x-ms-blob-type", "BlockBlob")
                .body("a,b\n1,2\n")
                .send()
                .await
                .unwrap();
            assert_eq!(
                response.status(),
                201,
                "PUT {url}: {:?}",
                response.text().await
            );
        }
    });
}

#[test]
fn third_party_server_limited_to_storage_is_refused_resource_manager_and_lists_blobs() {
    let mut sandbox = Sandbox::new();
    sandbox.start_daemon();
    // A logged-in azd on the server's PATH: the chain it was given ("dev")
    // would fall through to it from a refused az, past the policy.
    let azd = sandbox.install_azd();
    node(); // Node.js and Azurite are there
    let azurite = Azurite::start(
        &mcp_dir().join("node_modules"),
        &sandbox.pki,
        sandbox.dir.path(),
    );
    let blobs = ["2024/q1.csv", "readme.txt"];
    fill_azurite(&sandbox, &azurite, &blobs);

    let limited = [
        "--name",
        "storage-agent",
        "--allow-scope",
        "https://storage.azure.com/*",
    ];
    let servers = json!({"storage": python_server(&sandbox, &limited)});
    let calls = json!([
        {"server": "storage", "tool": "token_claims", "arguments": {"scope": ARM}},
        {"server": "storage", "tool": "blob_list",
         "arguments": {"account_url": azurite.account_endpoint(), "container": "reports"}},
        // A child that cleared its environment is still the NAME's.
        {"server": "storage", "tool": "child_token",
         "arguments": {"resource": "https://management.azure.com/"}},
        {"server": "storage", "tool": "child_token",
         "arguments": {"resource": "https://storage.azure.com/"}},
    ]);
    let answers = run_client(&sandbox, servers, calls);

    // The MCP client sees a tool error that names the NAME and the scope.
    let refused = &answers[0];
    assert!(refused.is_error, "{}", refused.text);
    assert!(
        refused.text.contains("'storage-agent'") && refused.text.contains(ARM),
        "{}",
        refused.text
    );
    // Azurite (--oauth basic) listed the blobs for the broker's storage token.
    assert_eq!(answers[1].ok(), json!({"blobs": blobs}));
    // The env -i child: refused Resource Manager under the NAME, served storage.
    let child_arm = answers[2].ok();
    assert_eq!(child_arm["exit"], 1, "{child_arm}");
    assert!(
        child_arm["stderr"]
            .as_str()
            .unwrap()
            .contains("'storage-agent'"),
        "{child_arm}"
    );
    let child_storage = answers[3].ok();
    assert_eq!(child_storage["exit"], 0, "{child_storage}");
    assert_eq!(child_storage["claims"]["aud"], "https://storage.azure.com");
    // Nor did it reach azd: exec pinned the chain to the broker's door.
    assert_eq!(azd.invocations(), 0);
    // The audit: both refusals and both storage tokens under the NAME, all
    // through the shim (the SDK's az, the child's az).
    let records = audited(&sandbox, "storage-agent");
    assert_eq!(outcomes(&records), ["acquired", "denied", "denied", "hit"]);
    for (_, exe) in &records {
        assert!(exe.ends_with("azbroker-az-shim"), "{records:?}");
    }
    // ...and never a token: the one it was given is nowhere in the file.
    let token = sandbox.raw_token(STORAGE);
    let file = sandbox.dir.path().join("state/azbroker/audit.jsonl");
    wait_until(Duration::from_secs(10), "the audit file", || {
        std::fs::read_to_string(&file).is_ok_and(|text| text.lines().count() >= 5)
    });
    let written = std::fs::read_to_string(&file).unwrap();
    assert!(written.contains("storage-agent"));
    assert!(
        !written.contains(token.rsplit('.').next().unwrap()),
        "a token is in the audit file"
    );
    // The refused request never reached az; the storage token cost one run.
    assert_eq!(
        sandbox.az.invocation_args(),
        [format!(
            "account get-access-token -o json --scope {STORAGE}"
        )]
    );
}
