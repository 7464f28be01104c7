//! Sharing (issue "one token per credential whoever asks"): tokens belong to
//! the credential that minted them, whatever chain a client spelled; tool
//! credentials run with the requester's tool and profile; the broker notices
//! account switches and can be told to forget.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use serde_json::Value;

use crate::harness::{wait_until, Sandbox};

const ARM: &str = "https://management.azure.com/.default";

/// `azbroker token --scope ARM --raw` with `vars` set (`Some`) or removed (`None`).
fn token_with(sandbox: &Sandbox, vars: &[(&str, Option<&str>)]) -> Output {
    let mut command = sandbox.command("azbroker");
    command.args(["token", "--scope", ARM, "--raw"]);
    for (name, value) in vars {
        match value {
            Some(value) => command.env(name, value),
            None => command.env_remove(name),
        };
    }
    command.output().expect("run azbroker token")
}

fn raw_token_with(sandbox: &Sandbox, vars: &[(&str, Option<&str>)]) -> String {
    let out = token_with(sandbox, vars);
    assert!(
        out.status.success(),
        "azbroker token with {vars:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        sandbox.log()
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn status(sandbox: &Sandbox) -> Value {
    let out = sandbox.cli(&["status", "--json"]);
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).expect("status JSON")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn four_spellings_of_the_chain_share_one_az_run_and_one_cache_entry() {
    let mut sandbox = Sandbox::new();
    sandbox.start_daemon();
    // The default order, the dev set, the CLI alone, and production
    // credentials first (their managed identity finds no endpoint here).
    let spellings: [&[(&str, Option<&str>)]; 4] = [
        &[("AZURE_TOKEN_CREDENTIALS", None)],
        &[("AZURE_TOKEN_CREDENTIALS", Some("dev"))],
        &[("AZURE_TOKEN_CREDENTIALS", Some("AzureCliCredential"))],
        &[
            ("AZURE_TOKEN_CREDENTIALS", None),
            ("AZURE_MCP_INCLUDE_PRODUCTION_CREDENTIALS", Some("true")),
        ],
    ];
    let tokens: Vec<String> = spellings
        .iter()
        .map(|vars| raw_token_with(&sandbox, vars))
        .collect();
    assert!(tokens.iter().all(|t| *t == tokens[0]), "one token for all");
    assert_eq!(sandbox.az.invocations(), 1, "one az run for four chains");

    let status = status(&sandbox);
    let cache = status["cache"].as_array().unwrap();
    assert_eq!(cache.len(), 1, "{status:#}");
    assert_eq!(cache[0]["credential"], "AzureCliCredential");
    let identity = cache[0]["identity"].as_str().unwrap();
    let credential = status["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["credential"] == "AzureCliCredential")
        .expect("the credential in status");
    assert_eq!(credential["identity"], identity, "{status:#}");
}

#[test]
fn a_second_azure_cli_profile_is_a_second_credential() {
    let mut sandbox = Sandbox::new();
    sandbox.start_daemon();
    sandbox.az.record_environment();
    let default = raw_token_with(&sandbox, &[]);
    let work_dir = sandbox.dir.path().join(".azure-work");
    std::fs::create_dir_all(&work_dir).unwrap();
    let work_dir = work_dir.to_str().unwrap();
    let work = raw_token_with(&sandbox, &[("AZURE_CONFIG_DIR", Some(work_dir))]);
    assert_ne!(default, work, "another profile never shares tokens");
    assert_eq!(sandbox.az.invocations(), 2);
    let env = sandbox.az.recorded_environment().unwrap();
    assert!(
        env.contains(&("AZURE_CONFIG_DIR".into(), work_dir.into())),
        "az ran in the requester's profile: {env:?}"
    );

    // Each profile's token is cached on its own.
    assert_eq!(raw_token_with(&sandbox, &[]), default);
    assert_eq!(
        raw_token_with(&sandbox, &[("AZURE_CONFIG_DIR", Some(work_dir))]),
        work
    );
    assert_eq!(sandbox.az.invocations(), 2);
    let status = status(&sandbox);
    assert_eq!(status["cache"].as_array().unwrap().len(), 2, "{status:#}");
    // Status tells the two credentials apart by where their logins live.
    let profiles: Vec<&str> = status["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["profile"].as_str())
        .collect();
    let default_dir = sandbox.dir.path().join(".azure");
    let az = sandbox.az.script_path().to_str().unwrap().to_string();
    assert!(
        profiles.contains(&format!("{az} in {}", default_dir.display()).as_str())
            && profiles.contains(&format!("{az} in {work_dir}").as_str()),
        "{profiles:?}"
    );
}

#[test]
fn a_daemon_started_without_az_on_its_path_runs_the_requesters_az() {
    let mut sandbox = Sandbox::new();
    // Started by a client with a minimal PATH (as MCP clients start servers).
    let empty = sandbox.dir.path().join("empty-bin");
    std::fs::create_dir_all(&empty).unwrap();
    let minimal = empty.to_str().unwrap().to_string();
    let with_az = sandbox.path_with_az().into_string().unwrap();
    sandbox.set("PATH", &minimal);
    sandbox.start_daemon();

    // A client without az is told whose PATH was searched.
    let out = token_with(&sandbox, &[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Azure CLI (az) not found on PATH")
            && stderr.contains("the PATH of the process that asked"),
        "{stderr}"
    );
    assert_eq!(sandbox.az.invocations(), 0);

    // A shell with az on its PATH is served by that az.
    raw_token_with(&sandbox, &[("PATH", Some(&with_az))]);
    assert_eq!(sandbox.az.invocations(), 1);
}

/// What `az login` leaves in the profile: the account list (content does not
/// matter to the broker, only that the file changed).
fn write_profile(profile: &Path, user: &str) {
    std::fs::write(
        profile.join("azureProfile.json"),
        format!(r#"{{"subscriptions":[{{"user":{{"name":"{user}","type":"user"}}}}]}}"#),
    )
    .unwrap();
}

#[test]
fn an_az_login_as_someone_else_drops_the_old_accounts_token() {
    let mut sandbox = Sandbox::new();
    let profile = sandbox.dir.path().join(".azure");
    std::fs::create_dir_all(&profile).unwrap();
    write_profile(&profile, "alice@contoso.example");
    sandbox.start_daemon();
    let alice = sandbox.raw_token(ARM);
    assert_eq!(sandbox.raw_token(ARM), alice, "cached");
    assert_eq!(sandbox.az.invocations(), 1);

    // `az login` as bob rewrites the profile: alice's token must go.
    write_profile(&profile, "bob@contoso.example");
    let mut bob = String::new();
    wait_until(
        Duration::from_secs(15),
        "the daemon to drop the old account's token",
        || {
            bob = sandbox.raw_token(ARM);
            bob != alice
        },
    );
    assert_eq!(sandbox.az.invocations(), 2);
    assert!(
        sandbox.log().contains("a tool login changed"),
        "{}",
        sandbox.log()
    );
}

#[test]
fn invalidate_and_logout_drop_cached_tokens_of_every_credential() {
    let mut sandbox = Sandbox::new();
    sandbox.start_daemon();
    let first = sandbox.raw_token(ARM);

    let out = sandbox.cli(&["invalidate"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--all"));

    let out = sandbox.cli(&["invalidate", "--credential", "EnvironmentCredential"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&out), "azbroker: dropped 0 cached token(s)\n");
    assert_eq!(sandbox.raw_token(ARM), first, "another credential's: kept");

    let out = sandbox.cli(&["invalidate", "--credential", "azurecli"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&out), "azbroker: dropped 1 cached token(s)\n");
    let second = sandbox.raw_token(ARM);
    assert_ne!(second, first);
    assert_eq!(sandbox.az.invocations(), 2);

    let out = sandbox.cli(&["invalidate", "--credential", "NoSuchCredential"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");

    // A logout forgets accounts and every cached token, the CLI's included.
    let out = sandbox.cli(&["logout", "--all"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        stdout(&out),
        "azbroker: forgot 0 account(s) and dropped 1 cached token(s)\n"
    );
    assert_ne!(sandbox.raw_token(ARM), second);
    assert_eq!(sandbox.az.invocations(), 3);

    let out = sandbox.cli(&["invalidate", "--all"]);
    assert_eq!(stdout(&out), "azbroker: dropped 1 cached token(s)\n");
}
