//! The daemon's user-space instructions per cached hit, counted by callgrind:
//! a figure this noisy machine cannot disturb, for comparing two builds of
//! `azbrokerd` (docs/PERFORMANCE.md). Needs `valgrind`.
//!
//! `cargo run --release -p azbroker-bench --example hit_cost -- [--policed] [AZBROKERD] [REQUESTS]`
//!
//! Runs the daemon under callgrind twice, each time with a fake `az`: once
//! for one acquisition alone, once followed by REQUESTS (default 20,000)
//! cached hits on one connection (prebuilt frames, no client library). The
//! difference, divided by REQUESTS, is the cost of a hit: the connection's
//! work, the audit writer's, and the runtime's. With `--policed`, as in the
//! benchmark's figure 10: the daemon reads a policy file, and this process
//! registers under an exec NAME with scope rules of its own before it asks.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use azbroker_e2e::FakeAz;
use azbroker_proto::{
    frame, ChainSpec, ClientFrame, DaemonFrame, GetToken, Hello, RegisterExec, Reply, Request,
    PROTOCOL_VERSION,
};

/// Figure 10's policy: rules for processes under no exec and for [`NAME`].
const POLICY: &str = r#"[default]
deny = ["https://vault.azure.net/*", "https://graph.microsoft.com/*"]

[names.hit-cost]
allow = ["https://management.azure.com/*", "https://storage.azure.com/*"]
deny = ["https://vault.azure.net/*"]
"#;
const NAME: &str = "hit-cost";

fn main() {
    let mut args = std::env::args().skip(1).peekable();
    let policed = args.next_if(|a| a == "--policed").is_some();
    let daemon = args
        .next()
        .unwrap_or_else(|| "target/release/azbrokerd".into());
    let requests: u64 = args.next().map_or(20_000, |n| n.parse().expect("REQUESTS"));
    let alone = instructions(&daemon, 0, policed);
    let with_hits = instructions(&daemon, requests, policed);
    println!(
        "{daemon}{}: {} instructions per cached hit ({requests} hits; {alone} for start, one acquisition and stop)",
        if policed { " with a policy, under an exec NAME" } else { "" },
        (with_hits - alone) / requests
    );
}

/// Instructions callgrind counted in the daemon for one acquisition and `hits`.
fn instructions(daemon: &str, hits: u64, policed: bool) -> u64 {
    let dir = tempfile::tempdir().expect("temporary directory");
    let config = dir.path().join("config");
    if policed {
        let policy = config.join("azbroker").join("policy.toml");
        std::fs::create_dir_all(policy.parent().expect("a parent")).expect("config directory");
        std::fs::write(&policy, POLICY).expect("policy file");
    }
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).expect("bin directory");
    let az = FakeAz::install(&bin);
    let path = format!("{}:/usr/local/bin:/usr/bin:/bin", az.dir().display());
    let socket = dir.path().join("daemon").join("azbroker.sock");
    let counts = dir.path().join("callgrind.out");
    let child = Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", counts.display()))
        .args([daemon, "--foreground", "--socket"])
        .arg(&socket)
        .env_clear()
        .env("PATH", &path)
        .env("HOME", dir.path())
        .env("XDG_STATE_HOME", dir.path().join("state"))
        .env("XDG_CONFIG_HOME", &config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("valgrind (install it to count instructions)");
    let reaper = Reaper(child.id());

    let mut stream = connect(&socket);
    let home = dir.path().to_string_lossy().into_owned();
    let vars = [
        ("AZURE_TOKEN_CREDENTIALS", "AzureCliCredential"),
        ("PATH", path.as_str()),
        ("HOME", home.as_str()),
    ];
    let chain = ChainSpec::from_lookup(|name| {
        vars.iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.to_string())
    })
    .expect("a chain");
    let hello = ClientFrame {
        id: 0,
        request: Request::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            client_name: "hit-cost".into(),
            pid: std::process::id(),
            chain,
        }),
    };
    let request = ClientFrame {
        id: 1,
        request: Request::GetToken(GetToken {
            scopes: vec!["https://management.azure.com/.default".into()],
            tenant: None,
            claims: None,
            min_validity_secs: 0,
        }),
    };
    let request = frame::encode(&request).expect("request frame");
    let hello = frame::encode(&hello).expect("Hello");
    let mut reply = Vec::new();
    if policed {
        // As `azbroker exec --name` does; connections from then on are under NAME.
        let register = ClientFrame {
            id: 1,
            request: Request::RegisterExec(RegisterExec {
                name: NAME.into(),
                allow_scopes: vec!["https://management.azure.com/*".into()],
                deny_scopes: vec!["https://graph.microsoft.com/*".into()],
            }),
        };
        round_trip(&mut stream, &hello, &mut reply);
        round_trip(
            &mut stream,
            &frame::encode(&register).expect("RegisterExec"),
            &mut reply,
        );
        let registered: DaemonFrame = frame::decode(&reply).expect("a reply");
        assert!(
            matches!(registered.reply, Reply::ExecRegistered),
            "the daemon did not register the exec NAME"
        );
        stream = connect(&socket);
    }
    round_trip(&mut stream, &hello, &mut reply);
    let welcome: DaemonFrame = frame::decode(&reply).expect("a reply");
    if let Reply::Error(refused) = welcome.reply {
        // A build of another protocol version: build this tool at its commit.
        panic!("{daemon} refused the Hello: {refused}");
    }
    // The acquisition, then the hits.
    for n in 0..=hits {
        round_trip(&mut stream, &request, &mut reply);
        let answer: DaemonFrame = frame::decode(&reply).expect("a reply");
        match answer.reply {
            Reply::Token(token) if token.cached == (n > 0) => {}
            _ => panic!("request {n}: not the token reply expected"),
        }
    }
    drop(stream);

    // SIGTERM: the daemon stops cleanly and callgrind writes its counts.
    Command::new("kill")
        .arg(child.id().to_string())
        .status()
        .expect("kill");
    let output = child.wait_with_output().expect("valgrind");
    std::mem::forget(reaper);
    let stderr = String::from_utf8_lossy(&output.stderr);
    stderr
        .lines()
        .find_map(|line| line.split("Collected : ").nth(1))
        .and_then(|count| count.trim().parse().ok())
        .unwrap_or_else(|| panic!("no instruction count from callgrind:\n{stderr}"))
}

/// Kills the daemon when this tool gives up on it (a panic), so that no
/// callgrind is left running.
struct Reaper(u32);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-9", &self.0.to_string()])
            .status();
    }
}

fn connect(socket: &Path) -> UnixStream {
    // The daemon starts slowly under callgrind.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match UnixStream::connect(socket) {
            Ok(stream) => return stream,
            Err(e) if Instant::now() > deadline => panic!("no daemon at {socket:?}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Sends one frame and reads one whole reply frame.
fn round_trip(stream: &mut UnixStream, frame: &[u8], reply: &mut Vec<u8>) {
    stream.write_all(frame).expect("request");
    let mut header = [0u8; frame::HEADER_LEN];
    stream.read_exact(&mut header).expect("reply header");
    reply.resize(frame::body_len(header).expect("reply length"), 0);
    stream.read_exact(reply).expect("reply body");
}
