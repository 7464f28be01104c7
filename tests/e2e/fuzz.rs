//! Random input against the real daemon: a few thousand connections on its
//! Unix socket (seeded, so a failure replays) send random bytes, random frames
//! of valid length, truncated and oversized frames, and valid Hellos followed
//! by garbage. Afterwards the daemon still serves a token and its status, has
//! no connection left open, and its resident memory stayed bounded.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use azbroker_proto::frame::{self, MAX_FRAME_LEN};
use azbroker_proto::{ChainSpec, ClientFrame, Hello, Request, PROTOCOL_VERSION};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::harness::{wait_until, Sandbox};

/// Replays the same storm every run; change it to explore other inputs.
const SEED: u64 = 0x0a2b_b40c_e4f0_0011;
/// Connections in all, spread over [`THREADS`] clients at once.
const CONNECTIONS: usize = 3_000;
const THREADS: usize = 4;
/// The storm stops here even if not every connection was made (slow machine).
const STORM_LIMIT: Duration = Duration::from_secs(120);
const ARM: &str = "https://management.azure.com/.default";

fn vm_rss_kib(pid: u32) -> u64 {
    // Readable by root (the tests' user) even though the daemon is not dumpable.
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .and_then(|kib| kib.trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

/// A whole, valid Hello frame (prefix included).
fn hello_frame(rng: &mut StdRng) -> Vec<u8> {
    let chain = ChainSpec::from_lookup(|name| {
        (name == "AZURE_TOKEN_CREDENTIALS").then(|| "dev".to_string())
    })
    .unwrap();
    frame::encode(&ClientFrame {
        id: rng.gen(),
        request: Request::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            client_name: "fuzz".into(),
            pid: rng.gen(),
            chain,
        }),
    })
    .unwrap()
}

fn random_bytes(rng: &mut StdRng, max: usize) -> Vec<u8> {
    let len = rng.gen_range(0..=max);
    (0..len).map(|_| rng.gen()).collect()
}

/// A frame whose prefix is valid and whose body is random.
fn random_frame(rng: &mut StdRng) -> Vec<u8> {
    let len = rng.gen_range(1..=4096u32);
    let mut bytes = len.to_be_bytes().to_vec();
    bytes.extend((0..len).map(|_| rng.gen::<u8>()));
    bytes
}

/// One connection's input, of a randomly chosen kind.
fn payload(rng: &mut StdRng) -> Vec<u8> {
    match rng.gen_range(0..8) {
        // Noise.
        0 => random_bytes(rng, 2048),
        // A frame of valid length with a random body.
        1 => random_frame(rng),
        // A frame cut short: the length promises more than comes.
        2 => {
            let mut bytes = random_frame(rng);
            let cut = rng.gen_range(0..bytes.len());
            bytes.truncate(cut);
            bytes
        }
        // A length over the limit, or zero, then some bytes.
        3 => {
            let len: u32 = if rng.gen_bool(0.2) {
                0
            } else {
                rng.gen_range(MAX_FRAME_LEN as u32 + 1..=u32::MAX)
            };
            let mut bytes = len.to_be_bytes().to_vec();
            bytes.extend(random_bytes(rng, 256));
            bytes
        }
        // A valid Hello, then noise.
        4 => {
            let mut bytes = hello_frame(rng);
            bytes.extend(random_bytes(rng, 2048));
            bytes
        }
        // A valid Hello, then frames of valid length with random bodies.
        5 => {
            let mut bytes = hello_frame(rng);
            for _ in 0..rng.gen_range(1..4) {
                bytes.extend(random_frame(rng));
            }
            bytes
        }
        // A Hello with a few bytes flipped: reaches deep into the decoder.
        6 => {
            let mut bytes = hello_frame(rng);
            for _ in 0..rng.gen_range(1..4) {
                let at = rng.gen_range(4..bytes.len());
                bytes[at] = rng.gen();
            }
            bytes
        }
        // A valid Hello cut short.
        _ => {
            let mut bytes = hello_frame(rng);
            let cut = rng.gen_range(1..bytes.len());
            bytes.truncate(cut);
            bytes
        }
    }
}

/// Sends `bytes` and hangs up; sometimes reads what the daemon says first.
/// Errors are expected (the daemon closes on bad input) and ignored.
fn send(socket: &std::path::Path, bytes: &[u8], read_reply: bool) {
    let Ok(mut stream) = UnixStream::connect(socket) else {
        return;
    };
    let _ = stream.write_all(bytes);
    if read_reply {
        let _ = stream.shutdown(std::net::Shutdown::Write);
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        let mut sink = Vec::new();
        let _ = stream.take(256 * 1024).read_to_end(&mut sink);
    }
}

#[test]
fn random_input_on_the_socket_leaves_the_daemon_serving_with_bounded_memory() {
    let mut sandbox = Sandbox::new();
    let pid = sandbox.start_daemon();
    // Warm-up: a token (an actor, a cache entry), status, a few bad connections.
    sandbox.token(ARM, &[]);
    sandbox.status();
    let mut rng = StdRng::seed_from_u64(SEED ^ 0xffff);
    for _ in 0..50 {
        send(&sandbox.socket, &payload(&mut rng), true);
    }
    let warm_kib = vm_rss_kib(pid);

    let started = Instant::now();
    let sent: usize = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..THREADS)
            .map(|thread| {
                let socket = sandbox.socket.clone();
                scope.spawn(move || {
                    let mut rng = StdRng::seed_from_u64(SEED + thread as u64);
                    let mut sent = 0;
                    while sent < CONNECTIONS / THREADS && started.elapsed() < STORM_LIMIT {
                        let bytes = payload(&mut rng);
                        // One in eight waits for the answer, so replies are written too.
                        send(&socket, &bytes, rng.gen_ratio(1, 8));
                        sent += 1;
                    }
                    sent
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).sum()
    });
    assert!(sent >= CONNECTIONS / 4, "only {sent} connections were made");

    // Still serving, the same process, nothing left open but this check's own.
    assert_eq!(sandbox.daemon_pids(), [pid as i32], "{}", sandbox.log());
    wait_until(
        Duration::from_secs(30),
        "the fuzz connections to close",
        || sandbox.status()["counters"]["connections_open"] == 1,
    );
    let token = sandbox.token(ARM, &[]);
    assert_eq!(token["credential"], "AzureCliCredential");
    assert_eq!(sandbox.az.invocations(), 1, "the cache survived");
    let status = sandbox.status();
    let accepted = status["counters"]["connections_accepted"].as_u64().unwrap();
    assert!(accepted as usize >= sent, "{accepted} < {sent}");

    let after_kib = vm_rss_kib(pid);
    eprintln!(
        "{sent} random connections in {:.1} s; VmRSS {warm_kib} KiB after warm-up, {after_kib} KiB after",
        started.elapsed().as_secs_f64()
    );
    assert!(
        after_kib < warm_kib * 3 + 16 * 1024,
        "resident memory grew from {warm_kib} KiB to {after_kib} KiB"
    );
    let log = sandbox.log();
    assert!(!log.contains("panicked"), "the daemon panicked:\n{log}");
}
