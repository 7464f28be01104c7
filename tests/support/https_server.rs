//! HTTP/1.1 for the test doubles, on a [`LoopbackServer`]: [`HttpsServer`]
//! over TLS (the Entra and ARM doubles), [`serve_http1`] over any stream (the
//! plain-HTTP managed identity double), [`accept_tls`] for doubles that only
//! shake hands. One handshake and one connection loop serve them all.

use crate::loopback_server::LoopbackServer;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// Largest request body read; larger ones get 413 (the real limits are
/// unknown, this only keeps a misbehaving client from exhausting memory).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// A client that connects but never completes a handshake is dropped after this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Computes a reply from a request whose body was read (bounded).
pub type Handler = Arc<dyn Fn(Request<Bytes>) -> Response<Full<Bytes>> + Send + Sync>;

/// An HTTPS/1.1 server on loopback; dropping it stops the server and closes
/// every connection.
pub struct HttpsServer {
    server: LoopbackServer,
    counters: Arc<Counters>,
}

#[derive(Default)]
struct Counters {
    connections: AtomicUsize,
    failed_handshakes: AtomicUsize,
}

impl std::fmt::Debug for HttpsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpsServer")
            .field("addr", &self.addr())
            .finish_non_exhaustive()
    }
}

impl HttpsServer {
    /// Serves replies computed synchronously from the request, its body read
    /// first (up to [`MAX_BODY_BYTES`], larger ones get 413 without a call).
    ///
    /// # Panics
    /// If the listener or the server thread cannot be created.
    pub fn start(name: &str, tls: Arc<ServerConfig>, handler: Handler) -> HttpsServer {
        Self::start_async(name, tls, move |request| {
            let handler = Arc::clone(&handler);
            async move { read_then_handle(&handler, request).await }
        })
    }

    /// Serves replies from `handler`, which gets each request with its body
    /// still unread and may take its time (e.g. to delay a reply).
    ///
    /// # Panics
    /// If the listener or the server thread cannot be created.
    pub fn start_async<H, Fut>(name: &str, tls: Arc<ServerConfig>, handler: H) -> HttpsServer
    where
        H: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
    {
        let counters = Arc::new(Counters::default());
        let acceptor = TlsAcceptor::from(tls);
        let handler = Arc::new(handler);
        let on_connection = {
            let counters = Arc::clone(&counters);
            move |tcp| {
                counters.connections.fetch_add(1, Ordering::SeqCst);
                let (acceptor, counters) = (acceptor.clone(), Arc::clone(&counters));
                let handler = Arc::clone(&handler);
                async move {
                    match accept_tls(&acceptor, tcp).await {
                        Some(stream) => serve_http1(stream, handler).await,
                        None => {
                            counters.failed_handshakes.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
            }
        };
        HttpsServer {
            server: LoopbackServer::start(name, on_connection),
            counters,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// TCP connections accepted so far, including ones whose TLS handshake
    /// failed: counts a client's (re)connection attempts.
    pub fn connections(&self) -> usize {
        self.counters.connections.load(Ordering::SeqCst)
    }

    /// TLS handshakes that failed or timed out (e.g. the client rejected the certificate).
    pub fn failed_handshakes(&self) -> usize {
        self.counters.failed_handshakes.load(Ordering::SeqCst)
    }
}

/// The server side of a TLS handshake, `None` if it failed or timed out.
pub async fn accept_tls(acceptor: &TlsAcceptor, tcp: TcpStream) -> Option<TlsStream<TcpStream>> {
    tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
        .await
        .ok()?
        .ok()
}

/// Serves HTTP/1.1 on one connection until the client hangs up.
pub async fn serve_http1<I, H, Fut>(io: I, handler: Arc<H>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let service = hyper::service::service_fn(move |request| {
        let reply = (*handler)(request);
        async move { Ok::<_, Infallible>(reply.await) }
    });
    // No header-read timeout: hyper applies it to idle keep-alive connections
    // too, and closing those races with a client reusing them, which would make
    // tests flaky. Connection errors (client hung up, malformed HTTP) only end
    // this connection; dropping the server ends them all.
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(io), service)
        .await;
}

async fn read_then_handle(handler: &Handler, request: Request<Incoming>) -> Response<Full<Bytes>> {
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
