//! The user-login grants of the Microsoft identity platform v2 endpoint:
//! authorization code with PKCE, refresh token, device code.
//!
//! The `oauth2` crate builds the requests and parses the replies (PKCE, state,
//! URLs, device-code polling with `authorization_pending`/`slow_down`); the
//! daemon's one HTTP client sends them, so proxy and trust settings apply.
//! Nothing here logs a token, and no error text carries a response body.

use std::borrow::Cow;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use azbroker_proto::Secret;
use base64::Engine as _;
use oauth2::basic::{
    BasicErrorResponse, BasicRevocationErrorResponse, BasicTokenIntrospectionResponse,
    BasicTokenType,
};
use oauth2::{
    AuthUrl, AuthorizationCode, ClientId, CsrfToken, DeviceAuthorizationUrl, EndpointNotSet,
    EndpointSet, ErrorResponse, ExtraDeviceAuthorizationFields, ExtraTokenFields,
    PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RefreshToken, RequestTokenError, Scope,
    StandardRevocableToken, StandardTokenResponse, TokenResponse, TokenUrl,
};
use serde::{Deserialize, Serialize};

use super::account_key::AccountKey;
use crate::clock;
use crate::http::HttpClient;

/// Scopes every user login adds: an id token (who logged in) and a refresh token.
pub const OIDC_SCOPES: [&str; 3] = ["openid", "profile", "offline_access"];
/// Largest reply read from the identity platform.
const MAX_RESPONSE: usize = 256 * 1024;

/// Fields Entra adds to a token reply. `Debug` hides the id token.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct EntraFields {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    refresh_in: Option<i64>,
}

impl std::fmt::Debug for EntraFields {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntraFields")
            .field("id_token", &self.id_token.as_ref().map(|_| "<redacted>"))
            .field("refresh_in", &self.refresh_in)
            .finish()
    }
}

impl ExtraTokenFields for EntraFields {}

/// Entra's device-code reply carries a ready-made `message` for the user.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct DeviceMessage {
    #[serde(default)]
    message: Option<String>,
}

impl ExtraDeviceAuthorizationFields for DeviceMessage {}

type EntraTokenResponse = StandardTokenResponse<EntraFields, BasicTokenType>;
/// A started device-code login (holds the device code: never logged).
pub type DeviceDetails = oauth2::DeviceAuthorizationResponse<DeviceMessage>;

type EntraClient<HasAuth, HasDevice> = oauth2::Client<
    BasicErrorResponse,
    EntraTokenResponse,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    HasAuth,
    HasDevice,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

/// What a successful grant returned.
#[derive(Debug)]
pub struct TokenSet {
    pub access_token: Secret,
    pub expires_on: i64,
    pub refresh_in: Option<i64>,
    /// The rotated refresh token; the one presented is never used again.
    pub refresh_token: Option<Secret>,
    pub identity: Option<IdClaims>,
}

/// Who logged in, from the id token (read, not verified: it came straight from
/// the token endpoint over TLS, and only labels the account).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdClaims {
    pub username: Option<String>,
    pub tenant: Option<String>,
    pub object_id: Option<String>,
}

/// Why a grant failed, sorted by what the caller must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrantError {
    /// `invalid_grant`: the refresh token (or code) is dead; only a new login helps.
    InvalidGrant(String),
    /// `interaction_required` and friends (MFA, conditional access, consent):
    /// the user must sign in interactively.
    InteractionRequired(String),
    /// Anything else the identity platform said (throttling included).
    Rejected {
        message: String,
        retry_after: Option<Duration>,
    },
    /// The request never got an answer (DNS, TLS, proxy, timeout).
    Transport(String),
}

impl GrantError {
    pub fn message(&self) -> &str {
        match self {
            GrantError::InvalidGrant(m)
            | GrantError::InteractionRequired(m)
            | GrantError::Transport(m) => m,
            GrantError::Rejected { message, .. } => message,
        }
    }
}

/// The OAuth endpoints of one account, spoken through the daemon's HTTP client.
#[derive(Clone)]
pub struct OAuth {
    http: HttpClient,
    key: AccountKey,
}

impl OAuth {
    pub fn new(http: HttpClient, key: AccountKey) -> OAuth {
        OAuth { http, key }
    }

    pub fn authority(&self) -> &str {
        &self.key.authority
    }

    fn endpoint(&self, tenant: &str, name: &str) -> String {
        format!("{}/{tenant}/oauth2/v2.0/{name}", self.key.authority)
    }

    fn client(&self, tenant: &str) -> Result<EntraClient<EndpointNotSet, EndpointNotSet>, String> {
        let token_url = TokenUrl::new(self.endpoint(tenant, "token")).map_err(|e| e.to_string())?;
        Ok(
            oauth2::Client::new(ClientId::new(self.key.client_id.clone()))
                .set_auth_type(oauth2::AuthType::RequestBody)
                .set_token_uri(token_url),
        )
    }

    /// The authorize URL to open, its `state`, and the PKCE verifier to keep.
    pub fn authorize_url(
        &self,
        redirect_uri: &str,
        scopes: &[String],
        claims: Option<&str>,
    ) -> Result<(url::Url, CsrfToken, PkceCodeVerifier), String> {
        let auth_url = AuthUrl::new(self.endpoint(&self.key.tenant, "authorize"))
            .map_err(|e| e.to_string())?;
        let redirect = RedirectUrl::new(redirect_uri.to_string()).map_err(|e| e.to_string())?;
        let client = self
            .client(&self.key.tenant)?
            .set_auth_uri(auth_url)
            .set_redirect_uri(redirect);
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = client
            .authorize_url(CsrfToken::new_random)
            .add_scopes(with_oidc(scopes))
            .set_pkce_challenge(challenge)
            // Let the user pick the account instead of silently reusing a browser session.
            .add_extra_param("prompt", "select_account");
        if let Some(claims) = claims {
            request = request.add_extra_param("claims", claims.to_string());
        }
        let (url, state) = request.url();
        Ok((url, state, verifier))
    }

    /// Redeems an authorization code with its PKCE verifier.
    pub async fn exchange_code(
        &self,
        code: String,
        verifier: PkceCodeVerifier,
        redirect_uri: &str,
        scopes: &[String],
    ) -> Result<TokenSet, GrantError> {
        let client = self
            .client(&self.key.tenant)
            .map_err(GrantError::Transport)?;
        let redirect = RedirectUrl::new(redirect_uri.to_string())
            .map_err(|e| GrantError::Transport(e.to_string()))?;
        let transport = Transport::new(&self.http);
        let reply = client
            .exchange_code(AuthorizationCode::new(code))
            .set_pkce_verifier(verifier)
            .set_redirect_uri(Cow::Owned(redirect))
            // Entra's v2 endpoint takes the scopes again when redeeming the code.
            .add_extra_param("scope", scope_param(scopes))
            .request_async(&|request| transport.send(request))
            .await;
        token_set(reply, &transport)
    }

    /// Redeems a refresh token for `scopes` in `tenant` (the account's own when `None`).
    pub async fn refresh(
        &self,
        refresh_token: &Secret,
        scopes: &[String],
        tenant: Option<&str>,
        claims: Option<&str>,
    ) -> Result<TokenSet, GrantError> {
        let tenant = tenant.unwrap_or(&self.key.tenant);
        let client = self.client(tenant).map_err(GrantError::Transport)?;
        let transport = Transport::new(&self.http);
        let token = RefreshToken::new(refresh_token.expose().to_string());
        let mut request = client
            .exchange_refresh_token(&token)
            .add_scopes(with_oidc(scopes));
        if let Some(claims) = claims {
            request = request.add_extra_param("claims", claims.to_string());
        }
        let reply = request
            .request_async(&|request| transport.send(request))
            .await;
        token_set(reply, &transport)
    }

    /// Starts a device-code login; returns what to poll with and the message for the user.
    pub async fn device_code(
        &self,
        scopes: &[String],
    ) -> Result<(DeviceDetails, String), GrantError> {
        let url = DeviceAuthorizationUrl::new(self.endpoint(&self.key.tenant, "devicecode"))
            .map_err(|e| GrantError::Transport(e.to_string()))?;
        let client = self
            .client(&self.key.tenant)
            .map_err(GrantError::Transport)?
            .set_device_authorization_url(url);
        let transport = Transport::new(&self.http);
        let details: Result<DeviceDetails, _> = client
            .exchange_device_code()
            .add_scopes(with_oidc(scopes))
            .request_async(&|request| transport.send(request))
            .await;
        let details = details.map_err(|e| grant_error(e, &transport))?;
        let message = details.extra_fields().message.clone().unwrap_or_else(|| {
            format!(
                "To sign in, use a web browser to open the page {} and enter the code {} to authenticate.",
                details.verification_uri().as_str(),
                details.user_code().secret()
            )
        });
        Ok((details, message))
    }

    /// Polls the token endpoint until the user completes the device-code login,
    /// honouring `interval` and `slow_down`, until the code expires.
    pub async fn poll_device_code(&self, details: &DeviceDetails) -> Result<TokenSet, GrantError> {
        let url = DeviceAuthorizationUrl::new(self.endpoint(&self.key.tenant, "devicecode"))
            .map_err(|e| GrantError::Transport(e.to_string()))?;
        let client = self
            .client(&self.key.tenant)
            .map_err(GrantError::Transport)?
            .set_device_authorization_url(url);
        let transport = Transport::new(&self.http);
        let reply = client
            .exchange_device_access_token(details)
            .request_async(&|request| transport.send(request), tokio::time::sleep, None)
            .await;
        token_set(reply, &transport)
    }
}

/// The requested scopes plus [`OIDC_SCOPES`], without duplicates.
fn with_oidc(scopes: &[String]) -> Vec<Scope> {
    let mut all: Vec<String> = scopes.to_vec();
    for scope in OIDC_SCOPES {
        if !all.iter().any(|s| s == scope) {
            all.push(scope.to_string());
        }
    }
    all.into_iter().map(Scope::new).collect()
}

fn scope_param(scopes: &[String]) -> String {
    with_oidc(scopes)
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

fn token_set<RE, TE>(
    reply: Result<EntraTokenResponse, RequestTokenError<RE, TE>>,
    transport: &Transport,
) -> Result<TokenSet, GrantError>
where
    RE: std::error::Error + 'static,
    TE: ErrorResponse + 'static + ServerError,
{
    let reply = reply.map_err(|e| grant_error(e, transport))?;
    let lifetime = reply
        .expires_in()
        .map(|d| d.as_secs() as i64)
        .unwrap_or(3600);
    Ok(TokenSet {
        access_token: Secret::new(reply.access_token().secret().clone()),
        expires_on: clock::now_secs() + lifetime,
        refresh_in: reply.extra_fields().refresh_in.filter(|s| *s > 0),
        refresh_token: reply
            .refresh_token()
            .map(|t| Secret::new(t.secret().clone())),
        identity: reply.extra_fields().id_token.as_deref().and_then(id_claims),
    })
}

/// The `error` and `error_description` of an OAuth error reply, whatever its type.
trait ServerError {
    fn code(&self) -> String;
    fn description(&self) -> Option<String>;
}

impl<T: oauth2::ErrorResponseType + AsRef<str>> ServerError for oauth2::StandardErrorResponse<T> {
    fn code(&self) -> String {
        self.error().as_ref().to_string()
    }
    fn description(&self) -> Option<String> {
        self.error_description().cloned()
    }
}

fn grant_error<RE, TE>(error: RequestTokenError<RE, TE>, transport: &Transport) -> GrantError
where
    RE: std::error::Error + 'static,
    TE: ErrorResponse + 'static + ServerError,
{
    match error {
        RequestTokenError::ServerResponse(reply) => {
            let code = reply.code();
            // Entra's description ends in "Trace ID: ... Timestamp: ..." on new lines: keep one line.
            let description = reply
                .description()
                .map(|d| d.split_whitespace().collect::<Vec<_>>().join(" "))
                .unwrap_or_default();
            let message = format!("{code}: {description}");
            match code.as_str() {
                "invalid_grant" => GrantError::InvalidGrant(message),
                "interaction_required" | "consent_required" | "login_required" => {
                    GrantError::InteractionRequired(message)
                }
                _ => GrantError::Rejected {
                    message,
                    retry_after: transport.retry_after(),
                },
            }
        }
        RequestTokenError::Request(e) => GrantError::Transport(crate::error_chain::error_chain(&e)),
        // The body is not repeated: a reply that does not parse may still hold a token.
        RequestTokenError::Parse(e, _) => GrantError::Rejected {
            message: format!(
                "the identity platform's reply does not parse (at `{}`)",
                e.path()
            ),
            retry_after: None,
        },
        RequestTokenError::Other(m) => GrantError::Rejected {
            message: m,
            retry_after: transport.retry_after(),
        },
    }
}

/// The claims of an id token that name the account. `None` if it is not a JWT.
fn id_claims(id_token: &str) -> Option<IdClaims> {
    if id_token.len() > 64 * 1024 {
        return None;
    }
    let payload = id_token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let text = |name: &str| {
        claims
            .get(name)
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    Some(IdClaims {
        username: text("preferred_username").or_else(|| text("upn")),
        tenant: text("tid"),
        object_id: text("oid"),
    })
}

/// Sends `oauth2`'s requests through the daemon's reqwest client, reading at
/// most [`MAX_RESPONSE`] bytes, and remembers a 429's `Retry-After`.
struct Transport {
    client: reqwest::Client,
    retry_after: Arc<Mutex<Option<Duration>>>,
}

#[derive(Debug)]
struct TransportError(String);

impl std::fmt::Display for TransportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TransportError {}

impl Transport {
    fn new(http: &HttpClient) -> Transport {
        Transport {
            client: http.reqwest().clone(),
            retry_after: Arc::new(Mutex::new(None)),
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        *self.retry_after.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn send(
        &self,
        request: oauth2::HttpRequest,
    ) -> impl std::future::Future<Output = Result<oauth2::HttpResponse, TransportError>> + 'static
    {
        let client = self.client.clone();
        let retry_after = self.retry_after.clone();
        async move {
            let request = reqwest::Request::try_from(request)
                .map_err(|e| TransportError(crate::error_chain::error_chain(&e)))?;
            let mut response = client
                .execute(request)
                .await
                .map_err(|e| TransportError(crate::error_chain::error_chain(&e)))?;
            let status = response.status();
            if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
                let after = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                *retry_after.lock().unwrap_or_else(|e| e.into_inner()) = after;
            }
            let mut builder = oauth2::http::Response::builder().status(status.as_u16());
            for (name, value) in response.headers() {
                builder = builder.header(name.as_str(), value.as_bytes());
            }
            let mut body = Vec::new();
            while let Some(chunk) = response
                .chunk()
                .await
                .map_err(|e| TransportError(crate::error_chain::error_chain(&e)))?
            {
                if body.len() + chunk.len() > MAX_RESPONSE {
                    return Err(TransportError(format!(
                        "the identity platform's reply is larger than {} KiB",
                        MAX_RESPONSE / 1024
                    )));
                }
                body.extend_from_slice(&chunk);
            }
            builder
                .body(body)
                .map_err(|e| TransportError(e.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oidc_scopes_are_added_once() {
        let scopes = with_oidc(&[
            "https://management.azure.com/.default".into(),
            "openid".into(),
        ]);
        let names: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
        assert_eq!(
            names,
            [
                "https://management.azure.com/.default",
                "openid",
                "profile",
                "offline_access"
            ]
        );
    }

    #[test]
    fn id_token_claims_name_the_account() {
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(r#"{"preferred_username":"user@contoso.example","tid":"t1","oid":"o1"}"#);
        let claims = id_claims(&format!("eyJhbGciOiJub25lIn0.{payload}.sig")).unwrap();
        assert_eq!(claims.username.as_deref(), Some("user@contoso.example"));
        assert_eq!(claims.tenant.as_deref(), Some("t1"));
        assert_eq!(claims.object_id.as_deref(), Some("o1"));
        assert_eq!(id_claims("not-a-jwt"), None);
    }

    #[test]
    fn authorize_url_carries_pkce_state_and_redirect() {
        let http = HttpClient::from_env(Some("http://127.0.0.1:1/".into())).unwrap();
        let oauth = OAuth::new(http, AccountKey::new("https://login.example", None, None));
        let (url, state, verifier) = oauth
            .authorize_url(
                "http://localhost:4711",
                &["https://management.azure.com/.default".into()],
                None,
            )
            .unwrap();
        assert_eq!(url.path(), "/organizations/oauth2/v2.0/authorize");
        let query: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
        assert_eq!(query["response_type"], "code");
        assert_eq!(
            query["client_id"],
            super::super::account_key::DEVELOPER_CLIENT_ID
        );
        assert_eq!(query["redirect_uri"], "http://localhost:4711");
        assert_eq!(query["code_challenge_method"], "S256");
        assert_eq!(query["state"], *state.secret());
        assert_eq!(
            query["scope"],
            "https://management.azure.com/.default openid profile offline_access"
        );
        use sha2::Digest as _;
        let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(sha2::Sha256::digest(verifier.secret().as_bytes()));
        assert_eq!(query["code_challenge"], challenge);
    }
}
