//! The loopback redirect listener of a browser login.
//!
//! Listens on `127.0.0.1` (and `[::1]` on the same port when it can: browsers
//! may resolve `localhost` to either) at a random port; the redirect URI is
//! `http://localhost:PORT`. On Linux the authorize URL, `state` included, is
//! on the browser's command line, which every local user can read, so
//! neither the port nor the `state` is a secret from other users:
//! - a connection whose socket belongs to another user is closed before a
//!   byte of it is read ([`crate::tcp_owner`]);
//! - connections are served concurrently (at most [`MAX_CONNECTIONS`], each
//!   read bounded in time and size), so idle ones cannot hold up the browser;
//! - only an authorization response with this login's `state` (a code or an
//!   `error`) ends the wait; anything else gets a page and the wait goes on
//!   until the login's own timeout, so no request can abort a login.

use std::sync::Arc;
use std::time::Duration;

use subtle::ConstantTimeEq;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;

/// Largest request head accepted from the browser.
const MAX_REQUEST: usize = 16 * 1024;
/// A connection must deliver its request within this.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// The user's connections served at once; one more is closed at once. A
/// browser opens a few (the redirect, a favicon, speculative ones).
const MAX_CONNECTIONS: usize = 16;

/// How an authorization response with this login's `state` ended it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The authorization code.
    Code(String),
    /// The identity platform (or the user) refused: `error`, `error_description`.
    Denied { error: String, description: String },
}

pub struct Listener {
    v4: TcpListener,
    v6: Option<TcpListener>,
    port: u16,
    read_timeout: Duration,
}

impl Listener {
    pub async fn bind() -> std::io::Result<Listener> {
        let v4 = TcpListener::bind(("127.0.0.1", 0)).await?;
        let port = v4.local_addr()?.port();
        let v6 = TcpListener::bind(("::1", port)).await.ok();
        Ok(Listener {
            v4,
            v6,
            port,
            read_timeout: READ_TIMEOUT,
        })
    }

    pub fn redirect_uri(&self) -> String {
        format!("http://localhost:{}", self.port)
    }

    /// Serves the user's connections until one carries an authorization
    /// response with `expected_state`. Never ends otherwise: the caller's
    /// timeout does. Dropping the future ends every connection it serves.
    pub async fn wait(&self, expected_state: &str) -> Outcome {
        let expected: Arc<str> = Arc::from(expected_state);
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let (outcome_tx, mut outcome_rx) = mpsc::channel(1);
        let mut connections = JoinSet::new();
        let mut foreign = 0u64;
        loop {
            while connections.try_join_next().is_some() {}
            let stream = tokio::select! {
                Some(outcome) = outcome_rx.recv() => return outcome,
                accepted = self.accept() => match accepted {
                    Ok(stream) => stream,
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            if let Err(why) = crate::tcp_owner::require_own_user(&stream).await {
                // Warn once per login; a flood must not flood the log.
                foreign += 1;
                if foreign == 1 {
                    tracing::warn!(reason = %why, "browser sign-in: a connection to the redirect listener was closed unread");
                } else {
                    tracing::debug!(reason = %why, refused = foreign, "browser sign-in: a connection to the redirect listener was closed unread");
                }
                continue;
            }
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                tracing::debug!(
                    max = MAX_CONNECTIONS,
                    "browser sign-in: too many connections at once; one was closed"
                );
                continue;
            };
            let (expected, outcome_tx, read_timeout) =
                (expected.clone(), outcome_tx.clone(), self.read_timeout);
            connections.spawn(async move {
                if let Some(outcome) = serve(stream, &expected, read_timeout).await {
                    // The page is written by now; the wait may end and drop this task.
                    let _ = outcome_tx.send(outcome).await;
                }
                drop(slot);
            });
        }
    }

    async fn accept(&self) -> std::io::Result<TcpStream> {
        let (stream, _) = match &self.v6 {
            Some(v6) => tokio::select! {
                a = self.v4.accept() => a,
                a = v6.accept() => a,
            },
            None => self.v4.accept().await,
        }?;
        Ok(stream)
    }
}

/// Answers one connection; `Some` when it carried an authorization response
/// with the expected `state`.
async fn serve(
    mut stream: TcpStream,
    expected_state: &str,
    read_timeout: Duration,
) -> Option<Outcome> {
    let head = match tokio::time::timeout(read_timeout, read_head(&mut stream)).await {
        Ok(Some(head)) => head,
        _ => return None,
    };
    let Some(target) = parse_target(&head) else {
        respond(
            &mut stream,
            "400 Bad Request",
            "Bad request",
            "This is not a sign-in response.",
        )
        .await;
        return None;
    };
    let query = url::Url::parse(&format!("http://localhost{target}"))
        .ok()
        .map(|url| url.query_pairs().into_owned().collect::<Vec<_>>())
        .unwrap_or_default();
    let get = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let (code, error) = (get("code"), get("error"));
    if code.is_none() && error.is_none() {
        // e.g. /favicon.ico
        respond(&mut stream, "404 Not Found", "Not found", "Nothing here.").await;
        return None;
    }
    let state_matches = get("state")
        .is_some_and(|state| bool::from(state.as_bytes().ct_eq(expected_state.as_bytes())));
    if !state_matches {
        // Possibly forged: not used, and the login goes on waiting for its own.
        tracing::warn!(
            "browser sign-in: a response with another login's state was refused; still waiting"
        );
        respond(
            &mut stream,
            "400 Bad Request",
            "Sign-in not accepted",
            "This sign-in response does not belong to the login azbroker started (its state does not match), so it was not used. Close this window; the sign-in azbroker opened is still waiting.",
        )
        .await;
        return None;
    }
    if let Some(error) = error {
        let description = get("error_description").unwrap_or_default();
        respond(
            &mut stream,
            "200 OK",
            "Sign-in failed",
            &format!("{error}: {description}. You can close this window."),
        )
        .await;
        return Some(Outcome::Denied { error, description });
    }
    respond(
        &mut stream,
        "200 OK",
        "Signed in",
        "azbroker is signed in. You can close this window and return to your application.",
    )
    .await;
    code.map(Outcome::Code)
}

/// Reads up to the end of the request head, at most [`MAX_REQUEST`] bytes.
async fn read_head(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut buf = Vec::with_capacity(2048);
    let mut chunk = [0u8; 2048];
    loop {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.windows(4).any(|w| w == b"\r\n\r\n") {
            return Some(buf);
        }
        if buf.len() > MAX_REQUEST {
            return None;
        }
    }
}

/// The target of a `GET` request head.
fn parse_target(head: &[u8]) -> Option<String> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(head) {
        Ok(httparse::Status::Complete(_)) if request.method == Some("GET") => {
            request.path.map(str::to_string)
        }
        _ => None,
    }
}

async fn respond(stream: &mut TcpStream, status: &str, title: &str, text: &str) {
    let body = format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>azbroker: {title}</title></head>\
         <body><h1>{title}</h1><p>{}</p></body></html>",
        escape_html(text)
    );
    let reply = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(READ_TIMEOUT, stream.write_all(reply.as_bytes())).await;
    let _ = stream.shutdown().await;
}

fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(port: u16, target: &str) -> String {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        stream
            .write_all(format!("GET {target} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut reply = String::new();
        stream.read_to_string(&mut reply).await.unwrap();
        reply
    }

    /// [`get`], or an empty reply when the listener closed the connection unread.
    async fn try_get(port: u16, target: &str) -> String {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)).await else {
            return String::new();
        };
        let request = format!("GET {target} HTTP/1.1\r\nHost: localhost\r\n\r\n");
        if stream.write_all(request.as_bytes()).await.is_err() {
            return String::new();
        }
        let mut reply = String::new();
        let _ = stream.read_to_string(&mut reply).await;
        reply
    }

    #[tokio::test]
    async fn code_with_the_right_state_ends_the_wait() {
        let listener = Listener::bind().await.unwrap();
        let port = listener.port;
        assert_eq!(listener.redirect_uri(), format!("http://localhost:{port}"));
        let client = tokio::spawn(async move {
            let favicon = get(port, "/favicon.ico").await;
            let ok = get(port, "/?code=abc&state=s1&session_state=x").await;
            (favicon, ok)
        });
        assert_eq!(listener.wait("s1").await, Outcome::Code("abc".into()));
        let (favicon, ok) = client.await.unwrap();
        assert!(favicon.starts_with("HTTP/1.1 404"));
        assert!(ok.starts_with("HTTP/1.1 200 OK"));
        assert!(ok.contains("You can close this window"));
    }

    #[tokio::test]
    async fn a_wrong_state_does_not_end_the_wait_and_only_the_right_one_does() {
        let listener = Listener::bind().await.unwrap();
        let port = listener.port;
        let waiter = tokio::spawn(async move { listener.wait("s1").await });
        let forged = get(port, "/?code=abc&state=forged").await;
        assert!(forged.starts_with("HTTP/1.1 400"), "{forged}");
        assert!(forged.contains("not accepted"), "{forged}");
        assert!(get(port, "/?code=abc").await.starts_with("HTTP/1.1 400"));
        assert!(get(port, "/?error=access_denied&state=s2")
            .await
            .starts_with("HTTP/1.1 400"));
        // Still waiting: the response with this login's state ends it.
        let page = get(
            port,
            "/?error=access_denied&error_description=%3Cb%3Eno%3C%2Fb%3E&state=s1",
        )
        .await;
        assert_eq!(
            waiter.await.unwrap(),
            Outcome::Denied {
                error: "access_denied".into(),
                description: "<b>no</b>".into()
            }
        );
        assert!(page.contains("&lt;b&gt;no&lt;/b&gt;"), "{page}");
    }

    /// Connections that send nothing for as long as the read timeout allows
    /// (an hour here) do not hold up the browser's. Served one at a time, the
    /// first of them would have blocked the wait for the whole hour.
    #[tokio::test]
    async fn idle_connections_do_not_hold_up_the_redirect() {
        let mut listener = Listener::bind().await.unwrap();
        listener.read_timeout = Duration::from_secs(3600);
        let port = listener.port;
        let waiter = tokio::spawn(async move { listener.wait("s1").await });
        let mut idle = Vec::new();
        for _ in 0..MAX_CONNECTIONS - 1 {
            idle.push(TcpStream::connect(("127.0.0.1", port)).await.unwrap());
        }
        let ok = get(port, "/?code=abc&state=s1").await;
        assert!(ok.starts_with("HTTP/1.1 200 OK"), "{ok}");
        // A generous bound that only a stalled listener reaches.
        let outcome = tokio::time::timeout(Duration::from_secs(60), waiter)
            .await
            .expect("the wait stalled behind idle connections");
        assert_eq!(outcome.unwrap(), Outcome::Code("abc".into()));
    }

    #[tokio::test]
    async fn beyond_the_connection_cap_new_connections_are_closed_at_once() {
        let mut listener = Listener::bind().await.unwrap();
        listener.read_timeout = Duration::from_secs(3600);
        let port = listener.port;
        let waiter = tokio::spawn(async move { listener.wait("s1").await });
        let mut idle = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            idle.push(TcpStream::connect(("127.0.0.1", port)).await.unwrap());
        }
        // Accepted after the ones holding every slot: closed unread.
        let mut extra = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let mut byte = [0u8; 1];
        assert!(matches!(extra.read(&mut byte).await, Ok(0) | Err(_)));
        // A closed idle connection gives its slot back.
        drop(idle.pop());
        let mut page = String::new();
        for _ in 0..200 {
            page = try_get(port, "/?code=abc&state=s1").await;
            if !page.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(page.starts_with("HTTP/1.1 200 OK"), "{page}");
        assert_eq!(waiter.await.unwrap(), Outcome::Code("abc".into()));
    }

    #[tokio::test]
    async fn oversized_and_malformed_requests_are_dropped() {
        let listener = Listener::bind().await.unwrap();
        let port = listener.port;
        let client = tokio::spawn(async move {
            let mut huge = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            let _ = huge.write_all(&vec![b'a'; MAX_REQUEST + 10]).await;
            drop(huge);
            let post = {
                let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
                s.write_all(b"POST /?code=x&state=s1 HTTP/1.1\r\n\r\n")
                    .await
                    .unwrap();
                let mut r = String::new();
                s.read_to_string(&mut r).await.unwrap();
                r
            };
            let ok = get(port, "/?code=good&state=s1").await;
            (post, ok)
        });
        assert_eq!(listener.wait("s1").await, Outcome::Code("good".into()));
        let (post, _) = client.await.unwrap();
        assert!(post.starts_with("HTTP/1.1 400"));
    }
}
