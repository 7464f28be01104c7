//! The `az` token shim: real Azure SDK clients (Python azure-identity) get the
//! broker's token through it, other commands reach the real `az` unchanged,
//! and neither the daemon nor the shim can recurse into each other.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use azbroker_e2e::fake_az::{
    DEFAULT_SUBSCRIPTION, DEFAULT_TENANT, NOT_LOGGED_IN, SUBSCRIPTION_NAME,
};
use azbroker_e2e::{jwt, Mode};
use azbroker_proto::shim::DAEMON_CHILD_ENV;
use serde_json::Value;

use crate::harness::{bin, Sandbox};
use crate::login_support::{TestBrowser, DEVELOPER_CLIENT_ID};

const ARM: &str = "https://management.azure.com/.default";
/// The Azure MCP Server's exact command line.
const MCP_ARGS: [&str; 6] = [
    "account",
    "get-access-token",
    "--output",
    "json",
    "--resource",
    "https://management.azure.com/",
];

/// A sandbox with the shim installed and first on `PATH` for every process,
/// the daemon included (the recursion setup), then the fake `az`.
fn sandbox_with_shim() -> (Sandbox, PathBuf) {
    let mut sandbox = Sandbox::new();
    let shim = sandbox.install_shim();
    let path = sandbox.path_with_first(&[&shim]);
    sandbox.set("PATH", path);
    (sandbox, shim)
}

fn az(sandbox: &Sandbox, shim: &Path, args: &[&str]) -> Output {
    sandbox
        .command_for(shim.join("az"))
        .args(args)
        .output()
        .expect("run the shim")
}

fn stdout_json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

#[test]
fn python_azure_cli_credential_gets_the_brokers_token_through_the_shim() {
    let (mut sandbox, shim) = sandbox_with_shim();
    sandbox.start_daemon();
    sandbox.az.record_environment();
    let out = sandbox.python("cli_credential.py", &[ARM], &[]);
    let json = stdout_json(&out);
    let token = json["token"].as_str().expect("token");
    // The very token the broker caches: the CLI gets it without another `az` run.
    assert_eq!(token, sandbox.raw_token(ARM));
    assert_eq!(
        json["expires_on"].as_i64(),
        jwt::decode_claims(token).unwrap()["exp"].as_i64()
    );
    // Python asked `--resource` of the shim; the fake `az` saw only the daemon's
    // own `--scope` form, once: the daemon reached the real (fake) CLI although
    // the shim is first on its PATH.
    assert_eq!(
        sandbox.az.invocation_args(),
        [format!("account get-access-token -o json --scope {ARM}")]
    );
    // The real CLI ran with the requester's PATH (the shim's caller had the
    // shim first), its own directory first and no shim directory in it.
    let env = sandbox
        .az
        .recorded_environment()
        .expect("az recorded its environment");
    let path = &env.iter().find(|(k, _)| k == "PATH").expect("a PATH").1;
    assert!(
        path.starts_with(&*sandbox.az.dir().to_string_lossy()),
        "{path}"
    );
    assert!(!path.contains(&*shim.to_string_lossy()), "{path}");

    // A tenant from the SDK goes through the shim's --tenant to the broker.
    let tenant = "72f988bf-86f1-41af-91ab-2d7cd011db47";
    let json = stdout_json(&sandbox.python("cli_credential.py", &[ARM, tenant], &[]));
    let claims = jwt::decode_claims(json["token"].as_str().unwrap()).unwrap();
    assert_eq!(claims["tid"], tenant);
}

#[test]
fn python_sees_a_missing_login_as_unavailable() {
    let (mut sandbox, _shim) = sandbox_with_shim();
    sandbox.az.set_mode(Mode::NotLoggedIn);
    sandbox.start_daemon();
    let out = sandbox.python("cli_credential.py", &[ARM], &[]);
    assert_eq!(out.status.code(), Some(1));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    // The class DefaultAzureCredential skips to the next credential on.
    assert_eq!(json["error"], "CredentialUnavailableError", "{json}");
}

#[test]
fn the_shim_prints_the_cli_json_byte_for_byte() {
    let (mut sandbox, shim) = sandbox_with_shim();
    sandbox.start_daemon();
    // POSIX TZ string: local time is UTC+05:30, whatever tzdata the machine has.
    sandbox.set("TZ", "IST-5:30");
    sandbox.set("AZURE_SUBSCRIPTION_ID", DEFAULT_SUBSCRIPTION);
    let out = az(&sandbox, &shim, &MCP_ARGS);
    let json = stdout_json(&out);
    let token = json["accessToken"].as_str().unwrap();
    let expires_on = json["expires_on"].as_i64().unwrap();
    let local = time::OffsetDateTime::from_unix_timestamp(expires_on)
        .unwrap()
        .to_offset(time::macros::offset!(+5:30))
        .format(time::macros::format_description!(
            "[year]-[month]-[day] [hour]:[minute]:[second].000000"
        ))
        .unwrap();
    assert_eq!(
        String::from_utf8(out.stdout.clone()).unwrap(),
        format!(
            "{{\n  \"accessToken\": \"{token}\",\n  \"expiresOn\": \"{local}\",\n  \
             \"expires_on\": {expires_on},\n  \"subscription\": \"{DEFAULT_SUBSCRIPTION}\",\n  \
             \"tenant\": \"{DEFAULT_TENANT}\",\n  \"tokenType\": \"Bearer\"\n}}\n"
        )
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(token, sandbox.raw_token(ARM));

    // --tenant: no subscription, the tenant as asked; flags in any order, --opt=value.
    let tenant = "00000000-1111-2222-3333-444444444444";
    let json = stdout_json(&az(
        &sandbox,
        &shim,
        &[
            "account",
            "get-access-token",
            "-t",
            tenant,
            "--scope=https://vault.azure.net/.default",
            "-o",
            "json",
        ],
    ));
    let keys: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "accessToken",
            "expiresOn",
            "expires_on",
            "tenant",
            "tokenType"
        ]
    );
    assert_eq!(json["tenant"], tenant);
    let claims = jwt::decode_claims(json["accessToken"].as_str().unwrap()).unwrap();
    assert_eq!(claims["aud"], "https://vault.azure.net");
    assert_eq!(claims["tid"], tenant);

    // --output none acquires and prints nothing.
    let out = az(
        &sandbox,
        &shim,
        &["account", "get-access-token", "-o", "none"],
    );
    assert!(out.status.success() && out.stdout.is_empty());
}

#[test]
fn subscriptions_come_from_the_cli_profile() {
    let (mut sandbox, shim) = sandbox_with_shim();
    let other_tenant = "bbbbbbbb-0000-4000-8000-000000000002";
    let other_subscription = "22222222-0000-4000-8000-000000000002";
    let profile = format!(
        "\u{feff}{{\"installationId\": \"x\", \"subscriptions\": [\
         {{\"id\": \"{DEFAULT_SUBSCRIPTION}\", \"name\": \"{SUBSCRIPTION_NAME}\", \"isDefault\": true, \"tenantId\": \"{DEFAULT_TENANT}\"}},\
         {{\"id\": \"{other_subscription}\", \"name\": \"Other\", \"isDefault\": false, \"tenantId\": \"{other_tenant}\"}}]}}"
    );
    let azure_dir = sandbox.dir.path().join(".azure");
    std::fs::create_dir_all(&azure_dir).unwrap();
    std::fs::write(azure_dir.join("azureProfile.json"), profile).unwrap();
    sandbox.start_daemon();

    let json = stdout_json(&az(&sandbox, &shim, &MCP_ARGS));
    assert_eq!(json["subscription"], DEFAULT_SUBSCRIPTION);
    // A subscription by name picks its account, hence its tenant.
    let json = stdout_json(&az(
        &sandbox,
        &shim,
        &[
            "account",
            "get-access-token",
            "--subscription",
            "other",
            "--resource",
            "https://management.azure.com/",
        ],
    ));
    assert_eq!(json["subscription"], other_subscription);
    assert_eq!(json["tenant"], other_tenant);
    let out = az(
        &sandbox,
        &shim,
        &["account", "get-access-token", "--subscription", "nope"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "ERROR: Subscription 'nope' not found. Check the spelling and casing and try again.\n"
    );
}

#[test]
fn the_shim_never_opens_a_browser_and_fails_like_the_cli() {
    // The plain default chain (InteractiveBrowser last), no usable `az`, and
    // a browser that would sign in at once if it were opened.
    let (mut sandbox, shim) = sandbox_with_shim();
    sandbox.unset("AZURE_TOKEN_CREDENTIALS");
    let entra = azbroker_e2e::EntraDouble::start(&sandbox.pki);
    entra.register_public_client(DEVELOPER_CLIENT_ID);
    sandbox.set("AZURE_AUTHORITY_HOST", entra.authority());
    let browser = TestBrowser::install(&mut sandbox);
    sandbox.az.set_mode(Mode::NotLoggedIn);
    sandbox.start_daemon();

    let started = std::time::Instant::now();
    let out = az(&sandbox, &shim, &MCP_ARGS);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.starts_with("ERROR: Please run 'az login' to setup account.\n"),
        "{stderr}"
    );
    // Python's AzureCliCredential reads that as "unavailable": the SDK's
    // chain moves on instead of waiting for a sign-in.
    let out = sandbox.python("cli_credential.py", &[ARM], &[]);
    assert_eq!(out.status.code(), Some(1));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["error"], "CredentialUnavailableError", "{json}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(browser.invocations(), 0, "the shim opened a browser");

    // The same daemon does sign in for a client that may ask the user (so
    // the browser above was there to be opened), and the shim is then
    // served from that login without another browser.
    let token = sandbox.raw_token(ARM);
    assert_eq!(browser.invocations(), 1);
    let json = stdout_json(&az(&sandbox, &shim, &MCP_ARGS));
    assert_eq!(json["accessToken"], token.as_str());
    assert_eq!(browser.invocations(), 1);
}

#[test]
fn without_a_known_subscription_the_field_is_left_out_like_the_cli() {
    // No CLI profile and no AZURE_SUBSCRIPTION_ID: nothing names a
    // subscription, so the output has none (never the tenant dressed up as one).
    let (mut sandbox, shim) = sandbox_with_shim();
    sandbox.start_daemon();
    let json = stdout_json(&az(&sandbox, &shim, &MCP_ARGS));
    let keys: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "accessToken",
            "expiresOn",
            "expires_on",
            "tenant",
            "tokenType"
        ]
    );
    assert_eq!(json["tenant"], DEFAULT_TENANT);

    // A tenant-level account (`az login --allow-no-subscriptions`) is an
    // entry whose id is the tenant's: the CLI prints it, and so does the shim.
    let azure_dir = sandbox.dir.path().join(".azure");
    std::fs::create_dir_all(&azure_dir).unwrap();
    std::fs::write(
        azure_dir.join("azureProfile.json"),
        format!(
            "{{\"subscriptions\": [{{\"id\": \"{DEFAULT_TENANT}\", \"name\": \"N/A(tenant level account)\", \
             \"isDefault\": true, \"tenantId\": \"{DEFAULT_TENANT}\"}}]}}"
        ),
    )
    .unwrap();
    let json = stdout_json(&az(&sandbox, &shim, &MCP_ARGS));
    assert_eq!(json["subscription"], DEFAULT_TENANT);
}

#[test]
fn errors_read_like_the_cli() {
    let (mut sandbox, shim) = sandbox_with_shim();
    sandbox.az.set_mode(Mode::NotLoggedIn);
    sandbox.start_daemon();
    let out = az(&sandbox, &shim, &MCP_ARGS);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.starts_with("ERROR: Please run 'az login' to setup account.\n"),
        "{stderr}"
    );
    // The daemon's reason keeps the real CLI's words.
    assert!(stderr.contains(NOT_LOGGED_IN), "{stderr}");

    sandbox.az.set_mode(Mode::refresh_token_expired());
    // The daemon remembers "not logged in" for a few seconds (negative caching):
    // wait until it asks az again.
    let mut stderr = String::new();
    crate::harness::wait_until(
        Duration::from_secs(15),
        "the daemon to ask az again",
        || {
            stderr = String::from_utf8(az(&sandbox, &shim, &MCP_ARGS).stderr).unwrap();
            !stderr.contains(NOT_LOGGED_IN)
        },
    );
    assert!(
        stderr.starts_with("ERROR: authentication failed"),
        "{stderr}"
    );
    assert!(stderr.contains("AADSTS70043"), "{stderr}");

    let out = az(
        &sandbox,
        &shim,
        &["account", "get-access-token", "--tenant"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "ERROR: argument --tenant/-t: expected one argument\n"
    );
}

#[test]
fn twenty_shims_at_once_with_nothing_cached_cause_one_acquisition() {
    let (mut sandbox, shim) = sandbox_with_shim();
    sandbox.az.set_delay(Duration::from_millis(700));
    sandbox.start_daemon();
    let children: Vec<_> = (0..20)
        .map(|_| {
            sandbox
                .command_for(shim.join("az"))
                .args(MCP_ARGS)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let tokens: Vec<String> = children
        .into_iter()
        .map(|child| {
            let json = stdout_json(&child.wait_with_output().unwrap());
            json["accessToken"].as_str().unwrap().to_string()
        })
        .collect();
    assert!(tokens.iter().all(|t| t == &tokens[0]), "different tokens");
    assert_eq!(sandbox.az.invocations(), 1);
    assert_eq!(sandbox.status()["counters"]["upstream_acquisitions"], 1);
}

/// A stand-in for the real Azure CLI that records its arguments (one per
/// line) and its stdin, echoes a line, and exits 42.
fn recording_az(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let script = format!(
        "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done > '{0}/args'\ncat > '{0}/stdin'\necho 'real az ran'\nexit 42\n",
        dir.display()
    );
    let az = dir.join("az");
    std::fs::write(&az, script).unwrap();
    std::fs::set_permissions(&az, std::fs::Permissions::from_mode(0o755)).unwrap();
    az
}

#[test]
fn other_commands_reach_the_real_az_unchanged() {
    let mut sandbox = Sandbox::new();
    let shim = sandbox.install_shim();
    let real = sandbox.dir.path().join("real");
    recording_az(&real);
    sandbox.set(
        "PATH",
        format!("{}:{}:/usr/bin:/bin", shim.display(), real.display()),
    );
    let args = [
        "group",
        "list",
        "--query",
        "[?name=='a b']",
        "-o",
        "tsv",
        "",
    ];
    let mut child = sandbox
        .command_for(shim.join("az"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"line one\n\x00binary\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(42),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"real az ran\n");
    let recorded = std::fs::read_to_string(real.join("args")).unwrap();
    assert_eq!(
        recorded,
        args.iter().map(|a| format!("{a}\n")).collect::<String>()
    );
    assert_eq!(
        std::fs::read(real.join("stdin")).unwrap(),
        b"line one\n\x00binary\n"
    );
    // A token form the shim does not answer itself is the real CLI's too.
    let out = az(
        &sandbox,
        &shim,
        &[
            "account",
            "get-access-token",
            "--query",
            "accessToken",
            "-o",
            "tsv",
        ],
    );
    assert_eq!(out.status.code(), Some(42));
    // No daemon was needed for any of it.
    assert!(sandbox.daemon_pids().is_empty());
}

#[test]
fn the_fake_cli_answers_its_own_errors_through_the_shim() {
    let (sandbox, shim) = sandbox_with_shim();
    let out = az(&sandbox, &shim, &["account", "list"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "az account: 'list' is not in the 'az account' command group. See 'az account --help'.\n"
    );
    assert_eq!(sandbox.az.invocation_args(), ["account list"]);
}

#[test]
fn without_a_real_az_other_commands_fail_clearly() {
    let mut sandbox = Sandbox::new();
    let shim = sandbox.install_shim();
    sandbox.set("PATH", format!("{}:/usr/bin:/bin", shim.display()));
    let out = az(&sandbox, &shim, &["vm", "list"]);
    assert_eq!(out.status.code(), Some(127));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.starts_with("ERROR: azbroker's az shim answers only 'az account get-access-token'")
            && stderr.contains("'az vm list' needs the real Azure CLI"),
        "{stderr}"
    );
}

#[test]
fn a_shim_started_by_the_daemon_refuses() {
    let (sandbox, shim) = sandbox_with_shim();
    let out = sandbox
        .command_for(shim.join("az"))
        .args(MCP_ARGS)
        .env(DAEMON_CHILD_ENV, "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.starts_with("ERROR: azbroker's az shim was started by azbrokerd itself"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
    // It asked nobody: no daemon started, no `az` ran.
    assert!(sandbox.daemon_pids().is_empty());
    assert_eq!(sandbox.az.invocations(), 0);
}

#[test]
fn an_unmarked_copy_of_the_shim_on_the_daemons_path_refuses_instead_of_recursing() {
    let mut sandbox = Sandbox::new();
    // A copy made by hand: no marker, not a link, so the daemon cannot tell it
    // from the real CLI; only the daemon-child rule stops the loop.
    let copy_dir = sandbox.dir.path().join("hand-copied");
    std::fs::create_dir_all(&copy_dir).unwrap();
    std::fs::copy(bin("azbroker-az-shim"), copy_dir.join("az")).unwrap();
    let path = sandbox.path_with_first(&[&copy_dir]);
    sandbox.set("PATH", path);
    sandbox.start_daemon();
    let out = sandbox.cli(&["token", "--scope", ARM]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("AzureCliCredential") && stderr.contains("started by azbrokerd itself"),
        "{stderr}"
    );
    assert_eq!(sandbox.az.invocations(), 0);
}

#[test]
fn install_refuses_to_replace_a_real_az_and_env_prints_the_path_line() {
    let sandbox = Sandbox::new();
    // The fake az's directory holds an `az` azbroker did not put there.
    let out = sandbox
        .command("azbroker")
        .args(["shim", "install", "--dir"])
        .arg(sandbox.az.dir())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not azbroker's shim"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shim = sandbox.install_shim();
    // Installing again replaces our own link.
    let again = sandbox.install_shim();
    assert_eq!(shim, again);
    let out = sandbox
        .command("azbroker")
        .args(["shim", "env", "--dir"])
        .arg(&shim)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("export PATH=\"{}:$PATH\"\n", shim.display())
    );
}

#[test]
fn an_unmarked_copy_after_the_shim_is_not_taken_for_the_real_az() {
    let mut sandbox = Sandbox::new();
    let shim = sandbox.install_shim();
    let copy_dir = sandbox.dir.path().join("hand-copied");
    std::fs::create_dir_all(&copy_dir).unwrap();
    std::fs::copy(bin("azbroker-az-shim"), copy_dir.join("az")).unwrap();
    sandbox.set(
        "PATH",
        format!("{}:{}:/usr/bin:/bin", shim.display(), copy_dir.display()),
    );
    // The shim hands `az vm list` to the next `az`, the copy, which sees that it
    // was exec'd by a shim in the same process and stops instead of looping.
    // (A copy just written can be "busy" for a moment: another test thread's
    // fork may still hold it open for writing until that child execs.)
    let mut out = az(&sandbox, &shim, &["vm", "list"]);
    for _ in 0..50 {
        let busy = out.status.code() == Some(126)
            && String::from_utf8_lossy(&out.stderr).contains("Text file busy");
        if !busy {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        out = az(&sandbox, &shim, &["vm", "list"]);
    }
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(127), "{stderr}");
    assert!(stderr.contains("is another copy of the shim"), "{stderr}");
}

/// A shim run in the background by a `sh` that waits for it (its caller),
/// started while the test holds the autostart lock: it is past its start and
/// waiting at the lock when this returns.
struct ShimAtTheLock {
    parent: std::process::Child,
    shim: i32,
    stdout: PathBuf,
    stderr: PathBuf,
}

fn lock_autostart(sandbox: &Sandbox) -> nix::fcntl::Flock<std::fs::File> {
    let dir = sandbox.socket.parent().unwrap();
    std::fs::create_dir_all(dir).unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let path = azbroker_proto::paths::sibling(&sandbox.socket, "autostart.lock");
    let file = azbroker_client::trust::open_lock_file(&path).unwrap();
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .unwrap()
}

fn shim_at_the_lock(sandbox: &Sandbox, shim: &Path) -> ShimAtTheLock {
    let (stdout, stderr) = (
        sandbox.dir.path().join("shim.out"),
        sandbox.dir.path().join("shim.err"),
    );
    let mut parent = sandbox
        .command_for("/bin/sh")
        .arg("-c")
        .arg(r#""$1" account get-access-token --output json >"$2" 2>"$3" & echo $!; wait $!"#)
        .arg("sh")
        .arg(shim.join("az"))
        .arg(&stdout)
        .arg(&stderr)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start sh");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(parent.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let pid: i32 = line.trim().parse().expect("the shim's pid");
    let lock = azbroker_proto::paths::sibling(&sandbox.socket, "autostart.lock");
    crate::harness::wait_until(
        Duration::from_secs(10),
        "the shim to wait at the autostart lock",
        || {
            std::fs::read_dir(format!("/proc/{pid}/fd"))
                .into_iter()
                .flatten()
                .flatten()
                .any(|fd| std::fs::read_link(fd.path()).ok().as_deref() == Some(&*lock))
        },
    );
    ShimAtTheLock {
        parent,
        shim: pid,
        stdout,
        stderr,
    }
}

/// Whether a process has ended (gone, or a zombie nobody reaped yet).
fn ended(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => true,
    }
}

#[test]
fn a_shim_whose_caller_is_waiting_starts_the_daemon() {
    // The control for the test below: the same shim at the same lock, with
    // its caller still there, does start a daemon and answers.
    let (mut sandbox, shim) = sandbox_with_shim();
    sandbox.set("AZBROKER_DAEMON", bin("azbrokerd"));
    let lock = lock_autostart(&sandbox);
    let mut waiting = shim_at_the_lock(&sandbox, &shim);
    drop(lock);
    assert!(waiting.parent.wait().unwrap().success());
    let stderr = std::fs::read_to_string(&waiting.stderr).unwrap();
    let json: Value = serde_json::from_slice(&std::fs::read(&waiting.stdout).unwrap())
        .unwrap_or_else(|e| panic!("{e}: {stderr}"));
    assert!(json["accessToken"].is_string(), "{json}");
    assert_eq!(sandbox.daemon_pids().len(), 1);
}

#[test]
fn a_shim_whose_caller_gave_up_never_starts_a_daemon() {
    let (mut sandbox, shim) = sandbox_with_shim();
    sandbox.set("AZBROKER_DAEMON", bin("azbrokerd"));
    let lock = lock_autostart(&sandbox);
    let mut waiting = shim_at_the_lock(&sandbox, &shim);
    // The caller gives up and exits; the shim lives on, handed to another parent.
    waiting.parent.kill().unwrap();
    waiting.parent.wait().unwrap();
    assert!(!ended(waiting.shim));
    drop(lock);
    crate::harness::wait_until(Duration::from_secs(20), "the shim to end", || {
        ended(waiting.shim)
    });
    let stderr = std::fs::read_to_string(&waiting.stderr).unwrap();
    assert!(stderr.contains("not starting azbrokerd"), "{stderr}");
    assert!(
        std::fs::read(&waiting.stdout).unwrap().is_empty(),
        "{stderr}"
    );
    assert_eq!(sandbox.daemon_pids(), Vec::<i32>::new(), "{stderr}");
    assert!(std::os::unix::net::UnixStream::connect(&sandbox.socket).is_err());
}
