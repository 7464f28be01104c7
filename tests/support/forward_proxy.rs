//! A tiny forward proxy for the network tests: `CONNECT host:port` tunnels
//! (what HTTPS through `HTTPS_PROXY` uses) and absolute-form plain HTTP
//! requests (`GET http://host/path`, what `HTTP_PROXY` carries). It forwards
//! only to loopback addresses and counts what it was asked, so a test can
//! tell whether the daemon's calls went through it.

use crate::loopback_server::LoopbackServer;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest request head read before giving up on a client.
const MAX_HEAD: usize = 16 * 1024;

/// The running proxy; dropping it stops it and closes every tunnel.
pub struct ForwardProxy {
    server: LoopbackServer,
    requests: Arc<Mutex<Vec<String>>>,
}

impl ForwardProxy {
    pub fn start() -> ForwardProxy {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&requests);
        let server = LoopbackServer::start("proxy", move |client| proxy(client, Arc::clone(&log)));
        ForwardProxy { server, requests }
    }

    /// The proxy URL for `HTTPS_PROXY`/`HTTP_PROXY`.
    pub fn url(&self) -> String {
        format!("http://{}", self.server.addr())
    }

    /// Each proxied request's first line (`CONNECT 127.0.0.1:443`, `GET http://...`), oldest first.
    pub fn requests(&self) -> Vec<String> {
        self.requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

async fn proxy(mut client: TcpStream, log: Arc<Mutex<Vec<String>>>) {
    let Ok(Some((head, rest))) =
        tokio::time::timeout(Duration::from_secs(10), read_head(&mut client)).await
    else {
        return;
    };
    let Some(first_line) = head.lines().next().map(str::to_owned) else {
        return;
    };
    let mut words = first_line.split_whitespace();
    let (method, target) = (
        words.next().unwrap_or_default().to_owned(),
        words.next().unwrap_or_default().to_owned(),
    );
    log.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(format!("{method} {target}"));
    if method == "CONNECT" {
        let Some(mut upstream) = connect_loopback(&target).await else {
            let _ = client.write_all(b"HTTP/1.1 403 Forbidden\r\n\r\n").await;
            return;
        };
        if client
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .await
            .is_err()
        {
            return;
        }
        if upstream.write_all(&rest).await.is_ok() {
            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
        }
        return;
    }
    // Absolute form: GET http://host:port/path HTTP/1.1
    let Some(after_scheme) = target.strip_prefix("http://") else {
        let _ = client.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
        return;
    };
    let (authority, path) = match after_scheme.find('/') {
        Some(i) => (&after_scheme[..i], &after_scheme[i..]),
        None => (after_scheme, "/"),
    };
    let authority = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let Some(mut upstream) = connect_loopback(&authority).await else {
        let _ = client.write_all(b"HTTP/1.1 403 Forbidden\r\n\r\n").await;
        return;
    };
    let rewritten = head.replacen(&target, path, 1);
    if upstream.write_all(rewritten.as_bytes()).await.is_ok()
        && upstream.write_all(&rest).await.is_ok()
    {
        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    }
}

/// Reads up to the end of the request head; returns it and any bytes after it.
async fn read_head(client: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 2048];
    loop {
        let n = client.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return Some((String::from_utf8(buf).ok()?, rest));
        }
        if buf.len() > MAX_HEAD {
            return None;
        }
    }
}

/// Connects to `host:port` only if it is a loopback address.
async fn connect_loopback(authority: &str) -> Option<TcpStream> {
    let (host, port) = authority.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ip: IpAddr = if host == "localhost" {
        IpAddr::from([127, 0, 0, 1])
    } else {
        host.parse().ok()?
    };
    if !ip.is_loopback() {
        return None;
    }
    TcpStream::connect((ip, port.parse::<u16>().ok()?))
        .await
        .ok()
}
