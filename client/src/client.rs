//! A typed, pipelined connection to `azbrokerd`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{
    AtomicBool, AtomicU64,
    Ordering::{AcqRel, Relaxed, Release},
};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use azbroker_proto::buffered::{self, Buffered};
use azbroker_proto::handshake::{self, FirstRead, POLICY};
use azbroker_proto::io::{read_message, write_message_with, ReadError};
use azbroker_proto::{
    AuditPage, AuditQuery, ChainSpec, ClientFrameRef, CredentialKind, DaemonFrame, DiagnoseRequest,
    Diagnosis, GetToken, Invalidate, LoggedIn, Login, Logout, ManagedIdentityEndpoint,
    RegisterExec, Reply, Request, StatusPage, StatusQuery, StatusReport, TokenReply, Welcome,
};
use interprocess::local_socket::tokio::Stream;
use tokio::io::AsyncBufReadExt;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, oneshot, Mutex, Notify};
use zeroize::Zeroizing;

use crate::reply_reader::ReplyReader;
use crate::{connect, ClientError};

/// Default limit for one request; a first `az` call or a browser login can be slow.
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(330);
/// A login waits for a person: a device code lives up to 15 minutes.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(20 * 60);

/// How to reach the daemon and what to tell it.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub socket: PathBuf,
    pub chain: ChainSpec,
    /// Shown in the daemon's logs, e.g. `azbroker-cli`.
    pub client_name: String,
    /// Start `azbrokerd` when none runs (off with `AZBROKER_NO_AUTOSTART=1`).
    pub autostart: bool,
    /// A daemon this client starts also serves the managed-identity endpoint
    /// (`azbrokerd --managed-identity-endpoint`).
    pub start_with_managed_identity: bool,
    pub request_timeout: Duration,
}

impl ClientOptions {
    /// Everything from this process's environment: socket path, chain, autostart switch.
    pub fn from_env(client_name: &str) -> Result<ClientOptions, ClientError> {
        let chain = ChainSpec::from_env().map_err(|e| ClientError::Config(e.to_string()))?;
        let no_autostart = azbroker_proto::env::boolean("AZBROKER_NO_AUTOSTART")
            .map_err(|e| ClientError::Config(e.to_string()))?;
        Ok(ClientOptions {
            socket: connect::default_socket_path(),
            chain,
            client_name: client_name.to_string(),
            autostart: !no_autostart,
            start_with_managed_identity: false,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        })
    }
}

/// A client of the broker. Cheap to share (`Arc` it); requests from many tasks
/// travel over one connection and complete in any order.
pub struct Client {
    options: ClientOptions,
    connection: Mutex<Option<Arc<Connection>>>,
}

impl Client {
    pub fn new(options: ClientOptions) -> Client {
        Client {
            options,
            connection: Mutex::new(None),
        }
    }

    /// A client configured from the environment; connects on first use.
    pub fn from_env(client_name: &str) -> Result<Client, ClientError> {
        Ok(Client::new(ClientOptions::from_env(client_name)?))
    }

    pub fn options(&self) -> &ClientOptions {
        &self.options
    }

    pub async fn get_token(&self, request: GetToken) -> Result<TokenReply, ClientError> {
        match self.call(Request::GetToken(request)).await? {
            Reply::Token(token) => Ok(token),
            other => Err(unexpected(&other)),
        }
    }

    /// The whole status: every credential and cache entry, asked for a page
    /// at a time (one frame holds about 1,000 cache entries; the cache up to 100,000).
    pub async fn status(&self) -> Result<StatusReport, ClientError> {
        Ok(self.status_with_limit(None).await?.report)
    }

    /// The status with every credential and at most `cache_limit` cache
    /// entries (all when `None`); the totals say how many exist.
    pub async fn status_with_limit(
        &self,
        cache_limit: Option<u64>,
    ) -> Result<StatusPage, ClientError> {
        let mut whole: Option<StatusPage> = None;
        loop {
            let (credentials_from, cache_from) = whole.as_ref().map_or((0, 0), |w| {
                (
                    w.report.credentials.len() as u64,
                    w.report.cache.len() as u64,
                )
            });
            let wanted = cache_limit.map(|limit| limit.saturating_sub(cache_from));
            let query = StatusQuery {
                credentials_from,
                cache_from,
                cache_limit: wanted.map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
            };
            let page = self.status_page(query).await?;
            let progressed = !page.report.credentials.is_empty() || !page.report.cache.is_empty();
            let merged = match whole.take() {
                None => page,
                Some(mut merged) => {
                    merged.report.credentials.extend(page.report.credentials);
                    merged.report.cache.extend(page.report.cache);
                    merged.credentials_total = page.credentials_total;
                    merged.cache_total = page.cache_total;
                    merged
                }
            };
            let cache_wanted =
                cache_limit.map_or(merged.cache_total, |l| l.min(merged.cache_total));
            let done = merged.report.credentials.len() as u64 >= merged.credentials_total
                && merged.report.cache.len() as u64 >= cache_wanted;
            // Lists shrink between pages too: an empty page ends it.
            if done || !progressed {
                return Ok(merged);
            }
            whole = Some(merged);
        }
    }

    /// One page of the status (see [`StatusQuery`]).
    pub async fn status_page(&self, query: StatusQuery) -> Result<StatusPage, ClientError> {
        match self.call(Request::StatusPage(query)).await? {
            Reply::StatusPage(page) => Ok(*page),
            other => Err(unexpected(&other)),
        }
    }

    /// Recorded token requests (see [`AuditQuery`]).
    pub async fn audit(&self, query: AuditQuery) -> Result<AuditPage, ClientError> {
        match self.call(Request::Audit(query)).await? {
            Reply::Audit(page) => Ok(page),
            other => Err(unexpected(&other)),
        }
    }

    /// Registers this process as `azbroker exec --name NAME` with its scope
    /// rules: the daemon then asks it, and every process it starts, for
    /// tokens under that NAME.
    pub async fn register_exec(&self, exec: RegisterExec) -> Result<(), ClientError> {
        match self.call(Request::RegisterExec(exec)).await? {
            Reply::ExecRegistered => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Drops cached tokens: of these scopes (all when empty), minted by
    /// credentials of these kinds (any when empty). Returns how many.
    pub async fn invalidate(
        &self,
        scopes: Vec<String>,
        credentials: Vec<CredentialKind>,
    ) -> Result<u64, ClientError> {
        match self
            .call(Request::Invalidate(Invalidate {
                scopes,
                credentials,
            }))
            .await?
        {
            Reply::Invalidated { removed } => Ok(removed),
            other => Err(unexpected(&other)),
        }
    }

    /// Logs a user in inside the daemon (browser or device code). `on_progress`
    /// sees what the user must read meanwhile, e.g. the device code message.
    pub async fn login(
        &self,
        login: Login,
        mut on_progress: impl FnMut(&str),
    ) -> Result<LoggedIn, ClientError> {
        let (progress, mut messages) = mpsc::unbounded_channel();
        let call = self.call_with(Request::Login(login), LOGIN_TIMEOUT, Some(progress));
        tokio::pin!(call);
        let reply = loop {
            tokio::select! {
                Some(message) = messages.recv() => on_progress(&message),
                reply = &mut call => break reply,
            }
        };
        while let Ok(message) = messages.try_recv() {
            on_progress(&message);
        }
        match reply? {
            Reply::LoggedIn(done) => Ok(done),
            other => Err(unexpected(&other)),
        }
    }

    /// Forgets the account `logout` names (or all); returns (accounts, cached tokens dropped).
    pub async fn logout(&self, logout: Logout) -> Result<(u64, u64), ClientError> {
        match self.call(Request::Logout(logout)).await? {
            Reply::LoggedOut {
                accounts,
                tokens_dropped,
            } => Ok((accounts, tokens_dropped)),
            other => Err(unexpected(&other)),
        }
    }

    /// Where the daemon serves its managed-identity endpoint; `None` when it
    /// was started without one.
    pub async fn managed_identity(&self) -> Result<Option<ManagedIdentityEndpoint>, ClientError> {
        match self.call(Request::ManagedIdentity).await? {
            Reply::ManagedIdentity(endpoint) => Ok(endpoint),
            other => Err(unexpected(&other)),
        }
    }

    /// Checks endpoints with the daemon's proxy and trust settings (`azbroker diagnose`).
    pub async fn diagnose(&self, request: DiagnoseRequest) -> Result<Diagnosis, ClientError> {
        match self.call(Request::Diagnose(request)).await? {
            Reply::Diagnosis(diagnosis) => Ok(*diagnosis),
            other => Err(unexpected(&other)),
        }
    }

    /// Asks the daemon to exit. Never starts one.
    pub async fn shutdown(&self) -> Result<(), ClientError> {
        match self.call(Request::Shutdown).await? {
            Reply::ShuttingDown => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// The daemon's Welcome on the current connection, connecting if needed.
    pub async fn welcome(&self) -> Result<Welcome, ClientError> {
        Ok(self.connection().await?.welcome.clone())
    }

    /// Sends one request; if the connection turns out to be broken (the daemon
    /// restarted or died), reconnects once, starting a daemon if allowed, and resends.
    async fn call(&self, request: Request) -> Result<Reply, ClientError> {
        self.call_with(request, self.options.request_timeout, None)
            .await
    }

    async fn call_with(
        &self,
        request: Request,
        timeout: Duration,
        progress: Option<mpsc::UnboundedSender<String>>,
    ) -> Result<Reply, ClientError> {
        let connection = self.connection().await?;
        let reply = match connection
            .request(&request, timeout, progress.clone())
            .await
        {
            Err(Broken(_)) if !matches!(request, Request::Shutdown) => {
                self.forget(&connection).await;
                let connection = self.connection().await?;
                connection.request(&request, timeout, progress).await
            }
            other => other,
        };
        match reply.map_err(|Broken(e)| e)? {
            Reply::Error(e) => Err(ClientError::Daemon(e)),
            reply => Ok(reply),
        }
    }

    async fn connection(&self) -> Result<Arc<Connection>, ClientError> {
        let mut slot = self.connection.lock().await;
        if let Some(connection) = slot.as_ref().filter(|c| c.is_open()) {
            return Ok(connection.clone());
        }
        // A daemon that is dying (killed, or losing a start race) may accept a
        // connection and then reset it: connect afresh a few times before giving up.
        let mut attempt = 0;
        let connection = loop {
            attempt += 1;
            let stream = connect::connect_or_start(&self.options).await?;
            match Connection::open(stream, &self.options).await {
                Ok(connection) => break Arc::new(connection),
                Err(e) => match e.retry_after(attempt) {
                    Some(pause) => tokio::time::sleep(pause).await,
                    None => return Err(e),
                },
            }
        };
        *slot = Some(connection.clone());
        Ok(connection)
    }

    async fn forget(&self, broken: &Arc<Connection>) {
        let mut slot = self.connection.lock().await;
        if slot.as_ref().is_some_and(|c| Arc::ptr_eq(c, broken)) {
            *slot = None;
        }
    }
}

pub(crate) fn unexpected(reply: &Reply) -> ClientError {
    ClientError::Protocol(format!("unexpected {} reply", reply.name()))
}

/// The connection failed under a request (worth one reconnect).
struct Broken(ClientError);

/// Who waits for the replies to one request id.
struct Waiter {
    done: oneshot::Sender<Reply>,
    /// Receives `LoginProgress` messages, which do not end the request.
    progress: Option<mpsc::UnboundedSender<String>>,
    /// When the caller stops waiting: the connection's [`watch_deadlines`]
    /// then answers it with a timeout.
    deadline: Instant,
    timeout: Duration,
}

type Pending = Arc<StdMutex<Option<HashMap<u64, Waiter>>>>;

/// How often a connection with requests in flight looks for overdue ones: a
/// request times out up to this much after its deadline. One watch per
/// connection instead of a timer per request, whose registration and removal
/// were a tenth of the library's work per cached token.
const DEADLINE_TICK: Duration = Duration::from_secs(1);

/// Wakes a connection's deadline watch, which sleeps while nothing is in flight.
#[derive(Default)]
struct Watch {
    /// The watch waits on `wake` (set by it; cleared by whoever wakes it).
    idle: AtomicBool,
    wake: Notify,
}

/// One open connection: a writer shared by callers and a reader task that
/// routes each reply to the caller waiting on its id.
struct Connection {
    writer: Mutex<FrameWriter>,
    /// `None` once the reader has seen the connection end.
    pending: Pending,
    next_id: AtomicU64,
    welcome: Welcome,
    reader: tokio::task::JoinHandle<()>,
    watch: Arc<Watch>,
    watcher: tokio::task::JoinHandle<()>,
}

/// The write half and the buffer each request is encoded into (reused,
/// wiped when the connection goes).
struct FrameWriter {
    stream: OwnedWriteHalf,
    buf: Zeroizing<Vec<u8>>,
}

/// Replies, buffered in memory that is wiped when the connection goes.
type Replies = ReplyReader<OwnedReadHalf>;

/// tokio's own halves of the socket. Their reads skip the extra `recvfrom`
/// (answered EAGAIN) that reading through interprocess's `&Stream` costs after
/// every frame.
fn split(stream: Stream) -> (OwnedReadHalf, OwnedWriteHalf) {
    let Stream::UdSocket(stream) = stream;
    tokio::net::UnixStream::from(stream).into_split()
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.reader.abort();
        self.watcher.abort();
    }
}

impl Connection {
    async fn open(stream: Stream, options: &ClientOptions) -> Result<Connection, ClientError> {
        let (read, mut writer) = split(stream);
        let mut reader = ReplyReader::with_capacity(16 * 1024, read);
        let hello = handshake::hello(&options.client_name, &options.chain);
        // The reply is read whatever the write did: see `handshake`.
        let opening = async {
            // The Hello carries the chain's secrets: encoded into a wiped buffer.
            let mut out = Zeroizing::new(Vec::new());
            let sent = write_message_with(&mut writer, &mut out, &hello).await;
            let mut buf = Zeroizing::new(Vec::new());
            let read = match next_frame(&mut reader, &mut buf).await {
                Ok(frame) => FirstRead::Frame(frame),
                Err(e) => FirstRead::Failed(e),
            };
            (sent, read)
        };
        let (sent, read) = tokio::time::timeout(POLICY.hello_timeout, opening)
            .await
            .unwrap_or((Ok(()), FirstRead::TimedOut));
        let welcome = handshake::first_reply(sent, read)?;
        let pending: Pending = Arc::new(StdMutex::new(Some(HashMap::new())));
        let reader = tokio::spawn(route_replies(reader, pending.clone()));
        let watch = Arc::new(Watch::default());
        let watcher = tokio::spawn(watch_deadlines(pending.clone(), watch.clone()));
        Ok(Connection {
            writer: Mutex::new(FrameWriter {
                stream: writer,
                buf: Zeroizing::new(Vec::new()),
            }),
            pending,
            next_id: AtomicU64::new(1),
            welcome,
            reader,
            watch,
            watcher,
        })
    }

    fn is_open(&self) -> bool {
        self.pending.lock().expect("pending lock").is_some()
    }

    async fn request(
        &self,
        request: &Request,
        timeout: Duration,
        progress: Option<mpsc::UnboundedSender<String>>,
    ) -> Result<Reply, Broken> {
        let id = self.next_id.fetch_add(1, Relaxed);
        let (tx, rx) = oneshot::channel();
        let waiter = Waiter {
            done: tx,
            progress,
            deadline: Instant::now() + timeout,
            timeout,
        };
        match self.pending.lock().expect("pending lock").as_mut() {
            Some(pending) => pending.insert(id, waiter),
            None => return Err(Broken(ClientError::Protocol("connection closed".into()))),
        };
        // After the insert: a watch that went idle before it is woken (the
        // permit is kept), one going idle after it sees the request.
        if self.watch.idle.swap(false, AcqRel) {
            self.watch.wake.notify_one();
        }
        let written = {
            let mut writer = self.writer.lock().await;
            let FrameWriter { stream, buf } = &mut *writer;
            write_message_with(stream, buf, &ClientFrameRef { id, request }).await
        };
        if let Err(e) = written {
            self.cancel(id);
            return Err(Broken(ClientError::Protocol(format!(
                "sending request: {e}"
            ))));
        }
        // An overdue request is answered by the watch with a timeout error:
        // not Broken, the daemon is there, just slow; do not resend.
        match rx.await {
            Ok(reply) => Ok(reply),
            Err(_) => Err(Broken(ClientError::Protocol(
                "the daemon closed the connection".into(),
            ))),
        }
    }

    fn cancel(&self, id: u64) {
        if let Some(pending) = self.pending.lock().expect("pending lock").as_mut() {
            pending.remove(&id);
        }
    }
}

/// Answers overdue requests with a timeout error, a [`DEADLINE_TICK`] at a
/// time while any are in flight; sleeps on [`Watch::wake`] while none are,
/// so an idle connection wakes nobody.
async fn watch_deadlines(pending: Pending, watch: Arc<Watch>) {
    let mut ticks = tokio::time::interval(DEADLINE_TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let in_flight = expire_overdue(&pending, Instant::now());
        if in_flight == Some(0) {
            watch.idle.store(true, Release);
            // A request inserted before `idle` was set finds it clear and
            // does not wake us: look once more.
            if !matches!(in_flight_count(&pending), Some(0)) {
                watch.idle.store(false, Release);
                continue;
            }
            watch.wake.notified().await;
            ticks.reset();
        } else if in_flight.is_none() {
            // The connection is gone; the reader has woken every caller.
            return;
        }
    }
}

fn in_flight_count(pending: &Pending) -> Option<usize> {
    pending
        .lock()
        .expect("pending lock")
        .as_ref()
        .map(HashMap::len)
}

/// Answers every request whose deadline has passed by `now`; returns how many
/// remain in flight (`None` once the connection is closed).
fn expire_overdue(pending: &Pending, now: Instant) -> Option<usize> {
    let mut pending = pending.lock().expect("pending lock");
    let waiters = pending.as_mut()?;
    let overdue: Vec<u64> = waiters
        .iter()
        .filter(|(_, waiter)| waiter.deadline <= now)
        .map(|(id, _)| *id)
        .collect();
    for id in overdue {
        if let Some(waiter) = waiters.remove(&id) {
            let _ = waiter
                .done
                .send(Reply::Error(azbroker_proto::WireError::new(
                    azbroker_proto::ErrorKind::Timeout,
                    format!(
                        "no answer from azbrokerd within {} s",
                        waiter.timeout.as_secs()
                    ),
                )));
        }
    }
    Some(waiters.len())
}

async fn route_replies(mut reader: Replies, pending: Pending) {
    // Frames too big for the reader's buffer land here; tokens among them.
    let mut buf = Zeroizing::new(Vec::new());
    loop {
        match next_frame(&mut reader, &mut buf).await {
            Ok(frame) => {
                let mut pending = pending.lock().expect("pending lock");
                let Some(waiters) = pending.as_mut() else {
                    continue;
                };
                if let Reply::LoginProgress { message } = frame.reply {
                    // Not the answer yet: pass it on and keep waiting.
                    if let Some(progress) = waiters.get(&frame.id).and_then(|w| w.progress.as_ref())
                    {
                        let _ = progress.send(message);
                    }
                    continue;
                }
                if let Some(waiter) = waiters.remove(&frame.id) {
                    let _ = waiter.done.send(frame.reply);
                }
            }
            Err(_) => {
                // Dropping every sender wakes every waiter with "closed".
                pending.lock().expect("pending lock").take();
                return;
            }
        }
    }
}

/// The next reply; decoded where it lies in the read buffer when it came whole
/// (the common case), else read into `buf` first.
async fn next_frame(reader: &mut Replies, buf: &mut Vec<u8>) -> Result<DaemonFrame, ReadError> {
    reader.fill_buf().await.map_err(ReadError::Io)?;
    match buffered::decode_front(reader.buffer())? {
        Buffered::Frame { message, consumed } => {
            reader.consume(consumed);
            Ok(message)
        }
        Buffered::NeedMore { .. } => read_message(reader, buf).await,
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::OwnedFd;

    use azbroker_proto::{frame, ClientFrame, ErrorKind, PROTOCOL_VERSION};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::UnixStream;

    use super::*;

    fn options() -> ClientOptions {
        crate::test_options("client-test", Duration::from_secs(60))
    }

    async fn read_frame(daemon: &mut UnixStream) -> ClientFrame {
        let mut header = [0u8; frame::HEADER_LEN];
        daemon.read_exact(&mut header).await.unwrap();
        let mut body = vec![0; frame::body_len(header).unwrap()];
        daemon.read_exact(&mut body).await.unwrap();
        frame::decode(&body).unwrap()
    }

    async fn send(daemon: &mut UnixStream, id: u64, reply: Reply) {
        let bytes = frame::encode(&DaemonFrame { id, reply }).unwrap();
        daemon.write_all(&bytes).await.unwrap();
    }

    /// A request with a 1 s timeout that the daemon leaves unanswered.
    async fn times_out(connection: &Connection) {
        let asked = Instant::now();
        let reply = tokio::time::timeout(
            Duration::from_secs(30),
            connection.request(&Request::Status, Duration::from_secs(1), None),
        )
        .await
        .expect("the watch answers an overdue request");
        match reply {
            Ok(Reply::Error(e)) => {
                assert_eq!(e.kind, ErrorKind::Timeout);
                assert!(e.message.contains("within 1 s"), "{}", e.message);
            }
            Ok(other) => panic!("expected a timeout, got {other:?}"),
            Err(Broken(e)) => panic!("expected a timeout, got {e}"),
        }
        assert!(asked.elapsed() >= Duration::from_secs(1));
    }

    /// A daemon that welcomes, never answers the first two requests and
    /// answers the third: the two time out (after their deadline, not
    /// before; the second after the watch went idle), and the connection
    /// goes on serving.
    #[tokio::test]
    async fn a_request_the_daemon_leaves_unanswered_times_out_and_the_connection_serves_on() {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        theirs.set_nonblocking(true).unwrap();
        let uds =
            interprocess::os::unix::uds_local_socket::tokio::Stream::try_from(OwnedFd::from(ours))
                .unwrap();
        let mut daemon = UnixStream::from_std(theirs).unwrap();
        let peer = tokio::spawn(async move {
            read_frame(&mut daemon).await;
            let welcome = Welcome {
                protocol_version: PROTOCOL_VERSION,
                daemon_version: "0.1.0".into(),
                daemon_pid: 1,
            };
            send(&mut daemon, 0, Reply::Welcome(welcome)).await;
            let ignored = read_frame(&mut daemon).await;
            let ignored_after_idle = read_frame(&mut daemon).await;
            let answered = read_frame(&mut daemon).await;
            assert_ne!(ignored.id, answered.id);
            assert_ne!(ignored_after_idle.id, answered.id);
            send(&mut daemon, answered.id, Reply::Invalidated { removed: 7 }).await;
            daemon
        });
        let connection = Connection::open(Stream::UdSocket(uds), &options())
            .await
            .unwrap();

        times_out(&connection).await;
        // Nothing in flight: the watch goes idle, and must wake for the next.
        tokio::time::sleep(DEADLINE_TICK * 3).await;
        assert!(connection.watch.idle.load(Relaxed));
        times_out(&connection).await;
        match connection
            .request(&Request::Status, Duration::from_secs(30), None)
            .await
        {
            Ok(reply) => assert_eq!(reply, Reply::Invalidated { removed: 7 }),
            Err(Broken(e)) => panic!("the connection broke: {e}"),
        }
        assert_eq!(in_flight_count(&connection.pending), Some(0));
        drop(peer.await.unwrap());
    }
}
