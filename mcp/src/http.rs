//! The HTTP side of the tools: one client with the daemon's trust settings,
//! bearer-authorized GETs with bounded bodies, and the claims challenge:
//! a 401 whose `WWW-Authenticate` carries `error="insufficient_claims"` and
//! `claims="<base64>"` gets one retry with a token the broker acquired for
//! those claims (continuous access evaluation). A second challenge is the
//! caller's answer, as in the Azure SDKs.

use std::future::Future;
use std::time::Duration;

use base64::Engine as _;
use reqwest::header::{HeaderMap, WWW_AUTHENTICATE};
use reqwest::{StatusCode, Url};

use crate::errors::ToolError;

/// Largest response body read; an Azure list page is far smaller.
const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
/// The daemon refuses longer claims (see its `MAX_CLAIMS_LEN`).
const MAX_CLAIMS_BYTES: usize = 16 * 1024;

/// One HTTP client for every tool, built on first use.
///
/// Trust: the platform's roots plus every certificate in `AZBROKER_CA_FILE`,
/// `SSL_CERT_FILE` and `SSL_CERT_DIR`, the same rule as the daemon's, so a
/// corporate (or test) CA is *added*, never a replacement. Proxy:
/// `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY`, read by reqwest.
pub struct Http {
    client: reqwest::Client,
}

/// A response whose body was read (bounded).
#[derive(Debug)]
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Http {
    pub fn from_env() -> Result<Http, String> {
        // The same files, the same rule and the same errors as the daemon's.
        let lookup = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        let (roots, _) = azbroker_netcheck::load_extra_roots(&lookup)?;
        let certs = roots
            .iter()
            .map(|der| reqwest::Certificate::from_der(der))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("an extra root certificate: {e}"))?;
        let client = reqwest::Client::builder()
            .tls_certs_merge(certs)
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .user_agent(concat!("azbroker-mcp/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {}", error_chain(&e)))?;
        Ok(Http { client })
    }

    /// `GET url` with `Authorization: Bearer <token>` and `headers`.
    pub async fn get(
        &self,
        url: &Url,
        token: &str,
        headers: &[(&'static str, String)],
    ) -> Result<Response, ToolError> {
        let mut request = self.client.get(url.clone()).bearer_auth(token);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let mut response = request.send().await.map_err(transport_error)?;
        let status = response.status();
        let headers = response.headers().clone();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(transport_error)? {
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(ToolError::bad_response(format!(
                    "{url}: the response is larger than {} MiB",
                    MAX_BODY_BYTES / (1024 * 1024)
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Response {
            status,
            headers,
            body,
        })
    }
}

/// Sends a request, and once more with a token for the claims if the first
/// answer is a claims challenge. `token(claims)` asks the broker;
/// `send(token)` sends the request with that token.
pub async fn send_with_claims_retry<T, TokenFut, SendFut>(
    mut token: impl FnMut(Option<String>) -> TokenFut,
    mut send: impl FnMut(T) -> SendFut,
) -> Result<Response, ToolError>
where
    TokenFut: Future<Output = Result<T, ToolError>>,
    SendFut: Future<Output = Result<Response, ToolError>>,
{
    let response = send(token(None).await?).await?;
    match claims_challenge(&response) {
        None => Ok(response),
        Some(claims) => {
            tracing::info!("claims challenge: asking the broker for a token with those claims");
            send(token(Some(claims)).await?).await
        }
    }
}

/// The decoded claims of a 401 claims challenge, if `response` is one.
pub fn claims_challenge(response: &Response) -> Option<String> {
    if response.status != StatusCode::UNAUTHORIZED {
        return None;
    }
    response
        .headers
        .get_all(WWW_AUTHENTICATE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find_map(|value| {
            let params = bearer_params(value);
            let param = |name: &str| {
                params
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.as_str())
            };
            if param("error") != Some("insufficient_claims") {
                return None;
            }
            decode_claims(param("claims")?)
        })
}

/// Claims arrive base64-encoded (standard or URL-safe, padded or not); the
/// broker takes them decoded, as Azure.Identity's `TokenRequestContext.Claims` does.
fn decode_claims(encoded: &str) -> Option<String> {
    if encoded.is_empty() || encoded.len() > MAX_CLAIMS_BYTES * 4 / 3 + 4 {
        return None;
    }
    let unpadded = encoded.trim_end_matches('=');
    let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(unpadded)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(unpadded))
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    // A claims request is a JSON object; anything else is not a challenge we can answer.
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    (value.is_object() && text.len() <= MAX_CLAIMS_BYTES).then_some(text)
}

/// The parameters of the `Bearer` challenge(s) in a `WWW-Authenticate` value,
/// names lower-cased: `Bearer authorization_uri="...", error="insufficient_claims", claims="..."`.
/// Parameters may be quoted or bare and separated by commas or spaces (Azure
/// Storage sends `Bearer authorization_uri=https://... resource_id=https://...`).
pub fn bearer_params(header: &str) -> Vec<(String, String)> {
    let mut params = Vec::new();
    let mut in_bearer = false;
    let mut chars = header.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace() || *c == ',').is_some() {}
        if chars.peek().is_none() {
            return params;
        }
        let mut name = String::new();
        while let Some(c) = chars.next_if(|c| !c.is_whitespace() && *c != ',' && *c != '=') {
            name.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next_if_eq(&'=').is_none() {
            // A bare word starts a new challenge: its scheme.
            in_bearer = name.eq_ignore_ascii_case("bearer");
            continue;
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'"').is_some() {
            while let Some(c) = chars.next() {
                match c {
                    '"' => break,
                    '\\' => value.extend(chars.next()),
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace() && *c != ',') {
                value.push(c);
            }
        }
        if in_bearer && !name.is_empty() {
            params.push((name.to_ascii_lowercase(), value));
        }
    }
}

fn transport_error(error: reqwest::Error) -> ToolError {
    if error.is_timeout() {
        ToolError::timeout(error_chain(&error))
    } else {
        ToolError::network(error_chain(&error))
    }
}

/// An error and its causes on one line: reqwest hides the TLS or DNS cause in the chain.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;
    use std::sync::Mutex;

    const CLAIMS_JSON: &str = r#"{"access_token":{"nbf":{"essential":true,"value":"1726258122"}}}"#;

    fn b64(text: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(text)
    }

    fn response(status: u16, challenge: Option<String>) -> Response {
        let mut headers = HeaderMap::new();
        if let Some(challenge) = challenge {
            headers.insert(WWW_AUTHENTICATE, HeaderValue::from_str(&challenge).unwrap());
        }
        Response {
            status: StatusCode::from_u16(status).unwrap(),
            headers,
            body: Vec::new(),
        }
    }

    fn cae_challenge() -> String {
        format!(
            r#"Bearer authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", error="insufficient_claims", claims="{}""#,
            b64(CLAIMS_JSON)
        )
    }

    #[test]
    fn parses_bearer_parameters_quoted_or_bare() {
        assert_eq!(
            bearer_params(r#"Bearer realm="", error="insufficient_claims", claims="eyJ=""#),
            [
                ("realm".to_string(), String::new()),
                ("error".to_string(), "insufficient_claims".to_string()),
                ("claims".to_string(), "eyJ=".to_string()),
            ]
        );
        // Azure Storage's form: bare values separated by spaces.
        assert_eq!(
            bearer_params(
                "Bearer authorization_uri=https://login.microsoftonline.com/tid/oauth2/authorize resource_id=https://storage.azure.com"
            ),
            [
                (
                    "authorization_uri".to_string(),
                    "https://login.microsoftonline.com/tid/oauth2/authorize".to_string()
                ),
                ("resource_id".to_string(), "https://storage.azure.com".to_string()),
            ]
        );
        // Only the Bearer challenge counts; escapes inside quotes are honoured.
        assert_eq!(
            bearer_params(r#"Basic realm="x", Bearer error="a\"b""#),
            [("error".to_string(), "a\"b".to_string())]
        );
        assert!(bearer_params("").is_empty());
        assert!(bearer_params("Negotiate").is_empty());
    }

    #[test]
    fn recognizes_claims_challenges_only() {
        assert_eq!(
            claims_challenge(&response(401, Some(cae_challenge()))).as_deref(),
            Some(CLAIMS_JSON)
        );
        // URL-safe, unpadded encodings decode too.
        let url_safe = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(CLAIMS_JSON);
        let challenge = format!(r#"Bearer error="insufficient_claims", claims="{url_safe}""#);
        assert_eq!(
            claims_challenge(&response(401, Some(challenge))).as_deref(),
            Some(CLAIMS_JSON)
        );

        for (status, header) in [
            (403, Some(cae_challenge())),
            (401, None),
            (401, Some(r#"Bearer error="invalid_token""#.to_string())),
            (
                401,
                Some(r#"Bearer error="insufficient_claims", claims="""#.to_string()),
            ),
            (
                401,
                Some(r#"Bearer error="insufficient_claims", claims="!!!""#.to_string()),
            ),
            (
                401,
                Some(format!(
                    r#"Bearer error="insufficient_claims", claims="{}""#,
                    b64("[1]")
                )),
            ),
        ] {
            assert_eq!(
                claims_challenge(&response(status, header.clone())),
                None,
                "{status} {header:?}"
            );
        }
    }

    /// Drives `send_with_claims_retry` with a scripted service and broker.
    async fn run(
        replies: Vec<Response>,
    ) -> (
        Result<Response, ToolError>,
        Vec<Option<String>>,
        Vec<String>,
    ) {
        let asked = Mutex::new(Vec::new());
        let sent = Mutex::new(Vec::new());
        let replies = Mutex::new(replies.into_iter());
        let result = send_with_claims_retry(
            |claims: Option<String>| {
                let mut asked = asked.lock().unwrap();
                asked.push(claims);
                let token = format!("token-{}", asked.len());
                async move { Ok::<_, ToolError>(token) }
            },
            |token: String| {
                sent.lock().unwrap().push(token);
                let reply = replies.lock().unwrap().next().expect("a scripted reply");
                async move { Ok(reply) }
            },
        )
        .await;
        (
            result,
            asked.into_inner().unwrap(),
            sent.into_inner().unwrap(),
        )
    }

    #[tokio::test]
    async fn retries_once_with_the_claims() {
        let (result, asked, sent) = run(vec![
            response(401, Some(cae_challenge())),
            response(200, None),
        ])
        .await;
        assert_eq!(result.unwrap().status, 200);
        assert_eq!(asked, [None, Some(CLAIMS_JSON.to_string())]);
        assert_eq!(sent, ["token-1", "token-2"]);
    }

    #[tokio::test]
    async fn a_second_challenge_is_the_answer() {
        let (result, asked, sent) = run(vec![
            response(401, Some(cae_challenge())),
            response(401, Some(cae_challenge())),
        ])
        .await;
        assert_eq!(result.unwrap().status, 401);
        assert_eq!(asked.len(), 2);
        assert_eq!(sent.len(), 2);
    }

    #[tokio::test]
    async fn no_challenge_no_retry() {
        let (result, asked, sent) = run(vec![response(
            401,
            Some(r#"Bearer error="invalid_token""#.into()),
        )])
        .await;
        assert_eq!(result.unwrap().status, 401);
        assert_eq!(asked, [None]);
        assert_eq!(sent, ["token-1"]);
    }

    #[tokio::test]
    async fn a_broker_failure_on_the_retry_is_returned() {
        let asked = Mutex::new(0);
        let result = send_with_claims_retry(
            |claims: Option<String>| {
                *asked.lock().unwrap() += 1;
                async move {
                    match claims {
                        None => Ok("token".to_string()),
                        Some(_) => Err(ToolError::invalid_argument("cannot satisfy claims")),
                    }
                }
            },
            |_token: String| async { Ok(response(401, Some(cae_challenge()))) },
        )
        .await;
        assert_eq!(result.unwrap_err().message, "cannot satisfy claims");
        assert_eq!(*asked.lock().unwrap(), 2);
    }
}
