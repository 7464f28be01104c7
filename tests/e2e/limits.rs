//! One request or one client must not freeze or starve the daemon: files that
//! are FIFOs, a status larger than a frame, idle connections by the thousand,
//! and a client that never reads its replies.

use std::io::{ErrorKind as IoErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use azbroker_client::Client;
use azbroker_e2e::EntraDouble;
use azbroker_proto::frame::{self, HEADER_LEN};
use azbroker_proto::{ClientFrame, DaemonFrame, GetToken, Hello, Reply, Request, PROTOCOL_VERSION};
use serde_json::Value;

use crate::harness::{wait_until, Sandbox};

const ARM: &str = "https://management.azure.com/.default";
const TENANT: &str = "11111111-1111-1111-1111-111111111111";
const CLIENT: &str = "22222222-2222-2222-2222-222222222222";
const SECRET: &str = "right-secret";

/// Runs `azbroker ARGS`; a run longer than `limit` fails the test (a daemon
/// that locks clients out would otherwise hang it).
fn cli_within(sandbox: &Sandbox, args: &[&str], limit: Duration) -> Output {
    let child = sandbox
        .command("azbroker")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run azbroker");
    let pid = child.id();
    let (done, waited) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    match waited.recv_timeout(limit) {
        Ok(output) => output.expect("azbroker output"),
        Err(_) => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            panic!(
                "azbroker {args:?} did not finish within {limit:?}\n{}",
                sandbox.log()
            );
        }
    }
}

fn succeeded(output: &Output, what: &str) -> String {
    assert!(
        output.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn token_request(scope: &str) -> GetToken {
    GetToken {
        scopes: vec![scope.to_string()],
        tenant: None,
        claims: None,
        min_validity_secs: 0,
    }
}

/// A client whose chain is the service principal with a secret, at the double.
fn secret_client(sandbox: &Sandbox, entra: &EntraDouble) -> Client {
    let authority = entra.authority();
    sandbox.client(&[
        ("AZURE_TOKEN_CREDENTIALS", "EnvironmentCredential"),
        ("AZURE_TENANT_ID", TENANT),
        ("AZURE_CLIENT_ID", CLIENT),
        ("AZURE_CLIENT_SECRET", SECRET),
        ("AZURE_AUTHORITY_HOST", &authority),
    ])
}

// ---------------------------------------------------------------- FIFOs

#[test]
fn a_fifo_as_certificate_or_token_file_fails_fast_and_others_are_served() {
    let mut sandbox = Sandbox::new();
    let entra = EntraDouble::start(&sandbox.pki);
    entra.register_client(CLIENT, SECRET);
    sandbox.start_daemon();
    let fifo = sandbox.dir.path().join("credential.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let fifo = fifo.to_str().unwrap().to_string();
    let authority = entra.authority();
    let certificate = Arc::new(sandbox.client(&[
        ("AZURE_TOKEN_CREDENTIALS", "EnvironmentCredential"),
        ("AZURE_TENANT_ID", TENANT),
        ("AZURE_CLIENT_ID", CLIENT),
        ("AZURE_CLIENT_CERTIFICATE_PATH", &fifo),
        ("AZURE_AUTHORITY_HOST", &authority),
    ]));
    let workload = Arc::new(sandbox.client(&[
        ("AZURE_TOKEN_CREDENTIALS", "WorkloadIdentityCredential"),
        ("AZURE_TENANT_ID", TENANT),
        ("AZURE_CLIENT_ID", CLIENT),
        ("AZURE_FEDERATED_TOKEN_FILE", &fifo),
        ("AZURE_AUTHORITY_HOST", &authority),
    ]));
    let healthy = secret_client(&sandbox, &entra);
    let rt = runtime();

    // 600 requests, each its own key (no single flight), half through each file.
    let started = Instant::now();
    let mut requests = tokio::task::JoinSet::new();
    for i in 0..600 {
        let (client, variable) = if i % 2 == 0 {
            (certificate.clone(), "AZURE_CLIENT_CERTIFICATE_PATH")
        } else {
            (workload.clone(), "AZURE_FEDERATED_TOKEN_FILE")
        };
        let scope = format!("https://fifo-{i}.example.com/.default");
        requests.spawn_on(
            async move { (variable, client.get_token(token_request(&scope)).await) },
            rt.handle(),
        );
    }
    // Meanwhile, other clients are served: status, and a token from another credential.
    let status = cli_within(&sandbox, &["status"], Duration::from_secs(30));
    succeeded(&status, "azbroker status during the FIFO requests");
    let token = rt
        .block_on(async {
            tokio::time::timeout(
                Duration::from_secs(30),
                healthy.get_token(token_request(ARM)),
            )
            .await
        })
        .expect("a token from another credential during the FIFO requests");
    assert_eq!(token.unwrap().credential, "EnvironmentCredential");

    rt.block_on(async {
        while let Some(done) = requests.join_next().await {
            let (variable, result) = done.unwrap();
            let error = result
                .expect_err("a FIFO is no credential file")
                .to_string();
            assert!(
                error.contains(&format!(
                    "{variable} {fifo}: it is a FIFO (named pipe), not a regular file"
                )),
                "{error}"
            );
        }
    });
    // Generous: each is refused by a stat; a blocked open never returns at all.
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "600 refusals took {:?}",
        started.elapsed()
    );

    // And after them.
    succeeded(
        &cli_within(&sandbox, &["status"], Duration::from_secs(30)),
        "azbroker status after the FIFO requests",
    );
    let again = rt
        .block_on(healthy.get_token(token_request("https://storage.azure.com/.default")))
        .expect("a token after the FIFO requests");
    assert!(!again.cached);
}

// ---------------------------------------------------------------- status

#[test]
fn status_shows_ten_thousand_cache_entries() {
    const ENTRIES: usize = 10_000;
    let mut sandbox = Sandbox::new();
    let entra = EntraDouble::start(&sandbox.pki);
    entra.register_client(CLIENT, SECRET);
    sandbox.start_daemon();
    // Real requests, pipelined over one connection: one key per scope.
    let client = Arc::new(secret_client(&sandbox, &entra));
    let rt = runtime();
    rt.block_on(async {
        let mut requests = tokio::task::JoinSet::new();
        for i in 0..ENTRIES {
            let client = client.clone();
            let scope = format!("https://resource-{i:05}.example.com/.default");
            requests.spawn(async move { client.get_token(token_request(&scope)).await });
        }
        while let Some(done) = requests.join_next().await {
            done.unwrap().expect("a token");
        }
    });

    let json: Value = serde_json::from_str(&succeeded(
        &cli_within(&sandbox, &["status", "--json"], Duration::from_secs(120)),
        "azbroker status --json",
    ))
    .expect("status JSON");
    let cache = json["cache"].as_array().unwrap();
    assert_eq!(cache.len(), ENTRIES);
    assert_eq!(json["cache_total"], ENTRIES);
    // In status's order, each once.
    let scopes: Vec<&str> = cache
        .iter()
        .map(|e| e["scopes"][0].as_str().unwrap())
        .collect();
    let expected: Vec<String> = (0..ENTRIES)
        .map(|i| format!("https://resource-{i:05}.example.com/.default"))
        .collect();
    assert_eq!(scopes, expected);

    let text = succeeded(
        &cli_within(&sandbox, &["status"], Duration::from_secs(120)),
        "azbroker status",
    );
    assert_eq!(text.matches(".example.com/.default tenant=").count(), 100);
    assert!(
        text.contains("... 9900 more entries not shown (--limit 0 shows all)"),
        "{text}"
    );
    assert!(text.contains("counters  requests"), "{text}");
    let all = succeeded(
        &cli_within(
            &sandbox,
            &["status", "--limit", "0"],
            Duration::from_secs(120),
        ),
        "azbroker status --limit 0",
    );
    assert_eq!(
        all.matches(".example.com/.default tenant=").count(),
        ENTRIES
    );
    assert!(!all.contains("more entries not shown"));

    // The library's status has them all too.
    let report = rt.block_on(client.status()).expect("library status");
    assert_eq!(report.cache.len(), ENTRIES);
}

// ---------------------------------------------------------------- connections

fn dev_chain_hello(sandbox: &Sandbox, id: u64) -> Vec<u8> {
    frame::encode(&ClientFrame {
        id,
        request: Request::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            client_name: "limits".into(),
            pid: std::process::id(),
            chain: sandbox.chain(&[("AZURE_TOKEN_CREDENTIALS", "AzureCliCredential")]),
        }),
    })
    .unwrap()
}

fn read_frame(stream: &mut UnixStream) -> std::io::Result<DaemonFrame> {
    let mut header = [0u8; HEADER_LEN];
    stream.read_exact(&mut header)?;
    let mut body = vec![0; frame::body_len(header).unwrap()];
    stream.read_exact(&mut body)?;
    Ok(frame::decode(&body).unwrap())
}

/// A connection that said Hello and was welcomed.
fn welcomed(sandbox: &Sandbox) -> UnixStream {
    let mut stream = UnixStream::connect(&sandbox.socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream.write_all(&dev_chain_hello(sandbox, 0)).unwrap();
    let welcome = read_frame(&mut stream).expect("a Welcome");
    assert!(matches!(welcome.reply, Reply::Welcome(_)), "{welcome:?}");
    stream
}

/// Whether the daemon closed `stream` (what it sent before is read and dropped).
fn closed_by_daemon(mut stream: &UnixStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let mut sink = [0u8; 4096];
    loop {
        match stream.read(&mut sink) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == IoErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == IoErrorKind::ConnectionReset => return true,
            Err(e) => panic!("reading a held connection: {e}"),
        }
    }
}

/// Lifts this process's soft open-file limit to at least `needed` (within the hard limit).
fn allow_open_files(needed: u64) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    assert!(
        hard >= needed,
        "this test needs {needed} open files; the hard limit is {hard}"
    );
    if soft < needed {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    }
}

#[test]
fn thousands_of_idle_connections_from_one_process_lock_out_neither_status_nor_stop() {
    // More than the daemon's 8,192 slots, all from this process.
    const HELD: usize = 8_300;
    allow_open_files(HELD as u64 + 1_000);
    let mut sandbox = Sandbox::new();
    let daemon = sandbox.start_daemon();
    let mut held = Vec::with_capacity(HELD);
    for _ in 0..HELD {
        let mut stream = UnixStream::connect(&sandbox.socket).unwrap();
        stream.write_all(&dev_chain_hello(&sandbox, 0)).unwrap();
        held.push(stream);
    }
    let status = succeeded(
        &cli_within(&sandbox, &["status"], Duration::from_secs(60)),
        "azbroker status with thousands of idle connections",
    );
    assert!(status.contains("connections"), "{status}");
    // One process keeps at most an eighth of the slots: its oldest idle ones were closed.
    wait_until(
        Duration::from_secs(30),
        "the daemon to close this process's connections beyond its cap",
        || held.iter().filter(|s| !closed_by_daemon(s)).count() <= 8_192 / 8,
    );
    succeeded(
        &cli_within(&sandbox, &["stop"], Duration::from_secs(60)),
        "azbroker stop with thousands of idle connections",
    );
    wait_until(Duration::from_secs(30), "the daemon to exit", || {
        !sandbox.daemon_pids().contains(&(daemon as i32))
    });
}

#[test]
fn a_full_daemon_still_lets_status_and_stop_in() {
    let mut sandbox = Sandbox::new();
    sandbox.start_daemon_with(&[
        "--max-connections",
        "32",
        "--max-connections-per-process",
        "32",
    ]);
    let held: Vec<UnixStream> = (0..32).map(|_| welcomed(&sandbox)).collect();
    // Every slot is taken by an idle connection; the newcomers still get in.
    succeeded(
        &cli_within(&sandbox, &["status"], Duration::from_secs(30)),
        "azbroker status on a full daemon",
    );
    wait_until(
        Duration::from_secs(10),
        "one idle connection to make room",
        || held.iter().any(closed_by_daemon),
    );
    succeeded(
        &cli_within(&sandbox, &["stop"], Duration::from_secs(30)),
        "azbroker stop on a full daemon",
    );
    wait_until(Duration::from_secs(30), "the daemon to exit", || {
        sandbox.daemon_pids().is_empty()
    });
}

#[test]
fn idle_connections_close_after_the_idle_timeout_and_clients_reconnect() {
    let mut sandbox = Sandbox::new();
    sandbox.start_daemon_with(&["--idle-timeout-secs", "1"]);
    let connected = Instant::now();
    let mut idle = welcomed(&sandbox);
    let mut rest = Vec::new();
    let end = idle.read_to_end(&mut rest);
    assert!(
        matches!(end, Ok(0)),
        "an idle connection must be closed: {end:?}"
    );
    assert!(connected.elapsed() >= Duration::from_secs(1));
    assert!(
        connected.elapsed() < Duration::from_secs(20),
        "closed only after {:?}",
        connected.elapsed()
    );

    // A connection waiting for a slow token is not idle.
    sandbox.az.set_delay(Duration::from_secs(3));
    let client = sandbox.client(&[("AZURE_TOKEN_CREDENTIALS", "AzureCliCredential")]);
    let rt = runtime();
    let first = rt
        .block_on(client.get_token(token_request(ARM)))
        .expect("a slow token");
    assert!(!first.cached);
    // Idle past the timeout: the daemon closes the connection, and the
    // library reconnects on the next request.
    std::thread::sleep(Duration::from_secs(4));
    let second = rt
        .block_on(client.get_token(token_request(ARM)))
        .expect("a token after the connection was closed for idling");
    assert!(second.cached);
    let log = sandbox.log();
    assert!(
        log.matches("client connected").count() >= 3,
        "the library reconnected:\n{log}"
    );
}

#[test]
fn a_client_that_never_reads_its_replies_is_disconnected() {
    let mut sandbox = Sandbox::new();
    sandbox.start_daemon();
    let mut stuck = welcomed(&sandbox);
    // Thousands of pipelined token requests whose replies are never read:
    // far more reply bytes than the socket buffers hold.
    let mut requests = Vec::new();
    for id in 1..=5_000u64 {
        requests.extend(
            frame::encode(&ClientFrame {
                id,
                request: Request::GetToken(token_request(ARM)),
            })
            .unwrap(),
        );
    }
    let mut writer = stuck.try_clone().unwrap();
    let writing = std::thread::spawn(move || {
        // Fails once the daemon closes the connection: expected.
        let _ = writer.write_all(&requests);
    });
    wait_until(
        Duration::from_secs(60),
        "the daemon to give up writing to a client that does not read",
        || sandbox.log().contains("did not read its replies"),
    );
    // Others are served meanwhile.
    succeeded(
        &cli_within(&sandbox, &["status"], Duration::from_secs(30)),
        "azbroker status beside a stuck client",
    );
    // The stuck client sees its connection end (after the replies that made it
    // through), not a connection that stays open with its replies dropped.
    stuck
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut replies = 0;
    let ended = loop {
        match read_frame(&mut stuck) {
            Ok(frame) => {
                assert!(matches!(frame.reply, Reply::Token(_)), "{frame:?}");
                replies += 1;
            }
            Err(e) => break e,
        }
    };
    assert!(
        matches!(
            ended.kind(),
            IoErrorKind::UnexpectedEof | IoErrorKind::ConnectionReset
        ),
        "the connection must be closed, not left open: {ended} after {replies} replies"
    );
    assert!(replies < 5_000, "{replies} replies");
    writing.join().unwrap();
    // The daemon still answers tokens.
    succeeded(
        &cli_within(
            &sandbox,
            &["token", "--scope", ARM],
            Duration::from_secs(30),
        ),
        "azbroker token after the stuck client",
    );
}
