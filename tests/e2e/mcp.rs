//! `azbroker-mcp` driven by MCP clients nobody here wrote (the MCP Python SDK
//! from PyPI, the MCP TypeScript SDK from npm), against a real Azure service
//! (Azurite, with HTTPS and bearer-token checks) and the HTTPS Resource
//! Manager double, with tokens from the real daemon and the fake `az`.
//!
//! The clients' scripts live in `tests/mcp/`; `tests/mcp/install` installs
//! their pinned dependencies (`scripts/setup-tests`, which `scripts/test` runs, does). Nothing is skipped: a
//! missing dependency fails the test with the command that installs it.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use azbroker_e2e::arm_double::CAE_CLAIMS;
use azbroker_e2e::diagnose_doubles::closed_port;
use azbroker_e2e::fake_az::{
    DEFAULT_SUBSCRIPTION, DEFAULT_TENANT, SUBSCRIPTION_NAME, USER_OID, USER_UPN,
};
use azbroker_e2e::https_server::HttpsServer;
use azbroker_e2e::jwt::{self, AppClaims};
use azbroker_e2e::{ArmDouble, ArmSubscription, Azurite, Mode, TestPki};
use base64::Engine as _;
use serde_json::{json, Value};

use crate::harness::{bin, wait_until, Sandbox};

const STORAGE: &str = "https://storage.azure.com/.default";
/// The fake `az` takes this long per token, like the real CLI from its warm cache (0.3-0.5 s).
const AZ_DELAY: Duration = Duration::from_millis(300);
/// Longest a client script may run.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(240);

const SUB_DEV: &str = "d0d0d0d0-0000-4000-8000-000000000de5";
const SUB_SHARED: &str = "5a5a5a5a-0000-4000-8000-0000000005a5";
const SUB_PARTNER: &str = "9a9a9a9a-0000-4000-8000-000000000a27";
const OTHER_TENANT: &str = "c0ffee00-0000-4000-8000-00000000beef";

/// `tests/mcp`: the client scripts and their installed dependencies.
fn mcp_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("mcp")
}

const INSTALL_HINT: &str =
    "run scripts/setup-tests (scripts/test does) to install the MCP test dependencies";

/// The interpreter of the venv with the MCP Python SDK; fails if it is missing.
fn python() -> PathBuf {
    let python = mcp_dir().join(".venv/bin/python");
    let has_sdk = python.is_file()
        && Command::new(&python)
            .args(["-c", "import mcp, mcp_types"])
            .output()
            .is_ok_and(|o| o.status.success());
    assert!(
        has_sdk,
        "the MCP Python SDK is not installed in {}: {INSTALL_HINT}",
        python.display()
    );
    python
}

/// `tests/mcp/node_modules` with Azurite and the MCP TypeScript SDK; fails if missing.
fn node_modules() -> PathBuf {
    let modules = mcp_dir().join("node_modules");
    for package in [
        "azurite/package.json",
        "@modelcontextprotocol/sdk/package.json",
    ] {
        assert!(
            modules.join(package).is_file(),
            "{} is missing: {INSTALL_HINT}",
            modules.join(package).display()
        );
    }
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.is_ok_and(|o| o.status.success()),
        "Node.js ('node') is not on PATH: install Node.js, then {INSTALL_HINT}"
    );
    modules
}

/// Runs `command` to completion within `limit`, reading both pipes as it goes.
fn run_with_timeout(mut command: Command, limit: Duration) -> Output {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {command:?}: {e}"));
    let mut pipes = Vec::new();
    for mut pipe in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        pipes.push(std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        }));
    }
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let status = child.wait().unwrap();
            eprintln!("{command:?} killed after {} s", limit.as_secs());
            break status;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = pipes.pop().unwrap().join().unwrap();
    let stdout = pipes.pop().unwrap().join().unwrap();
    Output {
        status,
        stdout,
        stderr,
    }
}

/// A sandbox (daemon environment, fake `az`, test CA), the Resource Manager
/// double with four subscriptions in two tenants, an Azure CLI profile that
/// names the default subscription, and optionally Azurite.
struct World {
    sandbox: Sandbox,
    arm: ArmDouble,
    azurite: Option<Azurite>,
}

impl World {
    fn new() -> World {
        let mut sandbox = Sandbox::new();
        sandbox.az.set_delay(AZ_DELAY);
        let arm = ArmDouble::start(&sandbox.pki);
        // Two per page: three subscriptions and three groups take two pages each.
        arm.set_page_size(2);
        let subscription =
            |id: &str, name: &str, tenant: &str, state: &str, groups: &[(&str, &str)]| {
                ArmSubscription {
                    id: id.into(),
                    display_name: name.into(),
                    tenant: tenant.into(),
                    state: state.into(),
                    groups: groups
                        .iter()
                        .map(|(n, l)| (n.to_string(), l.to_string()))
                        .collect(),
                }
            };
        arm.add_subscription(subscription(
            DEFAULT_SUBSCRIPTION,
            SUBSCRIPTION_NAME,
            DEFAULT_TENANT,
            "Enabled",
            &[("rg-app", "westeurope")],
        ));
        arm.add_subscription(subscription(
            SUB_DEV,
            "Dev Sandbox",
            DEFAULT_TENANT,
            "Enabled",
            &[
                ("rg-dev-web", "westus2"),
                ("rg-dev-data", "westus2"),
                ("rg-dev-net", "eastus"),
            ],
        ));
        arm.add_subscription(subscription(
            SUB_SHARED,
            "Shared Services",
            DEFAULT_TENANT,
            "Disabled",
            &[],
        ));
        arm.add_subscription(subscription(
            SUB_PARTNER,
            "Partner",
            OTHER_TENANT,
            "Enabled",
            &[("rg-partner", "uksouth")],
        ));
        // The Azure CLI's profile (with its byte order mark) makes "Dev Sandbox"
        // the default; AZURE_SUBSCRIPTION_ID is only the fallback.
        let azure_dir = sandbox.dir.path().join(".azure");
        std::fs::create_dir_all(&azure_dir).unwrap();
        let profile = json!({"installationId": "00000000-0000-4000-8000-000000000001", "subscriptions": [
            {"id": DEFAULT_SUBSCRIPTION, "name": SUBSCRIPTION_NAME, "isDefault": false, "tenantId": DEFAULT_TENANT, "state": "Enabled"},
            {"id": SUB_DEV, "name": "Dev Sandbox", "isDefault": true, "tenantId": DEFAULT_TENANT, "state": "Enabled"},
        ]});
        std::fs::write(
            azure_dir.join("azureProfile.json"),
            format!("\u{feff}{profile}"),
        )
        .unwrap();
        sandbox.set("AZURE_SUBSCRIPTION_ID", DEFAULT_SUBSCRIPTION);
        sandbox.set("AZBROKER_ARM_ENDPOINT", arm.endpoint());
        sandbox.set("AZBROKER_MCP_LOG", "info");
        World {
            sandbox,
            arm,
            azurite: None,
        }
    }

    /// Starts Azurite and fills it through its Blob REST API with a token
    /// from the daemon (so the daemon must run), after checking that it
    /// really refuses tokens with a wrong audience or lifetime.
    fn start_azurite(&mut self) {
        let azurite = Azurite::start(&node_modules(), &self.sandbox.pki, self.sandbox.dir.path());
        let token = self.sandbox.token(STORAGE, &[])["accessToken"]
            .as_str()
            .unwrap()
            .to_string();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let wrong_audience = jwt::mint(&AppClaims::new(
            "https://management.azure.com/.default",
            DEFAULT_TENANT,
            "app",
            "oid",
            now,
            3600,
        ));
        let expired = jwt::mint(&AppClaims::new(
            STORAGE,
            DEFAULT_TENANT,
            "app",
            "oid",
            now - 7200,
            3600,
        ));
        let endpoint = azurite.account_endpoint();
        let ca = reqwest::Certificate::from_pem(self.sandbox.pki.ca_pem().as_bytes()).unwrap();
        let client = reqwest::Client::builder()
            .tls_certs_only([ca])
            .build()
            .unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let send = |method: reqwest::Method, url: String, token: &str, body: &'static str| {
                let mut request = client
                    .request(method, url)
                    .bearer_auth(token)
                    .header("x-ms-version", "2024-11-04")
                    .header("x-ms-blob-type", "BlockBlob")
                    .body(body);
                if body.is_empty() {
                    request = request.header("content-length", "0");
                }
                request.send()
            };
            for (bad, why) in [
                (&wrong_audience, "Invalid token audience."),
                (&expired, "Lifetime validation failed"),
            ] {
                let response = send(
                    reqwest::Method::GET,
                    format!("{endpoint}?comp=list"),
                    bad,
                    "",
                )
                .await
                .unwrap();
                assert_eq!(
                    response.status(),
                    403,
                    "Azurite must refuse the token ({why})"
                );
                let text = response.text().await.unwrap();
                assert!(text.contains(why), "Azurite's refusal: {text}");
            }
            for container in ["reports", "logs-2024"] {
                let response = send(
                    reqwest::Method::PUT,
                    format!("{endpoint}/{container}?restype=container"),
                    &token,
                    "",
                )
                .await
                .unwrap();
                assert_eq!(
                    response.status(),
                    201,
                    "creating {container}: {}",
                    response.text().await.unwrap()
                );
            }
            for (name, body) in [
                ("2024/q1.csv", "a,b\n1,2\n3,4"),
                ("2024/q2.csv", "a,b\n5,6\n7,8\n"),
                ("readme.txt", "hello"),
            ] {
                let response = send(
                    reqwest::Method::PUT,
                    format!("{endpoint}/reports/{name}"),
                    &token,
                    body,
                )
                .await
                .unwrap();
                assert_eq!(
                    response.status(),
                    201,
                    "uploading {name}: {}",
                    response.text().await.unwrap()
                );
            }
        });
        self.azurite = Some(azurite);
    }

    /// What the tools must answer in this world.
    fn expect(&self) -> Value {
        let groups = |sub: &str, groups: &[(&str, &str)]| -> Value {
            groups
                .iter()
                .map(|(name, location)| json!({"name": name, "id": format!("/subscriptions/{sub}/resourceGroups/{name}"), "location": location}))
                .collect()
        };
        let sub = |id: &str, name: &str, state: &str, default: bool| json!({"subscriptionId": id, "displayName": name, "state": state, "tenantId": DEFAULT_TENANT, "isDefault": default});
        json!({
            "tenant": DEFAULT_TENANT,
            "user_oid": USER_OID,
            "upn": USER_UPN,
            // The default first, then Resource Manager's order; never another tenant's.
            "subscriptions": [
                sub(SUB_DEV, "Dev Sandbox", "Enabled", true),
                sub(DEFAULT_SUBSCRIPTION, SUBSCRIPTION_NAME, "Enabled", false),
                sub(SUB_SHARED, "Shared Services", "Disabled", false),
            ],
            "default_groups": groups(SUB_DEV, &[("rg-dev-web", "westus2"), ("rg-dev-data", "westus2"), ("rg-dev-net", "eastus")]),
            "named": {"displayName": SUBSCRIPTION_NAME, "groups": groups(DEFAULT_SUBSCRIPTION, &[("rg-app", "westeurope")])},
            "other_tenant": {"subscriptionId": SUB_PARTNER, "tenantId": OTHER_TENANT, "groups": groups(SUB_PARTNER, &[("rg-partner", "uksouth")])},
            "account": self.azurite.as_ref().map(Azurite::account_endpoint),
            "containers": ["logs-2024", "reports"],
            "blobs": {
                "container": "reports",
                "all": ["2024/q1.csv", "2024/q2.csv", "readme.txt"],
                "sizes": {"2024/q1.csv": 11, "2024/q2.csv": 12, "readme.txt": 5},
                "prefix": "2024/",
                "with_prefix": ["2024/q1.csv", "2024/q2.csv"],
            },
            "claims_base64": base64::engine::general_purpose::STANDARD.encode(CAE_CLAIMS),
        })
    }

    /// The command `azbroker mcp-config` registers, which must be the built `azbroker-mcp`.
    fn server_command(&self) -> String {
        let out = self.sandbox.cli(&["mcp-config", "--client", "generic"]);
        assert!(
            out.status.success(),
            "mcp-config: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let snippet: Value = serde_json::from_slice(&out.stdout).unwrap();
        let command = snippet["mcpServers"]["azbroker"]["command"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(
            Path::new(&command),
            bin("azbroker-mcp").canonicalize().unwrap()
        );
        command
    }

    /// Writes the client scripts' configuration and returns its path.
    fn config(&self, extra: Value) -> PathBuf {
        let env: serde_json::Map<String, Value> = self
            .sandbox
            .env()
            .into_iter()
            .map(|(k, v)| (k, Value::String(v.to_string_lossy().into_owned())))
            .collect();
        let mut config = json!({
            "server": {"command": self.server_command(), "args": [], "env": env},
            "expect": self.expect(),
        });
        if let (Value::Object(config), Value::Object(extra)) = (&mut config, extra) {
            config.extend(extra);
        }
        let path = self.sandbox.dir.path().join("mcp-test-config.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
        path
    }

    /// Runs a client script (`python` or `node`) and returns the JSON it printed last.
    fn run_client(&self, program: &Path, script: &str, config: &Path, args: &[&str]) -> Value {
        let mut command = Command::new(program);
        command
            .arg(mcp_dir().join(script))
            .arg(config)
            .args(args)
            .current_dir(mcp_dir())
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", self.sandbox.dir.path())
            .env("PYTHONDONTWRITEBYTECODE", "1");
        let out = run_with_timeout(command, SCRIPT_TIMEOUT);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "{script} {args:?} failed ({}).\n--- stdout\n{stdout}\n--- stderr (client and azbroker-mcp)\n{stderr}\n--- azbrokerd log\n{}",
            out.status,
            self.sandbox.log()
        );
        let last = stdout.lines().last().unwrap_or_default();
        serde_json::from_str(last).unwrap_or_else(|e| {
            panic!("{script} printed no JSON result ({e}):\n{stdout}\n{stderr}")
        })
    }

    fn python(&self, script: &str, config: &Path, args: &[&str]) -> Value {
        self.run_client(&python(), script, config, args)
    }

    /// `(scope, tenant)` of each `az account get-access-token` so far.
    fn acquisitions(&self) -> Vec<String> {
        self.sandbox.az.invocation_args()
    }
}

#[test]
fn mcp_python_sdk_drives_every_tool() {
    let python = python();
    let mut world = World::new();
    world.sandbox.start_daemon();
    world.start_azurite();
    let config = world.config(json!({}));
    let checks = [
        "schemas",
        "measure",
        "auth_status",
        "subscriptions",
        "groups",
        "storage",
        "argument_errors",
        "concurrency",
    ];
    let result = world.run_client(&python, "tools_test.py", &config, &checks);
    eprintln!("tools_test.py: {result}");
    assert_eq!(result["concurrent_calls"], 12);

    // Paging: every list was fetched in pages that followed nextLink.
    let requests = world.arm.requests();
    assert!(
        requests.iter().any(|r| r.target.starts_with("/subscriptions?") && r.target.contains("%24skiptoken=2")),
        "subscription_list followed nextLink: {requests:#?}"
    );
    assert!(
        requests.iter().any(|r| r
            .target
            .starts_with(&format!("/subscriptions/{SUB_DEV}/resourcegroups?"))
            && r.target.contains("%24skiptoken=2")),
        "group_list followed nextLink: {requests:#?}"
    );
    // One login shared by every call: one token per (resource, tenant), however many tool calls.
    let acquisitions = world.acquisitions();
    assert_eq!(
        acquisitions,
        [
            format!("account get-access-token -o json --scope {STORAGE}"),
            "account get-access-token -o json --scope https://management.azure.com/.default".to_string(),
            format!("account get-access-token -o json --scope https://management.azure.com/.default --tenant {OTHER_TENANT}"),
        ],
        "upstream acquisitions"
    );

    // A claims challenge: the MCP server asks the broker with the decoded
    // claims (bypassing its cache); the Azure CLI credential cannot satisfy
    // them and says what to run. No retry without a new token.
    world.arm.challenge_next(1);
    let before = world.arm.requests().len();
    world.python("tools_test.py", &config, &["claims"]);
    let after = world.arm.requests();
    assert_eq!(
        after.len(),
        before + 1,
        "one challenged request, no retry: {:#?}",
        &after[before..]
    );
    assert_eq!(after[before].status, 401);
}

#[test]
fn mcp_broker_and_credential_failures_are_readable_tool_errors() {
    let mut world = World::new();
    // No daemon and autostart off: the server still answers, with the reason.
    world.sandbox.set("AZBROKER_NO_AUTOSTART", "1");
    let config = world.config(json!({}));
    world.python("tools_test.py", &config, &["schemas", "broker_unavailable"]);
    world.sandbox.unset("AZBROKER_NO_AUTOSTART");
    // A typo in the chain selection is reported, not guessed around.
    world
        .sandbox
        .set("AZURE_TOKEN_CREDENTIALS", "AzureCliCredentail");
    let config = world.config(json!({}));
    world.python("tools_test.py", &config, &["bad_chain"]);
    world.sandbox.set("AZURE_TOKEN_CREDENTIALS", "dev");
    assert!(world.sandbox.daemon_pids().is_empty());
    // Nobody signed in: the first tool call starts the daemon, which says so.
    world.sandbox.az.set_mode(Mode::NotLoggedIn);
    let config = world.config(json!({}));
    world.python("tools_test.py", &config, &["not_logged_in"]);
    assert_eq!(
        world.sandbox.daemon_pids().len(),
        1,
        "the first tool call started the daemon"
    );
}

#[test]
fn mcp_eight_clients_share_one_token_acquisition() {
    let world = World::new();
    // Nothing runs and nothing is cached: the eight servers race to start the
    // daemon and to ask it for the same token.
    assert!(world.sandbox.daemon_pids().is_empty());
    let config = world.config(json!({"clients": 8}));
    let result = world.python("shared_test.py", &config, &[]);
    eprintln!("shared_test.py: {result}");
    assert_eq!(result["clients"], 8);
    assert_eq!(
        world.acquisitions(),
        ["account get-access-token -o json --scope https://management.azure.com/.default"],
        "eight clients, one upstream acquisition"
    );
    assert_eq!(
        world.sandbox.daemon_pids().len(),
        1,
        "one daemon for all eight"
    );
    let status = world.sandbox.status();
    assert_eq!(status["counters"]["upstream_acquisitions"], 1, "{status:#}");
    // Every subscription_list fetched two pages with its own GET; all with a token.
    let lists = world
        .arm
        .requests()
        .into_iter()
        .filter(|r| r.target.starts_with("/subscriptions?"))
        .count();
    assert_eq!(lists, 16, "two pages for each of the eight clients");
    eprintln!(
        "measured: 8 clients, upstream acquisitions: {}, per-client start to tools/list (ms): {}, subscription_list (ms): {}",
        status["counters"]["upstream_acquisitions"], result["startup_ms"], result["call_ms"]
    );
}

#[test]
fn mcp_node_sdk_exchange() {
    let _ = node_modules();
    let mut world = World::new();
    world.sandbox.start_daemon();
    let config = world.config(json!({}));
    let result = world.run_client(Path::new("node"), "node_exchange.mjs", &config, &[]);
    assert_eq!(result["tools"], 5, "{result}");
}

/// `azbroker-mcp` on stdio, spoken to in raw JSON-RPC lines: every line on
/// its stdout must be an MCP message.
struct RawSession {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    reader: Option<std::thread::JoinHandle<()>>,
    /// Messages read so far.
    seen: usize,
}

impl RawSession {
    fn start(world: &World) -> RawSession {
        let mut child = Command::new(world.server_command())
            .env_clear()
            .envs(world.sandbox.env())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let (lines_tx, lines) = mpsc::channel::<String>();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let reader = std::thread::spawn(move || {
            for line in stdout.lines() {
                let Ok(line) = line else { break };
                let _ = lines_tx.send(line);
            }
        });
        RawSession {
            child,
            stdin,
            lines,
            reader: Some(reader),
            seen: 0,
        }
    }

    fn send(&mut self, message: Value) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{message}").unwrap();
        stdin.flush().unwrap();
    }

    /// Reads messages until the answer to request `id`.
    fn reply(&mut self, id: u64) -> Value {
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(60))
                .expect("an answer from azbroker-mcp");
            let message: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("not JSON on stdout ({e}): {line:?}"));
            assert_eq!(message["jsonrpc"], "2.0", "{line}");
            self.seen += 1;
            if message["id"] == id {
                return message;
            }
        }
    }

    fn initialize(&mut self) -> Value {
        self.send(json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}}}));
        let init = self.reply(1);
        self.send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
        init
    }

    /// Calls `tool`: whether the result is an error, and its envelope.
    fn call(&mut self, id: u64, tool: &str, arguments: Value) -> (bool, Value) {
        self.send(json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": tool, "arguments": arguments}}));
        let answer = self.reply(id);
        let text = answer["result"]["content"][0]["text"]
            .as_str()
            .unwrap_or_else(|| panic!("no text result: {answer}"));
        let envelope = serde_json::from_str(text).unwrap();
        (answer["result"]["isError"] == true, envelope)
    }

    /// Closes stdin and waits for a clean exit; returns what the server
    /// logged on stderr after checking that stdout carried only MCP.
    fn finish(mut self) -> String {
        drop(self.stdin.take());
        let status = self.child.wait().unwrap();
        self.reader.take().unwrap().join().unwrap();
        assert!(
            status.success(),
            "azbroker-mcp exits cleanly when stdin closes: {status}"
        );
        for line in self.lines.try_iter() {
            let message: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("not JSON on stdout ({e}): {line:?}"));
            assert_eq!(message["jsonrpc"], "2.0", "{line}");
        }
        let mut stderr = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        stderr
    }
}

#[test]
fn mcp_stdout_carries_only_mcp_messages_and_the_broker_is_reached_lazily() {
    let world = World::new();
    let mut session = RawSession::start(&world);
    let started = Instant::now();
    let init = session.initialize();
    assert_eq!(
        init["result"]["serverInfo"]["name"], "azbroker-mcp",
        "{init}"
    );
    session.send(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}));
    let tools = session.reply(2);
    let first_tools_list = started.elapsed();
    assert_eq!(
        tools["result"]["tools"].as_array().unwrap().len(),
        5,
        "{tools}"
    );
    // Nothing has needed a token yet: no daemon was started.
    assert!(
        world.sandbox.daemon_pids().is_empty(),
        "azbroker-mcp reached the broker before a tool call"
    );

    let (failed, body) = session.call(3, "subscription_list", json!({}));
    assert!(!failed, "{body}");
    assert_eq!(body["status"], 200);
    assert_eq!(
        body["results"]["subscriptions"].as_array().unwrap().len(),
        3
    );
    wait_until(Duration::from_secs(5), "the autostarted daemon", || {
        world.sandbox.daemon_pids().len() == 1
    });

    let seen = session.seen;
    let stderr = session.finish();
    assert!(
        !stderr.contains("eyJ0eXAi"),
        "a token in the logs: {stderr}"
    );
    eprintln!(
        "raw client: start to first tools/list answer {first_tools_list:?} ({seen} replies read)"
    );
}

/// A Blob service that refuses every listing the way Azure Storage does:
/// under `/firewalled` with its network rules' 403, elsewhere with the 403 of
/// a missing data role.
fn refusing_storage(pki: &TestPki) -> HttpsServer {
    HttpsServer::start(
        "refusing storage",
        pki.server_config(),
        Arc::new(|request| {
            let (code, message) = if request.uri().path().starts_with("/firewalled") {
                (
                    "AuthorizationFailure",
                    "This request is not authorized to perform this operation.",
                )
            } else {
                (
                    "AuthorizationPermissionMismatch",
                    "This request is not authorized to perform this operation using this permission.",
                )
            };
            let body = format!(
                "\u{feff}<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>{code}</Code><Message>{message}\nRequestId:r-1\nTime:2026-01-01T00:00:00.0000000Z</Message></Error>"
            );
            hyper::Response::builder()
                .status(403)
                .header("content-type", "application/xml")
                .header("x-ms-error-code", code)
                .body(http_body_util::Full::new(hyper::body::Bytes::from(body)))
                .unwrap()
        }),
    )
}

#[test]
fn mcp_storage_refusals_and_network_errors_say_what_to_do() {
    let mut world = World::new();
    world.sandbox.start_daemon();
    let storage = refusing_storage(&world.sandbox.pki);
    let mut session = RawSession::start(&world);
    session.initialize();
    let account = |path: &str| format!("https://{}/{path}", storage.addr());

    let (failed, firewalled) = session.call(
        2,
        "storage_container_list",
        json!({"account": account("firewalled")}),
    );
    assert!(failed, "{firewalled}");
    assert_eq!(firewalled["status"], 403);
    let message = firewalled["message"].as_str().unwrap();
    assert!(message.contains("network rules"), "{message}");
    assert!(!message.contains("needs a data role"), "{message}");
    assert!(message.ends_with("(AuthorizationFailure)"), "{message}");

    let (failed, no_role) = session.call(
        3,
        "storage_container_list",
        json!({"account": account("norole")}),
    );
    assert!(failed, "{no_role}");
    let message = no_role["message"].as_str().unwrap();
    assert!(message.contains("Storage Blob Data Reader"), "{message}");
    assert!(!message.contains("network rules"), "{message}");

    // Nothing listens: the remedy names this port and where azbroker-mcp's settings live.
    let port = closed_port();
    let (failed, refused) = session.call(
        4,
        "storage_container_list",
        json!({"account": format!("https://127.0.0.1:{port}/devstoreaccount1")}),
    );
    assert!(failed, "{refused}");
    assert_eq!(refused["status"], 503);
    assert_eq!(refused["results"]["type"], "HttpRequestException");
    let message = refused["message"].as_str().unwrap();
    assert!(message.contains("Connection refused"), "{message}");
    assert!(
        message.contains(&format!("TCP {port} (HTTPS)")),
        "{message}"
    );
    assert!(
        message.contains("configuration of azbroker-mcp"),
        "{message}"
    );
    assert!(message.contains("azbroker diagnose"), "{message}");
    session.finish();
}

#[test]
fn mcp_config_prints_client_snippets() {
    let mut sandbox = Sandbox::new();
    sandbox.set("AZURE_TOKEN_CREDENTIALS", "AzureCliCredential");
    sandbox.set("AZURE_CLIENT_SECRET", "must-not-be-printed");
    let server = bin("azbroker-mcp").canonicalize().unwrap();
    let snippet = |client: &str| -> Value {
        let out = sandbox.cli(&["mcp-config", "--client", client]);
        assert!(
            out.status.success(),
            "{client}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(
            !text.contains("must-not-be-printed"),
            "a secret in the snippet: {text}"
        );
        serde_json::from_str(&text).unwrap()
    };
    let env = json!({
        "AZBROKER_SOCKET": sandbox.socket.to_str().unwrap(),
        "AZURE_TOKEN_CREDENTIALS": "AzureCliCredential",
    });
    assert_eq!(
        snippet("vscode"),
        json!({"servers": {"azbroker": {"type": "stdio", "command": server, "args": [], "env": env}}})
    );
    assert_eq!(
        snippet("claude"),
        json!({"mcpServers": {"azbroker": {"command": server, "args": [], "env": env}}})
    );
    assert_eq!(
        snippet("generic"),
        json!({"mcpServers": {"azbroker": {"type": "stdio", "command": server, "args": [], "env": env}}})
    );
    let bad = sandbox.cli(&["mcp-config", "--client", "emacs"]);
    assert_eq!(bad.status.code(), Some(2));
}
