//! Network doubles for `azbroker diagnose`: an HTTPS endpoint (any TLS
//! configuration, e.g. an untrusted certificate), a server that accepts TCP
//! and never answers, a closed port, and a forward proxy that speaks HTTP
//! CONNECT like corporate proxies do (optional Basic credentials, 407, 403,
//! 502, names only it resolves).
//!
//! Everything listens on 127.0.0.1, and the proxy connects to loopback only:
//! it answers 403 for any other address, so no test can leave the machine
//! through it. Each double runs on a [`LoopbackServer`] (its own thread and
//! Tokio runtime), so it keeps serving while a test blocks on a child process.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::https_server::accept_tls;
use crate::loopback_server::LoopbackServer;
use base64::Engine as _;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

/// An HTTPS endpoint that completes TLS handshakes with a given configuration.
pub struct TlsEndpoint {
    handshakes: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    server: LoopbackServer,
}

impl TlsEndpoint {
    /// Serves `tls` (e.g. `TestPki::untrusted_server_config()`) on `127.0.0.1:<port>`.
    pub fn start(tls: Arc<ServerConfig>) -> TlsEndpoint {
        let handshakes = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let acceptor = TlsAcceptor::from(tls);
        let (ok, bad) = (handshakes.clone(), failed.clone());
        let on_connection = move |tcp| {
            let (acceptor, ok, bad) = (acceptor.clone(), ok.clone(), bad.clone());
            async move {
                if let Some(mut tls) = accept_tls(&acceptor, tcp).await {
                    ok.fetch_add(1, Ordering::SeqCst);
                    // Wait for the client to hang up (or give up after a while).
                    let mut sink = [0u8; 1024];
                    let _ = tokio::time::timeout(Duration::from_secs(5), tls.read(&mut sink)).await;
                } else {
                    bad.fetch_add(1, Ordering::SeqCst);
                }
            }
        };
        TlsEndpoint {
            handshakes,
            failed,
            server: LoopbackServer::start("tls-endpoint", on_connection),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// `127.0.0.1:<port>`, as `--resource-endpoint` takes it.
    pub fn endpoint(&self) -> String {
        self.server.addr().to_string()
    }

    pub fn handshakes(&self) -> usize {
        self.handshakes.load(Ordering::SeqCst)
    }

    pub fn failed_handshakes(&self) -> usize {
        self.failed.load(Ordering::SeqCst)
    }
}

/// Accepts TCP connections and never sends a byte: a TLS handshake with it
/// times out, as through a firewall that drops traffic after the SYN.
pub struct SilentEndpoint {
    accepted: Arc<AtomicUsize>,
    server: LoopbackServer,
}

impl SilentEndpoint {
    pub fn start() -> SilentEndpoint {
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let on_connection = move |tcp| {
            count.fetch_add(1, Ordering::SeqCst);
            async move {
                // Hold the connection open until the double is dropped.
                let _held = tcp;
                tokio::time::sleep(Duration::from_secs(600)).await;
            }
        };
        SilentEndpoint {
            accepted,
            server: LoopbackServer::start("silent-endpoint", on_connection),
        }
    }

    pub fn endpoint(&self) -> String {
        self.server.addr().to_string()
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// A loopback port nothing listens on (bound, then released): connecting is refused.
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
    listener.local_addr().expect("address").port()
}

#[derive(Default)]
struct ProxyState {
    /// `host:port` -> where to connect: names only this proxy resolves.
    routes: HashMap<String, SocketAddr>,
    /// Required `user:password`, when set.
    credentials: Option<(String, String)>,
    /// CONNECT targets asked for, in order.
    connects: Vec<String>,
    /// Whether each CONNECT carried a Proxy-Authorization header.
    authorized: Vec<bool>,
}

/// A forward proxy for https: answers `CONNECT host:port` with 200 and relays
/// bytes, or with 407 (credentials), 403 (not loopback) or 502 (cannot resolve
/// or connect), as Squid and corporate proxies do.
pub struct ForwardProxy {
    state: Arc<Mutex<ProxyState>>,
    server: LoopbackServer,
}

impl ForwardProxy {
    pub fn start() -> ForwardProxy {
        let state = Arc::new(Mutex::new(ProxyState::default()));
        let shared = state.clone();
        ForwardProxy {
            state,
            server: LoopbackServer::start("forward-proxy", move |tcp| relay(tcp, shared.clone())),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ProxyState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `http://127.0.0.1:<port>`, for `HTTPS_PROXY`.
    pub fn url(&self) -> String {
        format!("http://{}", self.server.addr())
    }

    /// The URL with credentials, e.g. `http://user:pass@127.0.0.1:<port>`.
    pub fn url_with(&self, user: &str, password: &str) -> String {
        format!("http://{user}:{password}@{}", self.server.addr())
    }

    /// Makes `host_port` (e.g. `storage.contoso.invalid:443`) reach `to`: a
    /// name that resolves only on the proxy's side, as in networks where only
    /// the proxy reaches the internet.
    pub fn route(&self, host_port: &str, to: SocketAddr) {
        self.state()
            .routes
            .insert(host_port.to_ascii_lowercase(), to);
    }

    /// From now on, CONNECT needs `Proxy-Authorization: Basic user:password`.
    pub fn require_credentials(&self, user: &str, password: &str) {
        self.state().credentials = Some((user.into(), password.into()));
    }

    /// The CONNECT targets asked for so far.
    pub fn connects(&self) -> Vec<String> {
        self.state().connects.clone()
    }

    /// Whether each CONNECT so far carried credentials.
    pub fn authorized(&self) -> Vec<bool> {
        self.state().authorized.clone()
    }
}

async fn relay(tcp: TcpStream, state: Arc<Mutex<ProxyState>>) {
    let mut client = BufReader::new(tcp);
    let mut head = Vec::new();
    loop {
        let before = head.len();
        let budget = 8192u64.saturating_sub(before as u64);
        match (&mut client)
            .take(budget)
            .read_until(b'\n', &mut head)
            .await
        {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if head.ends_with(b"\r\n\r\n") {
            break;
        }
        if head.len() >= 8192 {
            return;
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let authorization = lines
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("proxy-authorization"))
        .map(|(_, value)| value.trim().to_string());
    let target = target.to_ascii_lowercase();

    let decision = {
        let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
        state.connects.push(target.clone());
        state.authorized.push(authorization.is_some());
        if method != "CONNECT" {
            Err("405 Method Not Allowed")
        } else if let Some((user, password)) = &state.credentials {
            let expected = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
            );
            if authorization.as_deref() != Some(expected.as_str()) {
                Err("407 Proxy Authentication Required")
            } else {
                destination(&state, &target)
            }
        } else {
            destination(&state, &target)
        }
    };
    let upstream = match decision {
        Ok(address) => TcpStream::connect(address)
            .await
            .map_err(|_| "502 Bad Gateway"),
        Err(status) => Err(status),
    };
    let mut upstream = match upstream {
        Ok(upstream) => upstream,
        Err(status) => {
            let extra = if status.starts_with("407") {
                "Proxy-Authenticate: Basic realm=\"azbroker test proxy\"\r\n"
            } else {
                ""
            };
            let reply = format!(
                "HTTP/1.1 {status}\r\n{extra}Content-Length: 0\r\nConnection: close\r\n\r\n"
            );
            let _ = client.get_mut().write_all(reply.as_bytes()).await;
            return;
        }
    };
    if client
        .get_mut()
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .await
        .is_err()
    {
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}

/// Where a CONNECT target goes: a route, or a loopback address. Anything else
/// is refused, so the proxy never reaches beyond this machine.
fn destination(state: &ProxyState, target: &str) -> Result<SocketAddr, &'static str> {
    if let Some(address) = state.routes.get(target) {
        return Ok(*address);
    }
    let (host, port) = target.rsplit_once(':').ok_or("400 Bad Request")?;
    let port: u16 = port.parse().map_err(|_| "400 Bad Request")?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ip: IpAddr = match host {
        "localhost" => IpAddr::from([127, 0, 0, 1]),
        // Names it has no route for do not resolve on the proxy's side either.
        other => other.parse().map_err(|_| "502 Bad Gateway")?,
    };
    if !ip.is_loopback() {
        return Err("403 Forbidden");
    }
    Ok(SocketAddr::new(ip, port))
}
