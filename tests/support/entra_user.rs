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
