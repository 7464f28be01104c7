//! A typed, pipelined connection to `azbrokerd`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

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
use tokio::sync::{mpsc, oneshot, Mutex};
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
}

type Pending = Arc<StdMutex<Option<HashMap<u64, Waiter>>>>;

/// One open connection: a writer shared by callers and a reader task that
/// routes each reply to the caller waiting on its id.
struct Connection {
    writer: Mutex<FrameWriter>,
    /// `None` once the reader has seen the connection end.
    pending: Pending,
    next_id: AtomicU64,
    welcome: Welcome,
    reader: tokio::task::JoinHandle<()>,
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
        Ok(Connection {
            writer: Mutex::new(FrameWriter {
                stream: writer,
                buf: Zeroizing::new(Vec::new()),
            }),
            pending,
            next_id: AtomicU64::new(1),
            welcome,
            reader,
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
        let waiter = Waiter { done: tx, progress };
        match self.pending.lock().expect("pending lock").as_mut() {
            Some(pending) => pending.insert(id, waiter),
            None => return Err(Broken(ClientError::Protocol("connection closed".into()))),
        };
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
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => Err(Broken(ClientError::Protocol(
                "the daemon closed the connection".into(),
            ))),
            Err(_) => {
                self.cancel(id);
                // Not Broken: the daemon is there, just slow; do not resend.
                Ok(Reply::Error(azbroker_proto::WireError::new(
                    azbroker_proto::ErrorKind::Timeout,
                    format!("no answer from azbrokerd within {} s", timeout.as_secs()),
                )))
            }
        }
    }

    fn cancel(&self, id: u64) {
        if let Some(pending) = self.pending.lock().expect("pending lock").as_mut() {
            pending.remove(&id);
        }
    }
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
