//! ManagedIdentity: the App Service protocol (`IDENTITY_ENDPOINT` +
//! `IDENTITY_HEADER`, api-version 2019-08-01) when the client's chain carries
//! both, else the VM metadata endpoint (IMDS, api-version 2018-02-01).
//! `AZURE_CLIENT_ID` selects a user-assigned identity.
//!
//! Our own code rather than `azure_identity`'s `ManagedIdentityCredential`:
//! that one reads `IDENTITY_ENDPOINT`/`IDENTITY_HEADER` from the daemon's own
//! environment, but they belong to the client's (each client sends its
//! chain), and it has IMDS's address hard-coded. Both protocols are one GET.
//! IMDS is reached without any proxy and with a short connect timeout, so
//! off Azure the chain moves on within about a second.

use azbroker_proto::{resource, CredentialSpec, Secret};
use serde::Deserialize;

use super::{SourceContext, SourceError, SourceRequest, Token, TokenSource};
use crate::http::{describe_transport_error, retry_after};

const APP_SERVICE_API_VERSION: &str = "2019-08-01";
const IMDS_API_VERSION: &str = "2018-02-01";
/// A token response is well under 16 KiB.
const MAX_BODY: usize = 64 * 1024;
/// Longest service message kept in an error.
const MAX_MESSAGE: usize = 512;

pub struct ManagedIdentitySource {
    spec: CredentialSpec,
    ctx: SourceContext,
}

impl ManagedIdentitySource {
    pub fn new(spec: CredentialSpec, ctx: &SourceContext) -> Self {
        ManagedIdentitySource {
            spec,
            ctx: ctx.clone(),
        }
    }
}

#[async_trait::async_trait]
impl TokenSource for ManagedIdentitySource {
    async fn acquire(&self, request: &SourceRequest) -> Result<Token, SourceError> {
        let CredentialSpec::ManagedIdentity {
            client_id,
            endpoint,
            header,
        } = &self.spec
        else {
            unreachable!("ManagedIdentitySource is built from a ManagedIdentity spec");
        };
        let [scope] = request.scopes.as_slice() else {
            return Err(SourceError::failed(
                "a managed identity gets a token for one resource at a time; ask for each scope separately",
            ));
        };
        if request.claims.is_some() {
            return Err(SourceError::failed(
                "a managed identity cannot answer a claims challenge: nothing can be run to satisfy it; the resource's conditional access policy must allow this identity",
            ));
        }
        let resource = resource::scope_to_resource(&resource::to_default_scope(scope)).to_string();
        let client_id = client_id.as_deref();
        let token = match (endpoint, header) {
            (Some(endpoint), Some(header)) => {
                self.app_service(endpoint, header, &resource, client_id)
                    .await?
            }
            // Like Azure.Identity: without both App Service variables, IMDS.
            _ => self.imds(&resource, client_id).await?,
        };
        check_tenant(request, token)
    }
}

impl ManagedIdentitySource {
    async fn app_service(
        &self,
        endpoint: &str,
        header: &Secret,
        resource: &str,
        client_id: Option<&str>,
    ) -> Result<Token, SourceError> {
        let mut url = reqwest::Url::parse(endpoint)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| {
                SourceError::failed(format!(
                    "IDENTITY_ENDPOINT {endpoint:?} is not an http(s) URL"
                ))
            })?;
        url.query_pairs_mut()
            .append_pair("resource", resource)
            .append_pair("api-version", APP_SERVICE_API_VERSION);
        if let Some(client_id) = client_id {
            url.query_pairs_mut().append_pair("client_id", client_id);
        }
        let mut secret = reqwest::header::HeaderValue::from_str(header.expose()).map_err(|_| {
            SourceError::failed("IDENTITY_HEADER holds characters not allowed in an HTTP header")
        })?;
        secret.set_sensitive(true);
        let sent = self
            .ctx
            .http
            .client()
            .get(url)
            .header("X-IDENTITY-HEADER", secret)
            .send()
            .await;
        let response = sent.map_err(|e| {
            let what = format!(
                "cannot reach IDENTITY_ENDPOINT {endpoint}: {}",
                describe_transport_error(&e)
            );
            if e.is_timeout() {
                SourceError::Timeout(what)
            } else {
                SourceError::failed(what)
            }
        })?;
        let status = response.status();
        let retry_after = retry_after(response.headers());
        let body = read_body(response).await?;
        if !status.is_success() {
            // {"statusCode":400,"message":"Unable to load the proper Managed Identity.","correlationId":"..."}
            let message = service_message(&body, "message");
            return Err(SourceError::Failed {
                message: format!(
                    "the App Service managed identity endpoint answered HTTP {}: {message}",
                    status.as_u16()
                ),
                retry_after,
            });
        }
        parse_token(&body)
    }

    async fn imds(&self, resource: &str, client_id: Option<&str>) -> Result<Token, SourceError> {
        let (client, imds_url) = self.ctx.http.imds();
        let mut url = reqwest::Url::parse(imds_url).expect("the IMDS URL was checked at startup");
        url.query_pairs_mut()
            .append_pair("api-version", IMDS_API_VERSION)
            .append_pair("resource", resource);
        if let Some(client_id) = client_id {
            url.query_pairs_mut().append_pair("client_id", client_id);
        }
        let sent = client.get(url).header("Metadata", "true").send().await;
        let response = match sent {
            Ok(response) => response,
            Err(e) if e.is_connect() => {
                return Err(SourceError::Unavailable(format!(
                    "no managed identity here: the VM metadata endpoint (IMDS) did not answer ({}); set IDENTITY_ENDPOINT and IDENTITY_HEADER on App Service",
                    describe_transport_error(&e)
                )))
            }
            Err(e) if e.is_timeout() => {
                return Err(SourceError::Timeout(format!(
                    "the VM metadata endpoint (IMDS) did not answer in time: {}",
                    describe_transport_error(&e)
                )))
            }
            Err(e) => {
                return Err(SourceError::failed(format!(
                    "the VM metadata endpoint (IMDS) failed: {}",
                    describe_transport_error(&e)
                )))
            }
        };
        let status = response.status();
        let retry_after = retry_after(response.headers());
        let body = read_body(response).await?;
        if status == reqwest::StatusCode::BAD_REQUEST {
            // {"error":"invalid_request","error_description":"Identity not found"}
            let which = match client_id {
                Some(id) => format!("user-assigned identity {id} (AZURE_CLIENT_ID)"),
                None => "system-assigned identity".to_string(),
            };
            return Err(SourceError::Unavailable(format!(
                "this machine has no {which}: IMDS answered HTTP 400: {}",
                service_message(&body, "error_description")
            )));
        }
        if !status.is_success() {
            return Err(SourceError::Failed {
                message: format!(
                    "the VM metadata endpoint (IMDS) answered HTTP {}: {}",
                    status.as_u16(),
                    service_message(&body, "error_description")
                ),
                retry_after,
            });
        }
        parse_token(&body)
    }
}

/// A managed identity lives in one tenant: a request for another is refused,
/// which it can only be once the token (and its `tid`) is known.
fn check_tenant(request: &SourceRequest, mut token: Token) -> Result<Token, SourceError> {
    let issued_in = azbroker_proto::jwt::tenant(token.access_token.expose());
    if let Some(wanted) = &request.tenant {
        let same = issued_in
            .as_deref()
            .is_some_and(|tid| tid.eq_ignore_ascii_case(wanted));
        if !same {
            return Err(SourceError::failed(format!(
                "a managed identity only gets tokens in its own tenant ({}), not in tenant {wanted}; ask without a tenant, or use a credential of that tenant",
                issued_in.as_deref().unwrap_or("unknown")
            )));
        }
    }
    token.tenant = issued_in;
    Ok(token)
}

async fn read_body(mut response: reqwest::Response) -> Result<Vec<u8>, SourceError> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| {
        SourceError::failed(format!(
            "reading the managed identity response: {}",
            describe_transport_error(&e)
        ))
    })? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(SourceError::failed(
                "the managed identity endpoint sent more than 64 KiB: not a token response",
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A field of a JSON error body, else the body itself, shortened; never raw bytes.
fn service_message(body: &[u8], field: &str) -> String {
    let from_json = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get(field).and_then(|m| m.as_str()).map(str::to_string));
    let text = from_json.unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    let text: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_MESSAGE)
        .collect();
    if text.trim().is_empty() {
        "(no message)".into()
    } else {
        text.trim().to_string()
    }
}

/// Both protocols send numbers as strings; accept numbers too.
#[derive(Deserialize)]
#[serde(untagged)]
enum Number {
    Int(i64),
    Text(String),
}

impl Number {
    fn value(&self) -> Option<i64> {
        match self {
            Number::Int(n) => Some(*n),
            Number::Text(s) => s.trim().parse().ok(),
        }
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: Secret,
    expires_on: Option<Number>,
    expires_in: Option<Number>,
    token_type: Option<String>,
}

fn parse_token(body: &[u8]) -> Result<Token, SourceError> {
    let bad = |why: &str| {
        SourceError::failed(format!(
            "the managed identity endpoint sent an unusable token response: {why}"
        ))
    };
    let response: TokenResponse =
        serde_json::from_slice(body).map_err(|_| bad("not the expected JSON"))?;
    if response.access_token.is_empty() {
        return Err(bad("empty access_token"));
    }
    if let Some(kind) = &response.token_type {
        if !kind.eq_ignore_ascii_case("bearer") {
            return Err(bad("token_type is not Bearer"));
        }
    }
    let expires_on = match (&response.expires_on, &response.expires_in) {
        (Some(on), _) => on.value(),
        (None, Some(secs)) => secs.value().map(|s| crate::clock::now_secs() + s),
        (None, None) => None,
    }
    .ok_or_else(|| bad("no usable expires_on"))?;
    Ok(Token {
        access_token: response.access_token,
        expires_on,
        refresh_in: None,
        tenant: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_protocols() {
        let imds = br#"{"access_token":"a.b.c","refresh_token":"","expires_in":"3599","expires_on":"1506484173","not_before":"1506480273","resource":"https://management.azure.com/","token_type":"Bearer"}"#;
        assert_eq!(parse_token(imds).unwrap().expires_on, 1506484173);
        let app_service = br#"{"access_token":"a.b.c","expires_on":"1586984735","resource":"https://vault.azure.net","token_type":"Bearer","client_id":"x"}"#;
        assert_eq!(parse_token(app_service).unwrap().expires_on, 1586984735);
        let numbers = br#"{"access_token":"a.b.c","expires_on":1586984735}"#;
        assert_eq!(parse_token(numbers).unwrap().expires_on, 1586984735);
    }

    #[test]
    fn rejects_unusable_responses_without_echoing_them() {
        for body in [
            &b"<html>proxy login</html>"[..],
            br#"{"access_token":"","expires_on":"1"}"#,
            br#"{"access_token":"secret-token-value","token_type":"PoP","expires_on":"1"}"#,
            br#"{"access_token":"secret-token-value","expires_on":"soon"}"#,
        ] {
            let err = parse_token(body).err().unwrap();
            assert!(!err.message().contains("secret-token-value"), "{err:?}");
            assert!(err.message().contains("unusable token response"));
        }
    }

    #[test]
    fn service_messages_are_bounded_and_single_line() {
        assert_eq!(
            service_message(br#"{"statusCode":400,"message":"Unable to load the proper Managed Identity.","correlationId":"c"}"#, "message"),
            "Unable to load the proper Managed Identity."
        );
        let long = "x\n".repeat(1000);
        let text = service_message(long.as_bytes(), "message");
        assert!(text.len() <= MAX_MESSAGE && !text.contains('\n'));
        assert_eq!(service_message(b"", "message"), "(no message)");
    }
}
