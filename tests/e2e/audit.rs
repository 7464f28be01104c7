//! The audit trail: every token request (socket, `az` shim, managed-identity
//! endpoint) is recorded with who asked and what came of it, never a token;
//! `azbroker audit` reads it back, `azbroker status` counts per exec NAME.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::{Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

use crate::harness::{bin, python, wait_until, Sandbox};

const ARM: &str = "https://management.azure.com/.default";
const STORAGE: &str = "https://storage.azure.com/.default";
const STORAGE_ONLY: [&str; 4] = [
    "--name",
    "storage-agent",
    "--allow-scope",
    "https://storage.azure.com/*",
];

/// `azbroker exec ARGS -- COMMAND...` in the sandbox.
fn exec(sandbox: &Sandbox, args: &[&str], command: &[&str]) -> Output {
    sandbox
        .command("azbroker")
        .arg("exec")
        .args(args)
        .arg("--")
        .args(command)
        .output()
        .expect("run azbroker exec")
}

/// `azbroker audit --json ARGS`, parsed line by line.
pub(crate) fn audit(sandbox: &Sandbox, args: &[&str]) -> Vec<Value> {
    let out = sandbox.cli(&[&["audit", "--json"], args].concat());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON object per line"))
        .collect()
}

fn outcomes(records: &[Value]) -> Vec<&str> {
    records
        .iter()
        .map(|r| r["outcome"].as_str().unwrap())
        .collect()
}

#[test]
fn every_request_is_recorded_with_who_asked_and_never_a_token() {
    let mut sandbox = Sandbox::new();
    sandbox.start_daemon();
    let mut tokens = vec![sandbox.raw_token(ARM), sandbox.raw_token(ARM)];
    let azbroker = bin("azbroker").display().to_string();
    let denied = exec(
        &sandbox,
        &STORAGE_ONLY,
        &[&azbroker, "token", "--raw", "--scope", ARM],
    );
    assert!(!denied.status.success());
    let storage = exec(
        &sandbox,
        &STORAGE_ONLY,
        &[
            "az",
            "account",
            "get-access-token",
            "--resource",
            "https://storage.azure.com",
        ],
    );
    assert!(
        storage.status.success(),
        "{}",
        String::from_utf8_lossy(&storage.stderr)
    );
    let shim_reply: Value = serde_json::from_slice(&storage.stdout).unwrap();
    tokens.push(shim_reply["accessToken"].as_str().unwrap().to_string());

    let records = audit(&sandbox, &[]);
    assert_eq!(
        outcomes(&records),
        ["acquired", "hit", "denied", "acquired"]
    );
    let fields = azbroker_proto::audit::FIELDS;
    for record in &records {
        let keys: Vec<&String> = record.as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), fields.len(), "{record}");
        for field in fields {
            assert!(record.get(field).is_some(), "{field} missing in {record}");
        }
        assert!(
            record["pid"].as_u64().is_some_and(|pid| pid > 1),
            "{record}"
        );
        assert!(record["time"].as_str().unwrap().ends_with('Z'));
        assert_eq!(record["count"], 1, "{record}");
    }
    // Outside any exec: no NAME; the CLI, by its executable.
    assert_eq!(records[0]["name"], Value::Null);
    assert_eq!(records[0]["client"], "azbroker-cli");
    assert!(records[0]["exe"].as_str().unwrap().ends_with("/azbroker"));
    assert_eq!(records[0]["scopes"][0], ARM);
    assert!(records[0]["credential"]
        .as_str()
        .unwrap()
        .starts_with("AzureCliCredential#"));
    // The denial: NAME, the scope asked for, no credential consulted.
    assert_eq!(records[2]["name"], "storage-agent");
    assert_eq!(records[2]["scopes"][0], ARM);
    assert_eq!(records[2]["credential"], Value::Null);
    // Through the shim, under the exec's NAME, by the shim's executable.
    assert_eq!(records[3]["name"], "storage-agent");
    assert_eq!(records[3]["scopes"][0], STORAGE);
    assert!(records[3]["exe"]
        .as_str()
        .unwrap()
        .ends_with("azbroker-az-shim"));

    // Filters.
    let named = audit(&sandbox, &["--name", "storage-agent"]);
    assert_eq!(outcomes(&named), ["denied", "acquired"]);
    assert_eq!(audit(&sandbox, &["--since", "10m"]).len(), 4);
    let people = sandbox.cli(&["audit", "--name", "storage-agent"]);
    let text = String::from_utf8(people.stdout).unwrap();
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(text.lines().next().unwrap().contains("denied"), "{text}");

    // Counters per NAME in status.
    let status = sandbox.status();
    let names = status["names"].as_array().unwrap();
    assert_eq!(names.len(), 1, "{status}");
    assert_eq!(names[0]["name"], "storage-agent");
    assert_eq!(names[0]["requests"], 2);
    assert_eq!(names[0]["denied"], 1);
    assert_eq!(names[0]["hits"], 0);

    // The file (written within a moment): private, the same records, no token anywhere.
    let file = sandbox.dir.path().join("state/azbroker/audit.jsonl");
    wait_until(Duration::from_secs(10), "the audit file", || {
        std::fs::read_to_string(&file).is_ok_and(|text| text.lines().count() == records.len())
    });
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let written = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<Value> = written
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines, records);
    let shown = String::from_utf8(sandbox.cli(&["audit"]).stdout).unwrap();
    for token in &tokens {
        assert!(!token.is_empty());
        let signature = token.rsplit('.').next().unwrap();
        for text in [&written, &shown, &sandbox.log()] {
            assert!(!text.contains(signature), "a token is in the audit");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_asking_in_a_loop_is_one_record_per_round_with_every_request_counted() {
    let mut sandbox = Sandbox::new();
    sandbox.start_daemon();
    let client = sandbox.client(&[("AZURE_TOKEN_CREDENTIALS", "AzureCliCredential")]);
    let request = || azbroker_proto::GetToken {
        scopes: vec![ARM.into()],
        tenant: None,
        claims: None,
        min_validity_secs: 0,
    };
    let started = std::time::Instant::now();
    for _ in 0..2_000 {
        client.get_token(request()).await.unwrap();
    }
    let elapsed = started.elapsed();
    let records = tokio::task::block_in_place(|| audit(&sandbox, &[]));

    assert_eq!(records[0]["outcome"], "acquired");
    let hits: Vec<&Value> = records.iter().filter(|r| r["outcome"] == "hit").collect();
    assert_eq!(records.len(), hits.len() + 1, "{records:?}");
    let counted: u64 = hits.iter().map(|r| r["count"].as_u64().unwrap()).sum();
    assert_eq!(counted, 1_999);
    // The writer absorbs once per 200 ms round, and the query once more:
    // each absorption holds at most one record of this connection and scope.
    let rounds = elapsed.as_millis() as usize / 200 + 2;
    assert!(
        hits.len() <= rounds,
        "{} records in {elapsed:?}",
        hits.len()
    );
}

#[test]
fn the_managed_identity_endpoint_knows_its_peer_process_and_its_name() {
    let mut sandbox = Sandbox::new();
    sandbox.start_daemon_with(&["--managed-identity-endpoint"]);
    // A plain HTTP client under an exec: the endpoint finds its process from
    // the TCP connection, so the NAME's rule applies there too.
    let fetch = r#"
import json, os, sys, urllib.error, urllib.request
url = os.environ["IDENTITY_ENDPOINT"] + "?api-version=2019-08-01&resource=" + sys.argv[1]
request = urllib.request.Request(url, headers={"X-IDENTITY-HEADER": os.environ["IDENTITY_HEADER"]})
try:
    with urllib.request.urlopen(request, timeout=30) as reply:
        print(reply.status, json.load(reply)["token_type"])
except urllib.error.HTTPError as e:
    print(e.code, json.load(e)["message"])
"#;
    let python = python().display().to_string();
    let run = |resource: &str| {
        let out = exec(
            &sandbox,
            &[&STORAGE_ONLY[..], &["--managed-identity"]].concat(),
            &[&python, "-c", fetch, resource],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let storage = run("https://storage.azure.com");
    assert_eq!(storage.trim(), "200 Bearer");
    let arm = run("https://management.azure.com");
    assert!(
        arm.starts_with("403 ") && arm.contains("'storage-agent'"),
        "{arm}"
    );

    let records = audit(&sandbox, &["--name", "storage-agent"]);
    assert_eq!(outcomes(&records), ["acquired", "denied"]);
    for record in &records {
        assert_eq!(record["client"], "managed-identity-endpoint");
        assert!(record["pid"].as_u64().is_some(), "{record}");
        assert!(
            record["exe"].as_str().unwrap().contains("python"),
            "{record}"
        );
    }
}

#[test]
fn follow_prints_requests_as_they_come() {
    let mut sandbox = Sandbox::new();
    sandbox.start_daemon();
    let mut follower = sandbox
        .command("azbroker")
        .args(["audit", "--follow", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = follower.stdout.take().unwrap();
    let (lines, received) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if lines.send(line.unwrap()).is_err() {
                return;
            }
        }
    });
    for (scope, outcome) in [(ARM, "acquired"), (ARM, "hit"), (STORAGE, "acquired")] {
        sandbox.raw_token(scope);
        let line = received
            .recv_timeout(Duration::from_secs(20))
            .expect("the follower printed the request");
        let record: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(record["outcome"], outcome);
        assert_eq!(record["scopes"][0], scope);
    }
    follower.kill().unwrap();
    follower.wait().unwrap();
}
