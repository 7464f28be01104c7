//! HTTP CONNECT through a forward proxy, as reqwest opens it for https URLs.
//!
//! Hand-written rather than hyper-util's `Tunnel` because the proxy's status
//! line (407, 403, 502...) is the diagnosis, and that connector drops it.

use azbroker_proto::{Endpoint, NetworkProblem};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

/// Largest proxy response head read.
const MAX_HEAD_BYTES: u64 = 8 * 1024;

/// Asks the proxy on `stream` for a tunnel to `target`. On success the
/// returned reader carries the tunnel (with anything the proxy sent early).
pub(crate) async fn open<S>(
    stream: S,
    target: &Endpoint,
    authorization: Option<&http::HeaderValue>,
) -> Result<(BufReader<S>, String), (NetworkProblem, String)>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let proxy_error = |what: String| (NetworkProblem::Proxy, what);
    let mut request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n").into_bytes();
    if let Some(value) = authorization {
        request.extend_from_slice(b"Proxy-Authorization: ");
        request.extend_from_slice(value.as_bytes());
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"\r\n");
    let mut reader = BufReader::new(stream);
    reader
        .get_mut()
        .write_all(&request)
        .await
        .map_err(|e| proxy_error(format!("sending CONNECT to the proxy failed: {e}")))?;

    let mut head = Vec::new();
    loop {
        let budget = MAX_HEAD_BYTES.saturating_sub(head.len() as u64);
        let read = (&mut reader)
            .take(budget)
            .read_until(b'\n', &mut head)
            .await
            .map_err(|e| proxy_error(format!("reading the proxy's answer failed: {e}")))?;
        if read == 0 {
            return Err(proxy_error(if head.is_empty() {
                "the proxy closed the connection without answering CONNECT".into()
            } else {
                "the proxy's answer to CONNECT is too long or cut short".into()
            }));
        }
        if head.ends_with(b"\r\n\r\n") || head.ends_with(b"\n\n") {
            break;
        }
    }
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(&head) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => {
            return Err(proxy_error(
                "the proxy's answer to CONNECT is not HTTP".into(),
            ))
        }
    }
    let code = response.code.unwrap_or(0);
    let status = format!("{code} {}", response.reason.unwrap_or(""))
        .trim()
        .to_string();
    match code {
        200..=299 => Ok((reader, status)),
        407 => Err(proxy_error(format!(
            "the proxy requires authentication ({status}){}",
            if authorization.is_some() {
                ": it rejected the user and password of the proxy URL"
            } else {
                ": the proxy URL has no user and password"
            }
        ))),
        403 => Err(proxy_error(format!(
            "the proxy refuses to connect to {target} ({status}): its policy does not allow this host"
        ))),
        502..=504 => Err(proxy_error(format!(
            "the proxy could not reach {target} ({status}): a firewall or DNS problem on the proxy's side"
        ))),
        _ => Err(proxy_error(format!("the proxy answered CONNECT with {status}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn answer(
        reply: &'static [u8],
        auth: Option<&str>,
    ) -> (String, Result<String, (NetworkProblem, String)>) {
        let (client, mut server) = tokio::io::duplex(16 * 1024);
        let target = Endpoint {
            host: "vault.example".into(),
            port: 443,
        };
        let auth = auth.map(|a| http::HeaderValue::from_str(a).unwrap());
        let server = tokio::spawn(async move {
            let mut seen = vec![0u8; 1024];
            let n = server.read(&mut seen).await.unwrap();
            server.write_all(reply).await.unwrap();
            String::from_utf8(seen[..n].to_vec()).unwrap()
        });
        let result = open(client, &target, auth.as_ref())
            .await
            .map(|(_, status)| status);
        (server.await.unwrap(), result)
    }

    #[tokio::test]
    async fn a_200_opens_the_tunnel() {
        let (request, result) = answer(b"HTTP/1.1 200 Connection established\r\n\r\n", None).await;
        assert_eq!(
            request,
            "CONNECT vault.example:443 HTTP/1.1\r\nHost: vault.example:443\r\n\r\n"
        );
        assert_eq!(result.unwrap(), "200 Connection established");
    }

    #[tokio::test]
    async fn statuses_are_explained() {
        let (request, result) = answer(
            b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic\r\n\r\n",
            Some("Basic dTpw"),
        )
        .await;
        assert!(
            request.contains("Proxy-Authorization: Basic dTpw\r\n"),
            "{request}"
        );
        let (problem, text) = result.unwrap_err();
        assert_eq!(problem, NetworkProblem::Proxy);
        assert!(text.contains("rejected the user and password"), "{text}");

        let (_, result) = answer(b"HTTP/1.1 403 Forbidden\r\n\r\n", None).await;
        assert!(result.unwrap_err().1.contains("policy does not allow"));
        let (_, result) = answer(b"HTTP/1.1 502 Bad Gateway\r\n\r\n", None).await;
        assert!(result
            .unwrap_err()
            .1
            .contains("could not reach vault.example:443"));
        let (_, result) = answer(b"SSH-2.0-OpenSSH\r\n\r\n", None).await;
        assert!(result.unwrap_err().1.contains("not HTTP"));
    }
}
