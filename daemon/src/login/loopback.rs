//! The loopback redirect listener of a browser login.
//!
//! Listens on `127.0.0.1` (and `[::1]` on the same port when it can: browsers
//! may resolve `localhost` to either) at a random port; the redirect URI is
//! `http://localhost:PORT`. It reads one bounded request per connection,
//! answers with a small page the user can close, and ends the wait on the
//! first request that carries an authorization response: a code with the
//! expected `state`, an `error`, or a wrong `state` (never redeemed).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Largest request head accepted from the browser.
const MAX_REQUEST: usize = 16 * 1024;
/// A connection must deliver its request within this.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// How an authorization response ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The authorization code (expected `state` checked).
    Code(String),
    /// The identity platform (or the user) refused: `error`, `error_description`.
    Denied { error: String, description: String },
    /// A response whose `state` is not this login's: possible request forgery.
    StateMismatch,
}

pub struct Listener {
    v4: TcpListener,
    v6: Option<TcpListener>,
    port: u16,
}

impl Listener {
    pub async fn bind() -> std::io::Result<Listener> {
        let v4 = TcpListener::bind(("127.0.0.1", 0)).await?;
        let port = v4.local_addr()?.port();
        let v6 = TcpListener::bind(("::1", port)).await.ok();
        Ok(Listener { v4, v6, port })
    }

    pub fn redirect_uri(&self) -> String {
        format!("http://localhost:{}", self.port)
    }

    /// Serves requests until one carries an authorization response.
    pub async fn wait(&self, expected_state: &str) -> Outcome {
        loop {
            let accepted = match &self.v6 {
                Some(v6) => tokio::select! {
                    a = self.v4.accept() => a,
                    a = v6.accept() => a,
                },
                None => self.v4.accept().await,
            };
            let Ok((stream, _)) = accepted else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            if let Some(outcome) = serve(stream, expected_state).await {
                return outcome;
            }
        }
    }
}

/// Answers one connection; `Some` when it carried an authorization response.
async fn serve(mut stream: TcpStream, expected_state: &str) -> Option<Outcome> {
    let head = match tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream)).await {
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
    if get("state").as_deref() != Some(expected_state) {
        respond(
            &mut stream,
            "400 Bad Request",
            "Sign-in not accepted",
            "This sign-in response does not belong to the login azbroker started (its state does not match), so it was not used. Close this window and try again.",
        )
        .await;
        return Some(Outcome::StateMismatch);
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
    async fn wrong_state_and_errors_end_the_wait_without_a_code() {
        let listener = Listener::bind().await.unwrap();
        let port = listener.port;
        let client = tokio::spawn(async move { get(port, "/?code=abc&state=forged").await });
        assert_eq!(listener.wait("s1").await, Outcome::StateMismatch);
        assert!(client.await.unwrap().starts_with("HTTP/1.1 400"));

        let client = tokio::spawn(async move {
            get(
                port,
                "/?error=access_denied&error_description=%3Cb%3Eno%3C%2Fb%3E&state=s1",
            )
            .await
        });
        assert_eq!(
            listener.wait("s1").await,
            Outcome::Denied {
                error: "access_denied".into(),
                description: "<b>no</b>".into()
            }
        );
        let page = client.await.unwrap();
        assert!(page.contains("&lt;b&gt;no&lt;/b&gt;"), "{page}");
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
