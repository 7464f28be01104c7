//! Either end of the broker's socket, for the socket-trust tests.
//!
//! `listen`: a hostile stand-in for `azbrokerd`. It listens where a client
//! will look, answers Hello with a Welcome, any token request with a forged
//! token and `ManagedIdentity` with whatever endpoint it was given, and
//! records every connection and how many bytes the client sent:
//! `azbroker-test-socket-peer listen --socket PATH --record FILE [--dir-mode
//! OCTAL] [--endpoint URL --header-file PATH]`. With `--dir-mode` it creates
//! the socket's directory with that mode first (as a squatter would). Record
//! lines: `listening`, `accept pid=N`, `close pid=N bytes=N`. Connections are
//! served one after another, so a connection's `close` line comes before the
//! next one's `accept`.
//!
//! `probe --socket PATH`: a bare client that skips every client-side check,
//! to test the daemon's own: connects, reads the first reply and prints it
//! (`welcome`, or the error's message on stderr with exit 1).

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::Duration;

use azbroker_proto::frame::{self, HEADER_LEN};
use azbroker_proto::{
    ClientFrame, DaemonFrame, ErrorKind, ManagedIdentityEndpoint, Reply, Request, Secret,
    TokenReply, Welcome, WireError, PROTOCOL_VERSION,
};

/// The token every token request gets.
const FORGED_TOKEN: &str = "forged-token-from-a-fake-daemon";

struct Args {
    socket: PathBuf,
    record: PathBuf,
    dir_mode: Option<u32>,
    endpoint: Option<ManagedIdentityEndpoint>,
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some("probe") {
        probe();
        return;
    }
    let args = parse_args();
    if let Some(mode) = args.dir_mode {
        let dir = args.socket.parent().expect("socket directory");
        std::fs::create_dir_all(dir).expect("create the socket directory");
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }
    let listener = UnixListener::bind(&args.socket).expect("bind");
    std::fs::set_permissions(&args.socket, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    record(&args, "listening");
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        serve(&args, stream);
    }
}

fn serve(args: &Args, mut stream: UnixStream) {
    let pid = nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials)
        .map(|c| c.pid())
        .unwrap_or(-1);
    record(args, &format!("accept pid={pid}"));
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut received = 0usize;
    loop {
        let mut header = [0u8; HEADER_LEN];
        let Ok(n) = read_some(&mut stream, &mut header) else {
            break;
        };
        received += n;
        if n < HEADER_LEN {
            break;
        }
        let Ok(len) = frame::body_len(header) else {
            break;
        };
        let mut body = vec![0u8; len];
        let Ok(n) = read_some(&mut stream, &mut body) else {
            break;
        };
        received += n;
        let Ok(request) = frame::decode::<ClientFrame>(&body) else {
            break;
        };
        let reply = answer(args, &request.request);
        let bytes = frame::encode(&DaemonFrame {
            id: request.id,
            reply,
        })
        .expect("encode");
        if stream.write_all(&bytes).is_err() {
            break;
        }
    }
    record(args, &format!("close pid={pid} bytes={received}"));
}

fn answer(args: &Args, request: &Request) -> Reply {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    match request {
        Request::Hello(_) => Reply::Welcome(Welcome {
            protocol_version: PROTOCOL_VERSION,
            daemon_version: env!("CARGO_PKG_VERSION").into(),
            daemon_pid: std::process::id(),
        }),
        Request::GetToken(_) => Reply::Token(TokenReply {
            access_token: Secret::new(FORGED_TOKEN),
            token_type: "Bearer".into(),
            expires_on: now + 3600,
            refresh_on: now + 1800,
            tenant: None,
            credential: "AzureCliCredential".into(),
            cached: true,
            stale: false,
        }),
        Request::ManagedIdentity => Reply::ManagedIdentity(args.endpoint.clone()),
        _ => Reply::Error(WireError::new(ErrorKind::Internal, "fake daemon")),
    }
}

/// Reads until `buf` is full or the stream ends; returns how many bytes came.
fn read_some(stream: &mut UnixStream, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match stream.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

fn record(args: &Args, line: &str) {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args.record)
        .expect("record file");
    writeln!(file, "{line}").expect("record");
}

fn parse_args() -> Args {
    let mut socket = None;
    let mut record = None;
    let mut dir_mode = None;
    let mut endpoint = None;
    let mut header_file = None;
    let mut args = std::env::args().skip(2);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--socket" => socket = Some(PathBuf::from(value)),
            "--record" => record = Some(PathBuf::from(value)),
            "--dir-mode" => dir_mode = Some(u32::from_str_radix(&value, 8).expect("octal mode")),
            "--endpoint" => endpoint = Some(value),
            "--header-file" => header_file = Some(value),
            other => panic!("unknown flag {other}"),
        }
    }
    Args {
        socket: socket.expect("--socket"),
        record: record.expect("--record"),
        dir_mode,
        endpoint: endpoint.map(|endpoint| ManagedIdentityEndpoint {
            endpoint,
            header_file: header_file.unwrap_or_default(),
        }),
    }
}

fn probe() {
    let socket = std::env::args().nth(3).expect("probe --socket PATH");
    let mut stream = UnixStream::connect(&socket).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut header = [0u8; HEADER_LEN];
    stream.read_exact(&mut header).expect("read a reply");
    let mut body = vec![0u8; frame::body_len(header).expect("length")];
    stream.read_exact(&mut body).expect("read a reply");
    match frame::decode::<DaemonFrame>(&body).expect("decode").reply {
        Reply::Welcome(_) => println!("welcome"),
        Reply::Error(e) => {
            eprintln!("{}", e.message);
            std::process::exit(1);
        }
        _ => panic!("unexpected reply"),
    }
}
