//! A blocking client for one request: connect (starting the daemon when
//! allowed), then Hello and the request in a single write, then their two
//! replies. For short-lived processes on the hot path, such as the `az` shim,
//! where starting an async runtime would cost more than the exchange itself.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use azbroker_proto::frame::{self, HEADER_LEN};
use azbroker_proto::{
    ClientFrame, DaemonFrame, GetToken, Hello, Reply, Request, TokenReply, PROTOCOL_VERSION,
};
use zeroize::{Zeroize, Zeroizing};

use crate::client::unexpected;
use crate::{connect, ClientError, ClientOptions};

/// How long the daemon may take to answer Hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Connection attempts when a handshake breaks (a daemon that is dying or
/// losing a start race may accept and then reset).
const CONNECT_ATTEMPTS: u32 = 3;

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
            Err(Handshake(ClientError::Protocol(_))) if attempt < CONNECT_ATTEMPTS => {
                std::thread::sleep(Duration::from_millis(20 * u64::from(attempt)));
            }
            Err(Handshake(e)) => return Err(e),
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
    connect::start_locked(socket)?;
    connect::connect_blocking(socket)?.ok_or_else(|| connect::vanished(socket))
}

/// A failure worth another connection only while it is a broken handshake.
struct Handshake(ClientError);

fn exchange(
    mut stream: UnixStream,
    options: &ClientOptions,
    request: &Request,
) -> Result<Reply, Handshake> {
    let broken = |what: &str, e: &dyn std::fmt::Display| {
        Handshake(ClientError::Protocol(format!("{what}: {e}")))
    };
    let hello = ClientFrame {
        id: 0,
        request: Request::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            client_name: options.client_name.clone(),
            pid: std::process::id(),
            chain: options.chain.clone(),
        }),
    };
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
    stream
        .set_write_timeout(Some(HELLO_TIMEOUT))
        .and_then(|()| stream.set_read_timeout(Some(HELLO_TIMEOUT)))
        .map_err(|e| broken("socket options", &e))?;
    // A refusing daemon answers and closes at once, maybe before our write:
    // its answer is still worth reading when the write failed.
    let sent = stream.write_all(&bytes);

    // Replies carry tokens: wiped when dropped.
    let mut buf = Zeroizing::new(Vec::new());
    match read_frame(&mut stream, &mut buf) {
        Ok(DaemonFrame {
            reply: Reply::Welcome(_),
            ..
        }) => {}
        Ok(DaemonFrame {
            reply: Reply::Error(e),
            ..
        }) => return Err(Handshake(ClientError::Daemon(e))),
        Ok(other) => return Err(Handshake(unexpected(&other.reply))),
        Err(e) if is_timeout(&e) => {
            return Err(Handshake(ClientError::Timeout(
                "the daemon did not answer Hello".into(),
            )))
        }
        Err(e) => match sent {
            Err(sent) => return Err(broken("sending Hello", &sent)),
            Ok(()) => return Err(broken("reading Welcome", &e)),
        },
    }
    if let Err(e) = sent {
        return Err(broken("sending the request", &e));
    }

    // From here on the daemon is there: a failure is final, not a reason to reconnect.
    let fail = |e: ClientError| Handshake(e);
    stream
        .set_read_timeout(Some(options.request_timeout))
        .map_err(|e| fail(ClientError::Protocol(e.to_string())))?;
    match read_frame(&mut stream, &mut buf) {
        Ok(DaemonFrame { id: 1, reply }) => Ok(reply),
        Ok(DaemonFrame {
            reply: Reply::Error(e),
            ..
        }) => Err(fail(ClientError::Daemon(e))),
        Ok(other) => Err(fail(unexpected(&other.reply))),
        Err(e) if is_timeout(&e) => Err(fail(ClientError::Timeout(format!(
            "no answer from azbrokerd within {} s",
            options.request_timeout.as_secs()
        )))),
        Err(e) => Err(fail(ClientError::Protocol(format!(
            "reading the reply: {e}"
        )))),
    }
}

/// Reads one frame and decodes it; the length is checked before the body is read.
fn read_frame(stream: &mut UnixStream, buf: &mut Vec<u8>) -> io::Result<DaemonFrame> {
    let mut header = [0u8; HEADER_LEN];
    stream.read_exact(&mut header)?;
    let len = frame::body_len(header).map_err(invalid)?;
    // Wiped before it may grow: a reallocation frees the old bytes unwiped.
    buf.zeroize();
    buf.resize(len, 0);
    stream.read_exact(buf)?;
    frame::decode(buf).map_err(invalid)
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
