//! A small HTTPS/1.1 server on loopback for test doubles whose replies are
//! computed synchronously from the request: it runs on its own thread and
//! Tokio runtime, so it keeps answering while a test blocks, and stops (closing
//! every connection) when dropped.

use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

/// Largest request body read; larger ones get 413.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Computes a reply from a request whose body was read (bounded).
pub type Handler = Arc<dyn Fn(Request<Bytes>) -> Response<Full<Bytes>> + Send + Sync>;

pub struct HttpsServer {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for HttpsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpsServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl HttpsServer {
    /// Listens on `127.0.0.1:<ephemeral port>`; the port is connectable on return.
    ///
    /// # Panics
    /// If the listener or the server thread cannot be created.
    pub fn start(name: &str, tls: Arc<ServerConfig>, handler: Handler) -> HttpsServer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("making the listener non-blocking");
        let addr = listener.local_addr().expect("listener address");
        let (shutdown, shutdown_rx) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name(format!("{name}-{}", addr.port()))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("building the server runtime");
                runtime.block_on(async move {
                    let listener = TcpListener::from_std(listener).expect("registering listener");
                    serve(listener, TlsAcceptor::from(tls), handler, shutdown_rx).await;
                });
            })
            .expect("spawning the server thread");
        HttpsServer {
            addr,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for HttpsServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(
    listener: TcpListener,
    tls: TlsAcceptor,
    handler: Handler,
    mut shutdown: oneshot::Receiver<()>,
) {
    // Dropping the set on shutdown aborts every connection still open.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => {
                    let (tls, handler) = (tls.clone(), Arc::clone(&handler));
                    connections.spawn(async move {
                        let Ok(Ok(stream)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(tcp)).await else {
                            return;
                        };
                        let service = hyper::service::service_fn(move |request| {
                            let handler = Arc::clone(&handler);
                            async move { Ok::<_, Infallible>(handle(&handler, request).await) }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn handle(
    handler: &Handler,
    request: Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(body) => handler(Request::from_parts(parts, body.to_bytes())),
        Err(_) => {
            let mut response = Response::new(Full::new(Bytes::new()));
            *response.status_mut() = StatusCode::PAYLOAD_TOO_LARGE;
            response
        }
    }
}
