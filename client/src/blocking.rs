//! A blocking client for one request: connect (starting the daemon when
//! allowed), then Hello and the request in a single write, then their two
//! replies. For short-lived processes on the hot path, such as the `az` shim,
//! where starting an async runtime would cost more than the exchange itself.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;

use azbroker_proto::buffered::{self, Buffered};
use azbroker_proto::frame;
use azbroker_proto::handshake::{self, FirstRead, POLICY};
use azbroker_proto::{ClientFrame, DaemonFrame, GetToken, Reply, Request, TokenReply};
use zeroize::{Zeroize, Zeroizing};

use crate::client::unexpected;
use crate::{connect, ClientError, ClientOptions};

/// Sends `request` on a fresh connection and returns the daemon's reply; an
/// error reply becomes [`ClientError::Daemon`].
pub fn request(options: &ClientOptions, request: &Request) -> Result<Reply, ClientError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let stream = connect_or_start(options)?;
        match exchange(stream, options, request) {
            Ok(Reply::Error(e)) => return Err(ClientError::Daemon(e)),
            Ok(reply) => return Ok(reply),
            Err(e) => match e.retry_after(attempt) {
                Some(pause) => std::thread::sleep(pause),
                None => return Err(e),
            },
        }
    }
}

/// One token, blocking.
pub fn get_token(options: &ClientOptions, get: GetToken) -> Result<TokenReply, ClientError> {
    match request(options, &Request::GetToken(get))? {
        Reply::Token(token) => Ok(token),
        other => Err(unexpected(&other)),
    }
}

fn connect_or_start(options: &ClientOptions) -> Result<UnixStream, ClientError> {
    let socket = &options.socket;
    if let Some(stream) = connect::connect_blocking(socket)? {
        return Ok(stream);
    }
    if !options.autostart {
        return Err(connect::not_running_no_autostart(socket));
    }
    connect::start_locked(socket, options.start_with_managed_identity)?;
    connect::connect_blocking(socket)?.ok_or_else(|| connect::vanished(socket))
}

fn exchange(
    mut stream: UnixStream,
    options: &ClientOptions,
    request: &Request,
) -> Result<Reply, ClientError> {
    let broken =
        |what: &str, e: &dyn std::fmt::Display| ClientError::Protocol(format!("{what}: {e}"));
    let hello = handshake::hello(&options.client_name, &options.chain);
    // The Hello carries the chain's secrets: both frames go into one buffer,
    // wiped when it is dropped (the request is encoded straight after it).
    let mut bytes =
        Zeroizing::new(frame::encode(&hello).map_err(|e| broken("encoding Hello", &e))?);
    let ask = ClientFrame {
        id: 1,
        request: request.clone(),
    };
    let mut second = Zeroizing::new(Vec::new());
    frame::encode_into(&mut second, &ask).map_err(|e| broken("encoding the request", &e))?;
    bytes.extend_from_slice(&second);
    let opening = Some(POLICY.hello_timeout);
    stream
        .set_write_timeout(opening)
        .and_then(|()| stream.set_read_timeout(opening))
        .map_err(|e| broken("socket options", &e))?;
    // The reply is read whatever the write did: see `handshake`.
    let sent = stream.write_all(&bytes);

    // Replies carry tokens: wiped when dropped.
    let mut buf = Zeroizing::new(Vec::new());
    let read = match read_frame(&mut stream, &mut buf) {
        Ok(frame) => FirstRead::Frame(frame),
        Err(e) if is_timeout(&e) => FirstRead::TimedOut,
        Err(e) => FirstRead::Failed(e),
    };
    handshake::first_reply(sent.as_ref().map(|&()| ()), read)?;
    if let Err(e) = sent {
        return Err(broken("sending the request", &e));
    }

    // From here on the daemon is there: its refusal or silence is final; a
    // broken connection is tried afresh like a broken opening (`request`).
    stream
        .set_read_timeout(Some(options.request_timeout))
        .map_err(|e| ClientError::Protocol(e.to_string()))?;
    match read_frame(&mut stream, &mut buf) {
        Ok(DaemonFrame { id: 1, reply }) => Ok(reply),
        Ok(DaemonFrame {
            reply: Reply::Error(e),
            ..
        }) => Err(ClientError::Daemon(e)),
        Ok(other) => Err(unexpected(&other.reply)),
        Err(e) if is_timeout(&e) => Err(ClientError::Timeout(format!(
            "no answer from azbrokerd within {} s",
            options.request_timeout.as_secs()
        ))),
        Err(e) => Err(broken("reading the reply", &e)),
    }
}

/// Reads one frame into `buf` and decodes it. The length is checked before
/// the body is read, and nothing past the frame is read (the next reply stays
/// in the socket).
fn read_frame(stream: &mut UnixStream, buf: &mut Vec<u8>) -> io::Result<DaemonFrame> {
    // Wiped first: growing it below may reallocate, which frees the old bytes
    // unwiped; after this they are at most a length prefix.
    buf.zeroize();
    loop {
        match buffered::decode_front(buf).map_err(invalid)? {
            Buffered::Frame { message, .. } => return Ok(message),
            Buffered::NeedMore { missing } => {
                let start = buf.len();
                buf.resize(start + missing, 0);
                stream.read_exact(&mut buf[start..])?;
            }
        }
    }
}

fn invalid(e: frame::FrameError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use azbroker_proto::{ErrorKind, Welcome, WireError, PROTOCOL_VERSION};

    use super::*;

    fn options() -> ClientOptions {
        crate::test_options("blocking-test", Duration::from_secs(5))
    }

    fn frame_bytes(id: u64, reply: Reply) -> Vec<u8> {
        frame::encode(&DaemonFrame { id, reply }).unwrap()
    }

    /// A daemon that refuses answers and closes before reading the Hello:
    /// the refusal is what the caller sees, whatever the write did.
    #[test]
    fn a_refusal_sent_before_the_hello_is_reported() {
        let (client, mut daemon) = UnixStream::pair().unwrap();
        let refusal = WireError::new(ErrorKind::Refused, "protocol version 1 is not supported");
        daemon
            .write_all(&frame_bytes(0, Reply::Error(refusal.clone())))
            .unwrap();
        drop(daemon);
        match exchange(client, &options(), &Request::Status) {
            Err(ClientError::Daemon(e)) => assert_eq!(e, refusal),
            other => panic!("expected the refusal, got {other:?}"),
        }
    }

    /// Welcome and reply trickling in a byte at a time still decode whole.
    #[test]
    fn replies_arriving_a_byte_at_a_time_are_read_whole() {
        let (client, mut daemon) = UnixStream::pair().unwrap();
        let peer = std::thread::spawn(move || {
            let mut hello = [0u8; 1];
            daemon.read_exact(&mut hello).unwrap();
            let welcome = Welcome {
                protocol_version: PROTOCOL_VERSION,
                daemon_version: "0.1.0".into(),
                daemon_pid: 1,
            };
            let mut bytes = frame_bytes(0, Reply::Welcome(welcome));
            bytes.extend(frame_bytes(1, Reply::Invalidated { removed: 3 }));
            for byte in bytes {
                daemon.write_all(&[byte]).unwrap();
            }
        });
        let reply = exchange(client, &options(), &Request::Status).unwrap();
        assert_eq!(reply, Reply::Invalidated { removed: 3 });
        peer.join().unwrap();
    }
}
