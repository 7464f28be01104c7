//! The user-login half of the Entra double: what a public client (Azure.Identity's
//! developer client, or any registered with [`EntraDouble::register_public_client`])
//! meets when a person signs in.
//!
//! - `GET {tenant}/oauth2/v2.0/authorize`: auto-approves like a user who clicks
//!   "accept" and redirects to the loopback `redirect_uri` with `code`, `state`
//!   and `session_state`; or, when told to, with `error=access_denied` (the user
//!   cancelled). Bad requests get Entra's HTML error page with the AADSTS code.
//! - `POST {tenant}/oauth2/v2.0/token` with `authorization_code` (single use,
//!   PKCE S256 verified, redirect URI and client checked), `refresh_token` (with
//!   **rotation**: every reply carries a new refresh token and a presented one is
//!   dead; presenting it again is `invalid_grant` AADSTS70008 and is counted), and
//!   the device-code grant (`authorization_pending`, `slow_down`, `expired_token`).
//! - `POST {tenant}/oauth2/v2.0/devicecode`: Entra's reply, `message` included.
//!
//! Replies carry `refresh_token` only when `offline_access` was asked for, and
//! an `id_token` when `openid` was. One scope set names one resource, as in Entra.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hyper::StatusCode;
use rand::RngCore as _;
use serde::Serialize;
use sha2::{Digest as _, Sha256};
use time::OffsetDateTime;

use crate::entra_double::{EntraDouble, EntraError, Form, Reply};
use crate::fake_az::{DEFAULT_TENANT, USER_OID, USER_UPN};
use crate::jwt::{self, IdTokenClaims, User, UserClaims};

/// Display name of the signed-in test user.
pub const USER_NAME: &str = "Test User";
/// `interval` of device-code replies unless [`EntraDouble::set_device_code_interval`] says otherwise.
pub const DEFAULT_DEVICE_INTERVAL_SECS: u64 = 5;
/// `expires_in` of device codes.
pub const DEVICE_CODE_LIFETIME_SECS: u64 = 900;
const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
const OIDC: [&str; 3] = ["openid", "profile", "offline_access"];

fn user() -> User<'static> {
    User {
        oid: USER_OID,
        upn: USER_UPN,
        name: USER_NAME,
    }
}

/// Everything the user flows remember; lives in the double's `Config`.
pub(crate) struct UserState {
    public_clients: HashSet<String>,
    codes: HashMap<String, IssuedCode>,
    refresh_tokens: HashMap<String, RefreshState>,
    device_codes: HashMap<String, DeviceCode>,
    deny_authorize: usize,
    device_interval: u64,
    device_pending_polls: usize,
    device_slow_downs: usize,
    device_codes_expired: bool,
    authorize_requests: usize,
    refresh_token_reuses: usize,
    device_polls: Vec<Instant>,
}

impl Default for UserState {
    fn default() -> Self {
        UserState {
            public_clients: HashSet::new(),
            codes: HashMap::new(),
            refresh_tokens: HashMap::new(),
            device_codes: HashMap::new(),
            deny_authorize: 0,
            device_interval: DEFAULT_DEVICE_INTERVAL_SECS,
            device_pending_polls: 0,
            device_slow_downs: 0,
            device_codes_expired: false,
            authorize_requests: 0,
            refresh_token_reuses: 0,
            device_polls: Vec::new(),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum RefreshState {
    Live,
    /// Presented once: rotation made it dead.
    Used,
    /// Revoked (password reset).
    Revoked,
}

struct IssuedCode {
    client_id: String,
    redirect_uri: String,
    challenge: String,
    scope: String,
    tenant: String,
    redeemed: bool,
}

struct DeviceCode {
    client_id: String,
    scope: String,
    tenant: String,
    issued: Instant,
    pending: usize,
    slow_downs: usize,
    redeemed: bool,
}

impl EntraDouble {
    /// Registers a public client (no secret), e.g. Azure.Identity's developer
    /// client `04b07795-8ddb-461a-bbee-02f9e1bf7b46`, for the user flows.
    pub fn register_public_client(&self, client_id: &str) {
        self.shared
            .config()
            .user
            .public_clients
            .insert(client_id.to_owned());
    }

    /// The next `n` authorize requests end as if the user pressed "cancel":
    /// a redirect with `error=access_denied` (AADSTS65004).
    pub fn deny_next_authorize(&self, n: usize) {
        self.shared.config().user.deny_authorize = n;
    }

    /// Authorize requests so far (browser sign-ins started).
    pub fn authorize_requests(&self) -> usize {
        self.shared.config().user.authorize_requests
    }

    /// Refresh tokens presented a second time (each got `invalid_grant`).
    pub fn refresh_token_reuses(&self) -> usize {
        self.shared.config().user.refresh_token_reuses
    }

    /// Refresh tokens issued and not yet presented.
    pub fn live_refresh_tokens(&self) -> usize {
        self.shared
            .config()
            .user
            .refresh_tokens
            .values()
            .filter(|state| **state == RefreshState::Live)
            .count()
    }

    /// Makes every refresh token issued so far unusable (as after a password
    /// reset): presenting one gets `invalid_grant` AADSTS50173.
    pub fn revoke_refresh_tokens(&self) {
        for state in self.shared.config().user.refresh_tokens.values_mut() {
            *state = RefreshState::Revoked;
        }
    }

    /// `interval` of the next device codes.
    pub fn set_device_code_interval(&self, secs: u64) {
        self.shared.config().user.device_interval = secs;
    }

    /// Device codes issued from now on answer `authorization_pending` this many
    /// times, after `slow_down` `slow_downs` times, before the user "approves".
    pub fn set_device_code_polls(&self, pending: usize, slow_downs: usize) {
        let mut config = self.shared.config();
        config.user.device_pending_polls = pending;
        config.user.device_slow_downs = slow_downs;
    }

    /// Every device code, issued or to come, answers `expired_token`.
    pub fn expire_device_codes(&self) {
        self.shared.config().user.device_codes_expired = true;
    }

    /// When each device-code poll arrived.
    pub fn device_code_polls(&self) -> Vec<Instant> {
        self.shared.config().user.device_polls.clone()
    }

    /// Whether the authorization code `code` was redeemed; `None` if this double never issued it.
    pub fn code_redeemed(&self, code: &str) -> Option<bool> {
        self.shared
            .config()
            .user
            .codes
            .get(code)
            .map(|c| c.redeemed)
    }
}

/// `GET .../authorize`: the redirect a user's browser would follow after "accept".
pub(crate) fn authorize(
    state: &mut UserState,
    tenant: &str,
    query: &str,
) -> (StatusCode, Vec<(&'static str, String)>, String) {
    state.authorize_requests += 1;
    let form = Form::parse(query.as_bytes());
    let client_id = form.get("client_id");
    if !state.public_clients.contains(client_id) {
        return error_page(
            700016,
            &format!(
            "Application with identifier '{client_id}' was not found in the directory '{tenant}'."
        ),
        );
    }
    let redirect_uri = form.get("redirect_uri");
    let loopback = ["http://localhost:", "http://127.0.0.1:"]
        .iter()
        .any(|prefix| redirect_uri.starts_with(prefix));
    if !loopback {
        return error_page(50011, &format!(
            "The redirect URI '{redirect_uri}' specified in the request does not match the redirect URIs configured for the application '{client_id}'."
        ));
    }
    let oauth_state = form.get("state").to_owned();
    let redirect = |params: &[(&str, &str)]| {
        let mut query = form_urlencoded::Serializer::new(String::new());
        for (name, value) in params {
            query.append_pair(name, value);
        }
        let separator = if redirect_uri.contains('?') { '&' } else { '?' };
        let location = format!("{redirect_uri}{separator}{}", query.finish());
        (
            StatusCode::FOUND,
            vec![("location", location)],
            String::new(),
        )
    };
    let fail = |error: &str, code: u32, text: &str| {
        let description = format!(
            "AADSTS{code}: {text} Trace ID: {} Correlation ID: {} Timestamp: {}",
            jwt::new_uuid(),
            jwt::new_uuid(),
            OffsetDateTime::now_utc().unix_timestamp()
        );
        redirect(&[
            ("error", error),
            ("error_description", &description),
            ("state", &oauth_state),
        ])
    };
    if form.get("response_type") != "code" {
        return fail("unsupported_response_type", 900144, "The provided value for the input parameter 'response_type' is not allowed for this request. Expected value: 'code'.");
    }
    let challenge = form.get("code_challenge").to_owned();
    if challenge.is_empty() || form.get("code_challenge_method") != "S256" {
        return fail("invalid_request", 9002325, "Proof Key for Code Exchange is required for cross-origin authorization code redemption.");
    }
    if let Some(error) = multi_resource(form.get("scope")) {
        return fail("invalid_request", 28000, &error);
    }
    if state.deny_authorize > 0 {
        state.deny_authorize -= 1;
        return fail(
            "access_denied",
            65004,
            "User declined to consent to access the app.",
        );
    }
    let code = format!("1.A{}", random_b64(180));
    state.codes.insert(
        code.clone(),
        IssuedCode {
            client_id: client_id.to_owned(),
            redirect_uri: redirect_uri.to_owned(),
            challenge,
            scope: form.get("scope").to_owned(),
            tenant: tenant.to_owned(),
            redeemed: false,
        },
    );
    let session_state = jwt::new_uuid();
    redirect(&[
        ("code", &code),
        ("state", &oauth_state),
        ("session_state", &session_state),
    ])
}

/// Entra's HTML error page for a request it cannot redirect back.
fn error_page(code: u32, text: &str) -> (StatusCode, Vec<(&'static str, String)>, String) {
    let body = format!(
        "<!DOCTYPE html><html><head><title>Sign in to your account</title></head><body>\
         <div id=\"error\">AADSTS{code}: {text}</div></body></html>"
    );
    (
        StatusCode::BAD_REQUEST,
        vec![("content-type", "text/html; charset=utf-8".to_owned())],
        body,
    )
}

/// `POST .../devicecode`.
pub(crate) fn device_authorization(state: &mut UserState, tenant: &str, form: &Form) -> Reply {
    let client_id = form.get("client_id");
    if client_id.is_empty() {
        return missing("client_id");
    }
    if !state.public_clients.contains(client_id) {
        return Reply::Error(EntraError::for_code(
            700016,
            tenant,
            client_id,
            form.get("scope"),
        ));
    }
    let scope = form.get("scope");
    if scope.is_empty() {
        return missing("scope");
    }
    if let Some(error) = multi_resource(scope) {
        return Reply::Error(EntraError::new(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            28000,
            error,
        ));
    }
    let device_code = format!("DAQABAAEAAA{}", random_b64(120));
    let user_code = random_user_code();
    state.device_codes.insert(
        device_code.clone(),
        DeviceCode {
            client_id: client_id.to_owned(),
            scope: scope.to_owned(),
            tenant: tenant.to_owned(),
            issued: Instant::now(),
            pending: state.device_pending_polls,
            slow_downs: state.device_slow_downs,
            redeemed: false,
        },
    );
    #[derive(Serialize)]
    struct DeviceReply {
        user_code: String,
        device_code: String,
        verification_uri: &'static str,
        expires_in: u64,
        interval: u64,
        message: String,
    }
    let message = format!(
        "To sign in, use a web browser to open the page https://microsoft.com/devicelogin and enter the code {user_code} to authenticate."
    );
    Reply::Json(
        StatusCode::OK,
        serde_json::to_vec(&DeviceReply {
            user_code,
            device_code,
            verification_uri: "https://microsoft.com/devicelogin",
            expires_in: DEVICE_CODE_LIFETIME_SECS,
            interval: state.device_interval,
            message,
        })
        .expect("serializes"),
    )
}

/// The user-flow grants of the token endpoint; `None` for other grant types.
pub(crate) fn token(
    state: &mut UserState,
    lifetime: u64,
    refresh_in: Option<u64>,
    tenant: &str,
    form: &Form,
) -> Option<Reply> {
    let grant = form.get("grant_type");
    if !matches!(grant, "authorization_code" | "refresh_token" | DEVICE_GRANT) {
        return None;
    }
    let client_id = form.get("client_id");
    if client_id.is_empty() {
        return Some(missing("client_id"));
    }
    if !state.public_clients.contains(client_id) {
        return Some(Reply::Error(EntraError::for_code(
            700016,
            tenant,
            client_id,
            form.get("scope"),
        )));
    }
    let invalid_grant = |code: u32, text: &str| {
        Reply::Error(EntraError::new(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            code,
            text.to_owned(),
        ))
    };
    let (scope, token_tenant) = match grant {
        "authorization_code" => {
            let Some(issued) = state.codes.get_mut(form.get("code")) else {
                return Some(invalid_grant(
                    70000,
                    "The provided value for the 'code' parameter is not valid.",
                ));
            };
            if issued.redeemed {
                return Some(invalid_grant(54005, "OAuth2 Authorization code was already redeemed, please retry with a new valid code or use an existing refresh token."));
            }
            if issued.client_id != client_id {
                return Some(invalid_grant(70000, "The provided value for the 'code' parameter is not valid: it was issued to another client."));
            }
            if issued.redirect_uri != form.get("redirect_uri") {
                return Some(invalid_grant(500112, &format!(
                    "The reply address '{}' does not match the reply address '{}' provided when requesting Authorization code.",
                    form.get("redirect_uri"), issued.redirect_uri
                )));
            }
            let verifier = form.get("code_verifier");
            let computed = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
            if verifier.is_empty() || computed != issued.challenge {
                return Some(invalid_grant(501481, "The Code_Verifier does not match the code_challenge supplied in the authorization request."));
            }
            issued.redeemed = true;
            // The token request may name the scopes again; the authorize request's count.
            let scope = if form.get("scope").is_empty() {
                issued.scope.clone()
            } else {
                form.get("scope").to_owned()
            };
            (scope, issued.tenant.clone())
        }
        "refresh_token" => {
            let scope = form.get("scope");
            if scope.is_empty() {
                return Some(missing("scope"));
            }
            // A request Entra refuses leaves the refresh token alive.
            if let Some(error) = multi_resource(scope) {
                return Some(Reply::Error(EntraError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_scope",
                    28000,
                    error,
                )));
            }
            let presented = form.get("refresh_token");
            match state.refresh_tokens.get_mut(presented) {
                None => {
                    return Some(invalid_grant(
                        9002313,
                        "Invalid request. Request is malformed or invalid.",
                    ))
                }
                Some(RefreshState::Used) => {
                    state.refresh_token_reuses += 1;
                    return Some(Reply::Error(EntraError::for_code(
                        70008, tenant, client_id, scope,
                    )));
                }
                Some(RefreshState::Revoked) => {
                    return Some(Reply::Error(EntraError::for_code(
                        50173, tenant, client_id, scope,
                    )));
                }
                Some(live) => *live = RefreshState::Used,
            }
            (scope.to_owned(), tenant.to_owned())
        }
        _ => {
            state.device_polls.push(Instant::now());
            let expired = state.device_codes_expired;
            let Some(device) = state.device_codes.get_mut(form.get("device_code")) else {
                return Some(invalid_grant(
                    9002313,
                    "Invalid request. Request is malformed or invalid.",
                ));
            };
            if expired || device.issued.elapsed() > Duration::from_secs(DEVICE_CODE_LIFETIME_SECS) {
                return Some(Reply::Error(EntraError::new(StatusCode::BAD_REQUEST, "expired_token", 70020,
                    "The provided value for the input parameter 'device_code' is not valid. This device code has expired.".to_owned())));
            }
            if device.redeemed || device.client_id != client_id {
                return Some(invalid_grant(
                    70000,
                    "The provided value for the input parameter 'device_code' is not valid.",
                ));
            }
            if device.slow_downs > 0 {
                device.slow_downs -= 1;
                return Some(Reply::Error(EntraError::new(
                    StatusCode::BAD_REQUEST,
                    "slow_down",
                    70016,
                    "OAuth 2.0 device flow error. Polling too frequently: slow down.".to_owned(),
                )));
            }
            if device.pending > 0 {
                device.pending -= 1;
                return Some(Reply::Error(EntraError::new(
                    StatusCode::BAD_REQUEST,
                    "authorization_pending",
                    70016,
                    "OAuth 2.0 device flow error. Authorization is pending. Continue polling."
                        .to_owned(),
                )));
            }
            device.redeemed = true;
            (device.scope.clone(), device.tenant.clone())
        }
    };
    if let Some(error) = multi_resource(&scope) {
        return Some(Reply::Error(EntraError::new(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            28000,
            error,
        )));
    }
    Some(issue(
        state,
        &scope,
        &token_tenant,
        client_id,
        lifetime,
        refresh_in,
    ))
}

/// The successful reply of a user grant, fields in Entra's order.
fn issue(
    state: &mut UserState,
    scope: &str,
    tenant: &str,
    client_id: &str,
    lifetime: u64,
    refresh_in: Option<u64>,
) -> Reply {
    #[derive(Serialize)]
    struct UserTokenBody {
        token_type: &'static str,
        scope: String,
        expires_in: u64,
        ext_expires_in: u64,
        access_token: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        refresh_token: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        id_token: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        refresh_in: Option<u64>,
    }
    let scopes: Vec<&str> = scope.split_whitespace().collect();
    let resource_scope = scopes
        .iter()
        .find(|s| !OIDC.contains(s))
        .copied()
        .unwrap_or("00000003-0000-0000-c000-000000000000/.default");
    // "organizations" and "common" resolve to the user's home tenant.
    let tid = if tenant.contains('-') && tenant.len() == 36 {
        tenant
    } else {
        DEFAULT_TENANT
    };
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let claims = UserClaims::new(
        resource_scope,
        tid,
        client_id,
        &user(),
        now,
        lifetime as i64,
    );
    let refresh_token = scopes.contains(&"offline_access").then(|| {
        let token = format!("1.A{}", random_b64(600));
        state
            .refresh_tokens
            .insert(token.clone(), RefreshState::Live);
        token
    });
    let id_token = scopes
        .contains(&"openid")
        .then(|| jwt::mint(&IdTokenClaims::new(tid, client_id, &user(), now)));
    let granted: Vec<String> = std::iter::once(format!(
        "{}/user_impersonation",
        jwt::audience_for_scope(resource_scope)
    ))
    .chain(
        scopes
            .iter()
            .filter(|s| OIDC.contains(s) && **s != "offline_access")
            .map(|s| s.to_string()),
    )
    .collect();
    let body = UserTokenBody {
        token_type: "Bearer",
        scope: granted.join(" "),
        expires_in: lifetime,
        ext_expires_in: lifetime,
        access_token: jwt::mint(&claims),
        refresh_token,
        id_token,
        refresh_in,
    };
    Reply::Json(
        StatusCode::OK,
        serde_json::to_vec(&body).expect("serializes"),
    )
}

/// Entra's AADSTS28000 when scopes name more than one resource.
fn multi_resource(scope: &str) -> Option<String> {
    let mut resources: Vec<&str> = scope
        .split_whitespace()
        .filter(|s| !OIDC.contains(s))
        .map(jwt::audience_for_scope)
        .collect();
    resources.sort_unstable();
    resources.dedup();
    (resources.len() > 1).then(|| format!(
        "Provided value for the input parameter scope '{scope}' is not valid because it contains more than one resource. Scope {scope} is not valid."
    ))
}

fn missing(name: &str) -> Reply {
    Reply::Error(EntraError::new(
        StatusCode::BAD_REQUEST,
        "invalid_request",
        900144,
        format!("The request body must contain the following parameter: '{name}'."),
    ))
}

fn random_b64(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

/// Nine letters and digits, like Entra's user codes.
fn random_user_code() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut buf = [0u8; 9];
    rand::thread_rng().fill_bytes(&mut buf);
    buf.iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::TestPki;

    const CLIENT: &str = "04b07795-8ddb-461a-bbee-02f9e1bf7b46";
    const ARM: &str = "https://management.azure.com/.default";

    struct Fixture {
        _dir: tempfile::TempDir,
        entra: EntraDouble,
        http: reqwest::Client,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let pki = TestPki::generate(dir.path());
        let entra = EntraDouble::start(&pki);
        entra.register_public_client(CLIENT);
        let ca = reqwest::Certificate::from_pem(pki.ca_pem().as_bytes()).unwrap();
        let http = reqwest::Client::builder()
            .tls_certs_only([ca])
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Fixture {
            _dir: dir,
            entra,
            http,
        }
    }

    fn form(pairs: &[(&str, &str)]) -> String {
        let mut out = form_urlencoded::Serializer::new(String::new());
        for (k, v) in pairs {
            out.append_pair(k, v);
        }
        out.finish()
    }

    async fn post(f: &Fixture, endpoint: &str, body: String) -> (u16, serde_json::Value, String) {
        let reply = f
            .http
            .post(format!(
                "{}/organizations/oauth2/v2.0/{endpoint}",
                f.entra.authority()
            ))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = reply.status().as_u16();
        let text = reply.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap(), text)
    }

    fn assert_error(body: &serde_json::Value, error: &str, code: u32) {
        assert_eq!(body["error"], error, "{body}");
        assert_eq!(body["error_codes"], serde_json::json!([code]));
        let description = body["error_description"].as_str().unwrap();
        assert!(
            description.starts_with(&format!("AADSTS{code}: ")),
            "{description}"
        );
        assert!(description.contains(" Trace ID: "), "{description}");
    }

    /// Authorizes with `verifier`'s challenge; returns the code the redirect carried.
    async fn authorize(f: &Fixture, verifier: &str, scope: &str) -> String {
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        let query = form(&[
            ("client_id", CLIENT),
            ("response_type", "code"),
            ("redirect_uri", "http://localhost:5555"),
            ("scope", scope),
            ("state", "st-1"),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ]);
        let reply = f
            .http
            .get(format!(
                "{}/organizations/oauth2/v2.0/authorize?{query}",
                f.entra.authority()
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status().as_u16(), 302);
        let location = reply.headers()["location"].to_str().unwrap().to_owned();
        let (base, query) = location.split_once('?').unwrap();
        assert_eq!(base, "http://localhost:5555");
        let params: HashMap<String, String> = form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        assert_eq!(params["state"], "st-1");
        assert!(params.contains_key("session_state"));
        params["code"].clone()
    }

    fn redeem(code: &str, verifier: &str, scope: &str) -> String {
        form(&[
            ("client_id", CLIENT),
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", "http://localhost:5555"),
            ("code_verifier", verifier),
            ("scope", scope),
        ])
    }

    #[tokio::test]
    async fn codes_need_the_pkce_verifier_and_are_single_use() {
        let f = fixture();
        let scope = format!("{ARM} openid profile offline_access");
        let code = authorize(&f, "verifier-1-long-enough-for-pkce-0123456789abc", &scope).await;

        let (status, body, _) = post(&f, "token", redeem(&code, "wrong-verifier", &scope)).await;
        assert_eq!(status, 400);
        assert_error(&body, "invalid_grant", 501481);

        let (status, body, raw) = post(
            &f,
            "token",
            redeem(
                &code,
                "verifier-1-long-enough-for-pkce-0123456789abc",
                &scope,
            ),
        )
        .await;
        assert_eq!(status, 200, "{raw}");
        assert!(raw.starts_with(r#"{"token_type":"Bearer","scope":"https://management.azure.com/user_impersonation openid profile","expires_in":3599,"ext_expires_in":3599,"access_token":"eyJ"#), "{raw}");
        let access = jwt::decode_claims(body["access_token"].as_str().unwrap()).unwrap();
        assert_eq!(access["aud"], "https://management.azure.com");
        assert_eq!(access["upn"], USER_UPN);
        assert_eq!(access["tid"], DEFAULT_TENANT);
        assert_eq!(access["appidacr"], "0");
        let id = jwt::decode_claims(body["id_token"].as_str().unwrap()).unwrap();
        assert_eq!(id["aud"], CLIENT);
        assert_eq!(id["preferred_username"], USER_UPN);
        assert_eq!(id["ver"], "2.0");
        assert!(body["refresh_token"].as_str().unwrap().starts_with("1.A"));

        let (status, body, _) = post(
            &f,
            "token",
            redeem(
                &code,
                "verifier-1-long-enough-for-pkce-0123456789abc",
                &scope,
            ),
        )
        .await;
        assert_eq!(status, 400);
        assert_error(&body, "invalid_grant", 54005);
    }

    #[tokio::test]
    async fn refresh_tokens_rotate_and_a_reused_one_is_invalid_grant() {
        let f = fixture();
        let scope = format!("{ARM} openid profile offline_access");
        let code = authorize(&f, "v-0123456789012345678901234567890123456789", &scope).await;
        let (_, first, _) = post(
            &f,
            "token",
            redeem(&code, "v-0123456789012345678901234567890123456789", &scope),
        )
        .await;
        let rt1 = first["refresh_token"].as_str().unwrap().to_owned();
        let refresh = |rt: &str, scope: &str| {
            form(&[
                ("client_id", CLIENT),
                ("grant_type", "refresh_token"),
                ("refresh_token", rt),
                ("scope", scope),
            ])
        };
        let (status, second, _) = post(
            &f,
            "token",
            refresh(&rt1, "https://vault.azure.net/.default offline_access"),
        )
        .await;
        assert_eq!(status, 200);
        let rt2 = second["refresh_token"].as_str().unwrap().to_owned();
        assert_ne!(rt1, rt2);
        assert!(second.get("id_token").is_none(), "no openid, no id token");

        let (status, body, _) = post(
            &f,
            "token",
            refresh(&rt1, "https://vault.azure.net/.default offline_access"),
        )
        .await;
        assert_eq!(status, 400);
        assert_error(&body, "invalid_grant", 70008);
        assert_eq!(f.entra.refresh_token_reuses(), 1);
        assert_eq!(f.entra.live_refresh_tokens(), 1);

        let (status, body, _) = post(
            &f,
            "token",
            refresh(
                &rt2,
                "https://vault.azure.net/.default https://management.azure.com/.default",
            ),
        )
        .await;
        assert_eq!(status, 400);
        assert_error(&body, "invalid_scope", 28000);

        let (status, third, _) = post(&f, "token", refresh(&rt2, ARM)).await;
        assert_eq!(status, 200);
        assert!(
            third.get("refresh_token").is_none(),
            "no offline_access, no refresh token"
        );
    }

    #[tokio::test]
    async fn device_codes_pend_slow_down_succeed_and_expire() {
        let f = fixture();
        f.entra.set_device_code_interval(1);
        f.entra.set_device_code_polls(1, 1);
        let scope = format!("{ARM} offline_access");
        let (status, device, raw) = post(
            &f,
            "devicecode",
            form(&[("client_id", CLIENT), ("scope", &scope)]),
        )
        .await;
        assert_eq!(status, 200);
        assert!(raw.starts_with(r#"{"user_code":""#), "{raw}");
        assert_eq!(
            device["verification_uri"],
            "https://microsoft.com/devicelogin"
        );
        assert_eq!(device["expires_in"], 900);
        assert_eq!(device["interval"], 1);
        let user_code = device["user_code"].as_str().unwrap();
        assert!(device["message"]
            .as_str()
            .unwrap()
            .contains(&format!("enter the code {user_code} to authenticate")));
        let poll = form(&[
            ("client_id", CLIENT),
            ("grant_type", DEVICE_GRANT),
            ("device_code", device["device_code"].as_str().unwrap()),
        ]);
        let (status, body, _) = post(&f, "token", poll.clone()).await;
        assert_eq!(status, 400);
        assert_error(&body, "slow_down", 70016);
        let (_, body, _) = post(&f, "token", poll.clone()).await;
        assert_error(&body, "authorization_pending", 70016);
        let (status, body, _) = post(&f, "token", poll.clone()).await;
        assert_eq!(status, 200);
        assert!(body["refresh_token"].is_string());
        assert_eq!(f.entra.device_code_polls().len(), 3);

        f.entra.expire_device_codes();
        let (_, device, _) = post(
            &f,
            "devicecode",
            form(&[("client_id", CLIENT), ("scope", &scope)]),
        )
        .await;
        let poll = form(&[
            ("client_id", CLIENT),
            ("grant_type", DEVICE_GRANT),
            ("device_code", device["device_code"].as_str().unwrap()),
        ]);
        let (status, body, _) = post(&f, "token", poll).await;
        assert_eq!(status, 400);
        assert_error(&body, "expired_token", 70020);
    }

    #[tokio::test]
    async fn cancelled_and_bad_authorize_requests() {
        let f = fixture();
        f.entra.deny_next_authorize(1);
        let query = form(&[
            ("client_id", CLIENT),
            ("response_type", "code"),
            ("redirect_uri", "http://localhost:5555"),
            ("scope", ARM),
            ("state", "s"),
            ("code_challenge", "abc"),
            ("code_challenge_method", "S256"),
        ]);
        let url = format!(
            "{}/organizations/oauth2/v2.0/authorize?{query}",
            f.entra.authority()
        );
        let reply = f.http.get(&url).send().await.unwrap();
        let location = reply.headers()["location"].to_str().unwrap();
        assert!(
            location.starts_with(
                "http://localhost:5555?error=access_denied&error_description=AADSTS65004"
            ),
            "{location}"
        );
        assert!(location.ends_with("&state=s"), "{location}");

        let unknown = url.replace(CLIENT, "11111111-1111-1111-1111-111111111111");
        let reply = f.http.get(&unknown).send().await.unwrap();
        assert_eq!(reply.status().as_u16(), 400);
        assert!(reply.text().await.unwrap().contains("AADSTS700016"));
        let elsewhere = url.replace("localhost%3A5555", "evil.example");
        let reply = f.http.get(&elsewhere).send().await.unwrap();
        assert_eq!(reply.status().as_u16(), 400);
        assert!(reply.text().await.unwrap().contains("AADSTS50011"));
        assert_eq!(f.entra.authorize_requests(), 3);
    }
}
