//! Hostile or broken clients lose their own connection and nothing else.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use azbroker_proto::frame::{self, HEADER_LEN};
use azbroker_proto::{
    ClientFrame, DaemonFrame, ErrorKind, GetToken, Hello, Reply, Request, PROTOCOL_VERSION,
};

use crate::harness::Sandbox;

const ARM: &str = "https://management.azure.com/.default";

fn raw(sandbox: &Sandbox) -> UnixStream {
    let stream = UnixStream::connect(&sandbox.socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

fn hello(sandbox: &Sandbox) -> Vec<u8> {
    frame::encode(&ClientFrame {
        id: 1,
        request: Request::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            client_name: "raw".into(),
            pid: std::process::id(),
            chain: sandbox.chain(&[("AZURE_TOKEN_CREDENTIALS", "AzureCliCredential")]),
        }),
    })
    .unwrap()
}

/// Reads frames until EOF; returns the replies seen.
fn read_to_close(stream: &mut UnixStream) -> Vec<DaemonFrame> {
    let mut bytes = Vec::new();
    stream
        .read_to_end(&mut bytes)
        .expect("the daemon closed the connection");
    frame::split(&bytes)
        .unwrap()
        .into_iter()
        .map(|body| frame::decode(body).unwrap())
        .collect()
}

fn read_one(stream: &mut UnixStream) -> DaemonFrame {
    let mut header = [0u8; HEADER_LEN];
    stream.read_exact(&mut header).unwrap();
    let mut body = vec![0; frame::body_len(header).unwrap()];
    stream.read_exact(&mut body).unwrap();
    frame::decode(&body).unwrap()
}

fn last_error(frames: &[DaemonFrame]) -> (ErrorKind, String) {
    match &frames.last().expect("an error reply before closing").reply {
        Reply::Error(e) => (e.kind, e.message.clone()),
        other => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn malformed_and_oversize_frames_close_only_their_connection() {
    let mut sandbox = Sandbox::new();
    sandbox.start_daemon();
    // A healthy client with an open connection throughout.
    let mut healthy = raw(&sandbox);
    healthy.write_all(&hello(&sandbox)).unwrap();
    assert!(matches!(read_one(&mut healthy).reply, Reply::Welcome(_)));

    // Garbage instead of a Hello.
    let mut bad = raw(&sandbox);
    bad.write_all(&[0, 0, 0, 3, 0xff, 0xfe, 0xfd]).unwrap();
    let (kind, message) = last_error(&read_to_close(&mut bad));
    assert_eq!(kind, ErrorKind::InvalidRequest);
    assert!(message.contains("bad Hello"), "{message}");

    // An oversize length prefix after a good Hello: refused before any body is read.
    let mut big = raw(&sandbox);
    big.write_all(&hello(&sandbox)).unwrap();
    assert!(matches!(read_one(&mut big).reply, Reply::Welcome(_)));
    big.write_all(&(10u32 * 1024 * 1024).to_be_bytes()).unwrap();
    let (_, message) = last_error(&read_to_close(&mut big));
    assert!(message.contains("exceeds"), "{message}");

    // A valid frame carrying an unknown request variant.
    let mut unknown = raw(&sandbox);
    unknown.write_all(&hello(&sandbox)).unwrap();
    read_one(&mut unknown);
    unknown.write_all(&[0, 0, 0, 3, 7, 99, 0]).unwrap();
    let (_, message) = last_error(&read_to_close(&mut unknown));
    assert!(message.contains("bad frame"), "{message}");

    // A frame with trailing bytes.
    let mut trailing = raw(&sandbox);
    trailing.write_all(&hello(&sandbox)).unwrap();
    read_one(&mut trailing);
    let mut status = frame::encode(&ClientFrame {
        id: 2,
        request: Request::Status,
    })
    .unwrap();
    status.push(0);
    let len = (status.len() - HEADER_LEN) as u32;
    status[..HEADER_LEN].copy_from_slice(&len.to_be_bytes());
    trailing.write_all(&status).unwrap();
    let (_, message) = last_error(&read_to_close(&mut trailing));
    assert!(message.contains("unexpected bytes"), "{message}");

    // A request before Hello.
    let mut rude = raw(&sandbox);
    rude.write_all(
        &frame::encode(&ClientFrame {
            id: 9,
            request: Request::Status,
        })
        .unwrap(),
    )
    .unwrap();
    let (_, message) = last_error(&read_to_close(&mut rude));
    assert!(message.contains("must be Hello"), "{message}");

    // The healthy connection still works, pipelined.
    for id in [10u64, 11] {
        let get = ClientFrame {
            id,
            request: Request::GetToken(GetToken {
                scopes: vec![ARM.into()],
                tenant: None,
                claims: None,
                min_validity_secs: 0,
            }),
        };
        healthy.write_all(&frame::encode(&get).unwrap()).unwrap();
    }
    let replies = [read_one(&mut healthy), read_one(&mut healthy)];
    let mut ids: Vec<u64> = replies.iter().map(|r| r.id).collect();
    ids.sort();
    assert_eq!(ids, [10, 11]);
    for reply in &replies {
        assert!(matches!(reply.reply, Reply::Token(_)), "{:?}", reply.reply);
    }
    assert_eq!(sandbox.az.invocations(), 1);
}

#[test]
fn a_frame_that_never_completes_times_out() {
    let mut sandbox = Sandbox::new();
    sandbox.start_daemon();
    let mut slow = raw(&sandbox);
    slow.write_all(&hello(&sandbox)).unwrap();
    read_one(&mut slow);
    // Announce 100 bytes, send 3, then stall.
    slow.write_all(&[0, 0, 0, 100, 1, 2, 3]).unwrap();
    let (_, message) = last_error(&read_to_close(&mut slow));
    assert!(message.contains("not completed within 5 s"), "{message}");
    sandbox.token(ARM, &[]);
}

#[test]
fn a_client_of_another_protocol_version_is_refused_clearly() {
    let mut sandbox = Sandbox::new();
    sandbox.start_daemon();
    let mut stream = raw(&sandbox);
    let mut bytes = hello(&sandbox);
    // id (1 byte), variant (1 byte), then the version: make it 99.
    bytes[HEADER_LEN + 2] = 99;
    stream.write_all(&bytes).unwrap();
    let frames = read_to_close(&mut stream);
    let (kind, message) = last_error(&frames);
    assert_eq!(kind, ErrorKind::Refused);
    assert!(message.contains("protocol version 99"), "{message}");
    assert_eq!(frames[0].id, 1);
}

#[test]
fn invalid_scopes_and_tenants_are_rejected_with_a_reason() {
    let mut sandbox = Sandbox::new();
    sandbox.start_daemon();
    for args in [
        vec!["token", "--scope", "https://x/.default; rm -rf /"],
        vec!["token", "--scope", ARM, "--tenant", "$(id)"],
    ] {
        let out = sandbox.cli(&args);
        assert_eq!(out.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("invalid request"), "{stderr}");
    }
    assert_eq!(sandbox.az.invocations(), 0);
}
