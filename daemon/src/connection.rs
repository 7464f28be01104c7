//! One client connection: frames in, requests dispatched, replies out.
//!
//! The peer's uid is checked before anything is read. The first frame must be a
//! Hello within [`HELLO_TIMEOUT`]; after that the connection may idle (until
//! the connection table closes it: see `connection_table`), but a frame once
//! started must arrive whole within [`FRAME_TIMEOUT`]. Requests are
//! pipelined: a cache hit is answered inline, a miss runs as its own task and
//! answers when done, tagged with its request id. Any malformed input closes
//! this connection only, and so does a reply that cannot be written within
//! [`WRITE_TIMEOUT`] (the client would otherwise wait forever for it).
//!
//! A hit is the hot path of the whole broker: it is encoded straight from the
//! cached token into the connection's one write buffer, with no copy of the
//! token and no allocation.

use std::sync::Arc;
use std::time::Duration;

use azbroker_proto::buffered::{self, Buffered};
use azbroker_proto::io::{read_body, ReadError};
use azbroker_proto::{
    frame, peek_hello_version, ClientFrame, DaemonFrame, ErrorKind, Reply, Request, RequestId,
    StatusQuery, TokenFrameRef, TokenReplyRef, Welcome, WireError, PROTOCOL_VERSION,
};
use interprocess::local_socket::tokio::Stream;
use interprocess::local_socket::traits::StreamCommon;
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Mutex, Semaphore};
use zeroize::Zeroizing;

use crate::broker::Broker;
use crate::cache::{CachedToken, HitMemo};
use crate::connection_table::{Activity, Slot};
use crate::policy::PolicyMemo;
use crate::refresh::DEFAULT_MIN_VALIDITY_SECS;
use crate::session::Session;
use crate::stats::Stats;

pub const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(5);
/// A reply not written whole within this closes the connection.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Misses one connection may have in flight; more wait (backpressure).
const MAX_IN_FLIGHT: usize = 256;

/// The write half of a connection and the buffer every frame it sends is
/// encoded into; the buffer holds tokens, so it is wiped when dropped.
struct FrameWriter {
    stream: OwnedWriteHalf,
    buf: Zeroizing<Vec<u8>>,
    /// Closes the connection when a reply cannot be written.
    activity: Arc<Activity>,
    /// A reply was lost: nothing more is sent on this connection.
    broken: bool,
}

impl FrameWriter {
    fn new(stream: OwnedWriteHalf, activity: Arc<Activity>) -> Writer {
        Arc::new(Mutex::new(FrameWriter {
            stream,
            buf: Zeroizing::new(Vec::new()),
            activity,
            broken: false,
        }))
    }
}

type Writer = Arc<Mutex<FrameWriter>>;
type Reader = BufReader<OwnedReadHalf>;

/// Serves one admitted connection; it leaves the connection table when `slot`
/// is dropped, after everything else here.
pub async fn serve(broker: Arc<Broker>, stream: Stream, slot: Slot) {
    let stats = broker.stats.clone();
    Stats::bump(&stats.connections_accepted);
    stats
        .connections_open
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    match check_peer(&stream) {
        Err(refusal) => {
            Stats::bump(&stats.connections_refused);
            tracing::warn!(reason = %refusal.message, "connection refused");
            refuse(stream, refusal).await;
        }
        Ok(peer_pid) => {
            let (read, write) = split(stream);
            let writer = FrameWriter::new(write, slot.activity().clone());
            let mut reader = BufReader::with_capacity(16 * 1024, read);
            if let Some(session) = handshake(&broker, peer_pid, &mut reader, &writer).await {
                tracing::debug!(client = %crate::log_escape::Escaped(&session.client), pid = session.pid, "client connected");
                requests(
                    &broker,
                    Arc::new(session),
                    &mut reader,
                    &writer,
                    slot.activity(),
                )
                .await;
            }
        }
    }
    stats
        .connections_open
        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
}

/// Tells a peer why it is not served, then closes.
pub async fn refuse(stream: Stream, refusal: WireError) {
    let (read, write) = split(stream);
    let writer = FrameWriter::new(write, Arc::new(Activity::default()));
    send_reply(&writer, 0, Reply::Error(refusal)).await;
    // Let the peer finish sending its Hello before we close, so its
    // write does not fail before it reads why it was refused.
    let mut reader = BufReader::with_capacity(1024, read);
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        read_body(&mut reader, &mut Vec::new()),
    )
    .await;
}

/// tokio's own halves of the socket. Their reads skip the extra `recvfrom`
/// (answered EAGAIN) that reading through interprocess's `&Stream` costs after
/// every frame, and they need no shared `Arc`.
fn split(stream: Stream) -> (OwnedReadHalf, OwnedWriteHalf) {
    let Stream::UdSocket(stream) = stream;
    tokio::net::UnixStream::from(stream).into_split()
}

/// Refuses any peer that is not this daemon's own user, whatever the socket's
/// mode; returns the peer's pid (where the platform says).
fn check_peer(stream: &Stream) -> Result<Option<u32>, WireError> {
    let me = nix::unistd::geteuid().as_raw();
    let refuse = |why: String| Err(WireError::new(ErrorKind::Refused, why));
    match stream.peer_creds() {
        Ok(creds) => match creds.euid() {
            Some(uid) if uid == me => Ok(creds.pid().and_then(|pid| u32::try_from(pid).ok())),
            Some(uid) => refuse(format!(
                "azbrokerd serves only its own user (uid {me}); connections from uid {uid} are refused"
            )),
            None => refuse("the peer's user id is unknown; refusing".into()),
        },
        Err(e) => refuse(format!("cannot read the peer's credentials ({e}); refusing")),
    }
}

/// Reads the Hello and opens the session of the peer process `peer_pid`.
async fn handshake(
    broker: &Broker,
    peer_pid: Option<u32>,
    reader: &mut Reader,
    writer: &Writer,
) -> Option<Session> {
    let mut buf = Vec::new();
    match tokio::time::timeout(HELLO_TIMEOUT, read_body(reader, &mut buf)).await {
        Ok(Ok(())) => {}
        Ok(Err(ReadError::Closed)) => return None,
        Ok(Err(e)) => {
            reject(writer, 0, format!("bad first frame: {e}")).await;
            return None;
        }
        Err(_) => {
            reject(writer, 0, "no Hello within 5 s".into()).await;
            return None;
        }
    }
    let (id, hello) = match frame::decode::<ClientFrame>(&buf) {
        Ok(ClientFrame {
            id,
            request: Request::Hello(hello),
        }) => (id, hello),
        Ok(ClientFrame { id, .. }) => {
            reject(writer, id, "the first request must be Hello".into()).await;
            return None;
        }
        Err(e) => {
            match peek_hello_version(&buf) {
                Some((id, version)) if version != PROTOCOL_VERSION => {
                    send_reply(writer, id, Reply::Error(version_mismatch(version))).await
                }
                _ => reject(writer, 0, format!("bad Hello: {e}")).await,
            }
            return None;
        }
    };
    if hello.protocol_version != PROTOCOL_VERSION {
        send_reply(
            writer,
            id,
            Reply::Error(version_mismatch(hello.protocol_version)),
        )
        .await;
        return None;
    }
    // Who is asking comes from the socket, never from the Hello.
    let requester = broker.policy.requester(peer_pid);
    match Session::open(hello, requester) {
        Ok(session) => {
            let welcome = Welcome {
                protocol_version: PROTOCOL_VERSION,
                daemon_version: crate::VERSION.into(),
                daemon_pid: std::process::id(),
            };
            send_reply(writer, id, Reply::Welcome(welcome)).await;
            Some(session)
        }
        Err(e) => {
            send_reply(writer, id, Reply::Error(e)).await;
            None
        }
    }
}

/// What reading a connection's next frame came to.
enum Incoming {
    Frame(ClientFrame),
    Closed,
    Bad(String),
}

/// Reads and decodes the next frame, which has [`FRAME_TIMEOUT`] to arrive whole.
async fn next_frame(reader: &mut Reader, buf: &mut Vec<u8>) -> Incoming {
    let decoded = |body: &[u8]| match frame::decode::<ClientFrame>(body) {
        Ok(frame) => Incoming::Frame(frame),
        Err(e) => Incoming::Bad(format!("bad frame: {e}")),
    };
    // The common case: the whole frame came in one read. Decode it where it
    // is, with no copy and no deadline to arm.
    match buffered::decode_front::<ClientFrame>(reader.buffer()) {
        Ok(Buffered::Frame { message, consumed }) => {
            reader.consume(consumed);
            return Incoming::Frame(message);
        }
        Ok(Buffered::NeedMore { .. }) => {}
        Err(e) => return Incoming::Bad(format!("bad frame: {e}")),
    }
    match tokio::time::timeout(FRAME_TIMEOUT, read_body(reader, buf)).await {
        Ok(Ok(())) => decoded(buf),
        Ok(Err(ReadError::Closed)) => Incoming::Closed,
        Ok(Err(e)) => Incoming::Bad(format!("bad frame: {e}")),
        Err(_) => Incoming::Bad("frame not completed within 5 s".into()),
    }
}

async fn requests(
    broker: &Arc<Broker>,
    session: Arc<Session>,
    reader: &mut Reader,
    writer: &Writer,
    activity: &Arc<Activity>,
) {
    let mut buf = Vec::new();
    // The connection table closes this connection when it has been idle too
    // long, must make room, or the daemon stops: one lock-free wait for all.
    let closed = activity.closed();
    tokio::pin!(closed);
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut memo = HitMemo::default();
    let mut allowed = PolicyMemo::default();
    loop {
        tokio::select! {
            // First: a connection that keeps sending must still notice.
            biased;
            _ = &mut closed => return,
            ready = reader.fill_buf() => match ready {
                Ok(bytes) if !bytes.is_empty() => {}
                _ => return,
            },
        }
        let ClientFrame { id, request } = match next_frame(reader, &mut buf).await {
            Incoming::Frame(frame) => frame,
            Incoming::Closed => return,
            Incoming::Bad(message) => {
                reject(writer, 0, message).await;
                return;
            }
        };
        activity.touch();
        Stats::bump(&broker.stats.requests);
        match request {
            Request::GetToken(get) => {
                let prepared = match broker.prepare_remembered(&session, get, &mut allowed) {
                    Ok(prepared) => prepared,
                    Err(e) => {
                        error_reply(broker, writer, id, e).await;
                        continue;
                    }
                };
                if let Some(token) = broker.lookup(&session, &prepared, &mut memo).await {
                    send_token(writer, id, &token, true).await;
                    continue;
                }
                let Ok(permit) = in_flight.clone().acquire_owned().await else {
                    return;
                };
                let busy = activity.start();
                let (broker, session, writer) = (broker.clone(), session.clone(), writer.clone());
                tokio::spawn(async move {
                    match broker.acquire(&session, prepared).await {
                        Ok((token, cached)) => send_token(&writer, id, &token, cached).await,
                        Err(e) => error_reply(&broker, &writer, id, e).await,
                    }
                    drop((permit, busy));
                });
            }
            Request::Status => {
                // Clients that predate pages get the first (what fits in a frame).
                let first = broker.status(&StatusQuery {
                    credentials_from: 0,
                    cache_from: 0,
                    cache_limit: None,
                });
                send_reply(writer, id, Reply::Status(Box::new(first.report))).await;
            }
            Request::StatusPage(query) => {
                let page = broker.status(&query);
                send_reply(writer, id, Reply::StatusPage(Box::new(page))).await;
            }
            Request::RegisterExec(exec) => match broker.policy.register_exec(
                session.requester.pid,
                &exec.name,
                &exec.allow_scopes,
                &exec.deny_scopes,
            ) {
                Ok(()) => {
                    tracing::info!(name = %crate::log_escape::Escaped(&exec.name), pid = ?session.requester.pid, "exec registered");
                    send_reply(writer, id, Reply::ExecRegistered).await
                }
                Err(e) => error_reply(broker, writer, id, e).await,
            },
            Request::Invalidate(invalidate) => match broker
                .invalidate(&invalidate.scopes, &invalidate.credentials)
                .await
            {
                Ok(removed) => send_reply(writer, id, Reply::Invalidated { removed }).await,
                Err(e) => error_reply(broker, writer, id, e).await,
            },
            Request::Diagnose(diagnose) => {
                // Seconds of network checks: run beside the connection, like a miss.
                let Ok(permit) = in_flight.clone().acquire_owned().await else {
                    return;
                };
                let busy = activity.start();
                let (broker, writer) = (broker.clone(), writer.clone());
                tokio::spawn(async move {
                    match crate::diagnose::run(broker.network.clone(), diagnose).await {
                        Ok(found) => {
                            send_reply(&writer, id, Reply::Diagnosis(Box::new(found))).await
                        }
                        Err(e) => error_reply(&broker, &writer, id, e).await,
                    }
                    drop((permit, busy));
                });
            }
            Request::Shutdown => {
                tracing::info!(client = %crate::log_escape::Escaped(&session.client), pid = session.pid, "shutdown requested");
                send_reply(writer, id, Reply::ShuttingDown).await;
                broker.request_shutdown();
            }
            Request::Login(login) => {
                let Ok(permit) = in_flight.clone().acquire_owned().await else {
                    return;
                };
                let busy = activity.start();
                let (broker, session, writer) = (broker.clone(), session.clone(), writer.clone());
                tokio::spawn(async move {
                    let (progress, mut messages) = tokio::sync::mpsc::unbounded_channel();
                    let relay_writer = writer.clone();
                    let relay = tokio::spawn(async move {
                        while let Some(message) = messages.recv().await {
                            send_reply(&relay_writer, id, Reply::LoginProgress { message }).await;
                        }
                    });
                    let result = broker.login(&session, login, progress).await;
                    // Every progress frame goes out before the final answer.
                    let _ = relay.await;
                    match result {
                        Ok(done) => send_reply(&writer, id, Reply::LoggedIn(done)).await,
                        Err(e) => error_reply(&broker, &writer, id, e).await,
                    }
                    drop((permit, busy));
                });
            }
            Request::Logout(logout) => match broker.logout(&session, logout).await {
                Ok((accounts, tokens_dropped)) => {
                    send_reply(
                        writer,
                        id,
                        Reply::LoggedOut {
                            accounts,
                            tokens_dropped,
                        },
                    )
                    .await
                }
                Err(e) => error_reply(broker, writer, id, e).await,
            },
            Request::ManagedIdentity => {
                let endpoint = broker.mi_endpoint();
                send_reply(writer, id, Reply::ManagedIdentity(endpoint)).await;
            }
            Request::Audit(query) => {
                let page = broker.audit.query(&query);
                send_reply(writer, id, Reply::Audit(page)).await;
            }
            Request::Hello(_) => {
                reject(writer, id, "Hello may only be sent once".into()).await;
                return;
            }
        }
    }
}

async fn error_reply(broker: &Broker, writer: &Writer, id: RequestId, error: WireError) {
    Stats::bump(&broker.stats.errors);
    send_reply(writer, id, Reply::Error(error)).await;
}

async fn reject(writer: &Writer, id: RequestId, message: String) {
    tracing::debug!(message = %crate::log_escape::Escaped(&message), "closing connection");
    send_reply(
        writer,
        id,
        Reply::Error(WireError::new(ErrorKind::InvalidRequest, message)),
    )
    .await;
}

async fn send_reply(writer: &Writer, id: RequestId, reply: Reply) {
    send(writer, id, &DaemonFrame { id, reply }).await;
}

async fn send_token(writer: &Writer, id: RequestId, token: &CachedToken, cached: bool) {
    let frame = TokenFrameRef {
        id,
        token: token_reply(token, cached),
    };
    send(writer, id, &frame).await;
}

/// The reply for `token`, borrowing from it (see [`TokenReplyRef`]). A token
/// below the daemon's refresh floor is `stale`: a newer one could not be had.
pub fn token_reply(token: &CachedToken, cached: bool) -> TokenReplyRef<'_> {
    TokenReplyRef {
        access_token: token.access_token.expose(),
        token_type: "Bearer",
        expires_on: token.expires_on,
        refresh_on: token.refresh_on,
        tenant: token.tenant.as_deref(),
        credential: token.credential.name(),
        cached,
        stale: !token.valid_for(DEFAULT_MIN_VALIDITY_SECS),
    }
}

pub fn version_mismatch(client_version: u32) -> WireError {
    WireError::new(
        ErrorKind::Refused,
        format!(
            "protocol version {client_version} is not supported: this azbrokerd {} speaks version {PROTOCOL_VERSION}; restart it with 'azbroker stop' so a matching daemon starts",
            crate::VERSION
        ),
    )
}

/// A client that went away loses its reply, nothing else. A reply that cannot
/// be encoded (larger than a frame may be) becomes an error reply, so the
/// client is never left waiting for it. A reply that cannot be written whole
/// within [`WRITE_TIMEOUT`] (the client does not read) closes the connection:
/// the stream is out of step, and the client is better told by a broken
/// connection (it retries or fails) than left waiting for a lost reply.
async fn send<T: Serialize>(writer: &Writer, id: RequestId, frame: &T) {
    let mut writer = writer.lock().await;
    let FrameWriter {
        stream,
        buf,
        activity,
        broken,
    } = &mut *writer;
    if *broken {
        return;
    }
    if let Err(e) = frame::encode_into(buf, frame) {
        tracing::error!(error = %e, "cannot encode a reply");
        let error = WireError::new(
            ErrorKind::Internal,
            format!("the reply cannot be sent: {e}"),
        );
        let fallback = DaemonFrame {
            id,
            reply: Reply::Error(error),
        };
        if frame::encode_into(buf, &fallback).is_err() {
            return;
        }
    }
    // The common case: the socket takes the whole reply at once, and no
    // timer is armed. Whatever it did not take gets the timed write.
    // (Would block, or failed: the timed write waits, or meets the error and says so.)
    let sent = stream.try_write(buf).unwrap_or(0);
    if sent == buf.len() {
        return;
    }
    let rest = &buf[sent..];
    let written = tokio::time::timeout(WRITE_TIMEOUT, async {
        stream.write_all(rest).await?;
        stream.flush().await
    })
    .await;
    if !matches!(written, Ok(Ok(()))) {
        match written {
            Err(_) => tracing::info!("a client did not read its replies: closing its connection"),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "cannot write a reply: closing the connection")
            }
            Ok(Ok(())) => {}
        }
        *broken = true;
        let _ = stream.shutdown().await;
        activity.close();
    }
}
