//! Who is asking and what they may have: `azbroker exec --name NAME` with
//! `--allow-scope`/`--deny-scope`, the policy file, through the socket and
//! the `az` shim, down to grandchildren that cleared their environment.

use std::process::Output;
use std::time::Duration;

use crate::harness::{bin, wait_until, Sandbox};

const ARM: &str = "https://management.azure.com/.default";
const STORAGE: &str = "https://storage.azure.com/.default";
const VAULT: &str = "https://vault.azure.net/.default";

/// `azbroker exec ARGS -- sh -c SCRIPT` in the sandbox.
fn exec(sandbox: &Sandbox, args: &[&str], script: &str) -> Output {
    sandbox
        .command("azbroker")
        .arg("exec")
        .args(args)
        .args(["--", "sh", "-c", script])
        .output()
        .expect("run azbroker exec")
}

fn token_script(scope: &str) -> String {
    format!("{} token --raw --scope {scope}", bin("azbroker").display())
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_name_limited_to_storage_gets_storage_and_is_refused_resource_manager() {
    let mut sandbox = Sandbox::new();
    sandbox.start_daemon();
    // Cached before: a denial must not tell whether a token was cached.
    sandbox.raw_token(ARM);
    let limited = [
        "--name",
        "storage-agent",
        "--allow-scope",
        "https://storage.azure.com/*",
    ];

    let out = exec(&sandbox, &limited, &token_script(STORAGE));
    assert!(out.status.success(), "{}", stderr(&out));

    let denied = exec(&sandbox, &limited, &token_script(ARM));
    assert!(!denied.status.success());
    let cached_text = stderr(&denied);
    assert!(
        cached_text.contains("'storage-agent'")
            && cached_text.contains(ARM)
            && cached_text.contains("azbroker exec --name storage-agent"),
        "{cached_text}"
    );
    // A scope never cached is refused in the very same words.
    let never = "https://management.usgovcloudapi.net/.default";
    let uncached = exec(&sandbox, &limited, &token_script(never));
    assert_eq!(stderr(&uncached).replace(never, ARM), cached_text);
    assert_eq!(
        sandbox.az.invocations(),
        2,
        "storage and the first ARM token only"
    );

    // Outside the exec nothing is limited.
    sandbox.raw_token(VAULT);
}

#[test]
fn a_grandchild_that_cleared_its_environment_is_still_named_and_limited() {
    let mut sandbox = Sandbox::new();
    sandbox.start_daemon();
    let socket = sandbox.socket.display().to_string();
    let home = sandbox.dir.path().display().to_string();
    let path = sandbox.path_with_az().into_string().unwrap();
    // sh -> sh -> env -i -> azbroker: no variable of the exec survives.
    let script = format!(
        "sh -c 'env -i AZBROKER_SOCKET={socket} HOME={home} PATH={path} {} token --raw --scope {ARM}'",
        bin("azbroker").display()
    );
    let out = exec(
        &sandbox,
        &[
            "--name",
            "no-arm",
            "--deny-scope",
            "https://management.azure.com/*",
        ],
        &script,
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("'no-arm'")
            && stderr(&out).contains("denied by https://management.azure.com/*"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_az_shim_under_a_limited_name_fails_like_the_cli() {
    let mut sandbox = Sandbox::new();
    sandbox.start_daemon();
    let out = exec(
        &sandbox,
        &[
            "--name",
            "storage-only",
            "--allow-scope",
            "https://storage.azure.com/*",
        ],
        "az account get-access-token --output json --resource https://management.azure.com/",
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).starts_with("ERROR: ") && stderr(&out).contains("'storage-only'"),
        "{}",
        stderr(&out)
    );
    assert!(out.stdout.is_empty());
    assert_eq!(sandbox.az.invocations(), 0);
}

#[test]
fn the_policy_file_limits_processes_under_no_exec_and_a_broken_one_is_not_applied() {
    let mut sandbox = Sandbox::new();
    let config = sandbox.dir.path().join(".config").join("azbroker");
    std::fs::create_dir_all(&config).unwrap();
    let policy = config.join("policy.toml");
    std::fs::write(
        &policy,
        "[default]\ndeny = [\"https://vault.azure.net/*\"]\n",
    )
    .unwrap();
    sandbox.start_daemon();

    let out = sandbox.cli(&["token", "--scope", VAULT]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("a process under no azbroker exec")
            && stderr(&out).contains("policy.toml [default]"),
        "{}",
        stderr(&out)
    );
    sandbox.raw_token(ARM);

    // A broken file keeps the last good policy and says why in the log.
    std::fs::write(&policy, "[default]\ndeny = [\"vault\"]\n").unwrap();
    wait_until(
        Duration::from_secs(15),
        "the daemon to report the broken policy",
        || sandbox.log().contains("the policy file is not applied"),
    );
    assert!(!sandbox.cli(&["token", "--scope", VAULT]).status.success());

    // Fixed: applied within a moment.
    std::fs::write(&policy, "[default]\ndeny = []\n").unwrap();
    wait_until(Duration::from_secs(15), "the fixed policy to apply", || {
        sandbox.cli(&["token", "--scope", VAULT]).status.success()
    });
}

#[test]
fn an_exec_name_that_cannot_be_registered_does_not_run_its_command() {
    let mut sandbox = Sandbox::new();
    sandbox.start_daemon();
    let marker = sandbox.dir.path().join("ran");
    let out = exec(
        &sandbox,
        &["--name", "bad name"],
        &format!("touch {}", marker.display()),
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("not an exec name"),
        "{}",
        stderr(&out)
    );
    assert!(!marker.exists(), "the command ran unregistered");
}
