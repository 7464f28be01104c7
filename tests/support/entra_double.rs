//! A local double of the Microsoft identity platform (Entra ID) v2 token endpoint.
//!
//! It serves exactly what `azure_identity` 1.0's `ClientSecretCredential`
//! sends: one `POST {authority}/{tenant}/oauth2/v2.0/token` with a
//! form-encoded body of `client_id`, `client_secret`,
//! `grant_type=client_credentials` and `scope` (no discovery or metadata GET
//! comes first). Replies, errors included, reproduce the real service's JSON
//! and headers byte for byte where the shape is known (see
//! `docs/spec/wire-formats.md`).
//!
//! The server runs on its own thread and Tokio runtime ([`HttpsServer`]), so
//! it keeps answering while a test blocks (e.g. on `std::process::Command::output`)
//! or runs on a current-thread runtime. All knobs are plain `&self` methods, usable from
//! sync and async tests alike; they take effect from the next request.

use crate::client_assertion::{AssertionRegistry, Presented, JWT_BEARER};
use crate::entra_user;
use crate::entra_user::UserState;
use crate::https_server::HttpsServer;
use crate::jwt::{self, AppClaims};
use crate::tls::TestPki;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use time::macros::format_description;
use time::OffsetDateTime;
use tokio_rustls::rustls::ServerConfig;

pub use crate::https_server::MAX_BODY_BYTES;

/// `expires_in` of issued tokens unless [`EntraDouble::set_token_lifetime`] says otherwise.
pub const DEFAULT_TOKEN_LIFETIME_SECS: u64 = 3599;

/// One request to the token endpoint, as the double understood it.
///
/// Fields the request did not carry are empty strings. The client secret is
/// deliberately not recorded: tests never need it, and it must not leak into
/// test output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// The `{tenant}` path segment.
    pub tenant: String,
    pub client_id: String,
    pub scope: String,
    pub grant_type: String,
    /// HTTP status of the reply.
    pub status: u16,
}

/// The running double. Dropping it stops the server and closes its connections.
pub struct EntraDouble {
    server: HttpsServer,
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for EntraDouble {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntraDouble")
            .field("addr", &self.addr())
            .finish_non_exhaustive()
    }
}

impl EntraDouble {
    /// Starts the double on `127.0.0.1:<ephemeral port>` with the PKI's valid certificate.
    pub fn start(pki: &TestPki) -> EntraDouble {
        Self::start_with_tls(pki.server_config())
    }

    /// Starts the double with any TLS configuration, e.g.
    /// [`TestPki::untrusted_server_config`] to test certificate errors.
    ///
    /// # Panics
    /// If the loopback listener or the server thread cannot be created.
    pub fn start_with_tls(tls: Arc<ServerConfig>) -> EntraDouble {
        let shared = Arc::new(Shared::default());
        let server_shared = Arc::clone(&shared);
        let server = HttpsServer::start_async("entra-double", tls, move |request| {
            let shared = Arc::clone(&server_shared);
            async move { handle(&shared, request).await }
        });
        EntraDouble { server, shared }
    }

    /// The authority host to configure clients with, e.g. `https://127.0.0.1:41234`
    /// (no trailing slash).
    pub fn authority(&self) -> String {
        format!("https://{}", self.addr())
    }

    /// The socket address the double listens on.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// The token endpoint URL for `tenant`.
    pub fn token_url(&self, tenant: &str) -> String {
        format!("{}/{tenant}/oauth2/v2.0/token", self.authority())
    }

    /// Registers an app. Token requests for unregistered client IDs fail with
    /// `unauthorized_client` (AADSTS700016), as for an app that does not exist
    /// in the tenant; a wrong secret fails with `invalid_client` (AADSTS7000215).
    /// Registering an ID again replaces its secret.
    pub fn register_client(&self, client_id: &str, secret: &str) {
        let mut config = self.shared.config();
        let oid = config
            .clients
            .get(client_id)
            .map_or_else(jwt::new_uuid, |app| app.oid.clone());
        config.clients.insert(
            client_id.to_owned(),
            App {
                secret: secret.to_owned(),
                oid,
            },
        );
    }

    /// Number of `POST`s to a token endpoint so far, whatever their outcome.
    pub fn token_requests(&self) -> usize {
        self.shared.requests().len()
    }

    /// The token endpoint `POST`s so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.requests().clone()
    }

    /// TCP connections accepted so far, including ones whose TLS handshake
    /// failed: counts a client's (re)connection attempts.
    pub fn connections(&self) -> usize {
        self.server.connections()
    }

    /// TLS handshakes that failed or timed out (e.g. the client rejected the certificate).
    pub fn failed_handshakes(&self) -> usize {
        self.server.failed_handshakes()
    }

    /// Sets `expires_in`/`ext_expires_in` (and the token's `exp`) of issued tokens.
    pub fn set_token_lifetime(&self, secs: u64) {
        self.shared.config().token_lifetime = secs;
    }

    /// Adds `refresh_in` to successful replies (Entra sends it for long-lived
    /// tokens to ask clients to refresh early), or removes it with `None`.
    pub fn set_refresh_in(&self, secs: Option<u64>) {
        self.shared.config().refresh_in = secs;
    }

    /// The next `n` token requests get `429 Too Many Requests` with
    /// `Retry-After: <retry_after_secs>` and an Entra-style JSON error body.
    /// Throttling takes precedence over [`fail_next`](Self::fail_next); a new
    /// call replaces what is left of the previous one.
    pub fn throttle_next(&self, n: usize, retry_after_secs: u64) {
        self.shared.config().throttle = Some(Countdown {
            remaining: n,
            value: retry_after_secs,
        });
    }

    /// The next `n` token requests fail with the Entra error for
    /// `AADSTS<aadsts_code>` (e.g. 50076 MFA required, 53003 blocked by
    /// conditional access, 700082 expired refresh token). Codes without a
    /// known description get a generic `invalid_request` one. A new call
    /// replaces what is left of the previous one.
    pub fn fail_next(&self, n: usize, aadsts_code: u32) {
        self.shared.config().failure = Some(Countdown {
            remaining: n,
            value: aadsts_code,
        });
    }

    /// Delays every token endpoint reply by `delay` (after the request is read
    /// and counted, so tests can observe an in-flight request).
    pub fn set_delay(&self, delay: Duration) {
        self.shared.config().delay = delay;
    }

    /// Registers an app that authenticates with a certificate (DER): its
    /// client assertions must be signed by that certificate's key.
    pub fn register_certificate_client(&self, client_id: &str, cert_der: &[u8]) {
        self.ensure_app(client_id);
        self.shared
            .config()
            .assertions
            .add_certificate(client_id, cert_der);
    }

    /// Registers an app with a federated identity credential (workload
    /// identity): it accepts tokens from `issuer` about `subject`.
    pub fn register_federated_client(&self, client_id: &str, issuer: &str, subject: &str) {
        self.ensure_app(client_id);
        self.shared
            .config()
            .assertions
            .add_federated(client_id, issuer, subject);
    }

    /// The client assertions presented so far, oldest first.
    pub fn assertions(&self) -> Vec<Presented> {
        self.shared.config().assertions.presented()
    }

    /// An app without a usable secret, for assertion-only clients.
    fn ensure_app(&self, client_id: &str) {
        let mut config = self.shared.config();
        config
            .clients
            .entry(client_id.to_owned())
            .or_insert_with(|| App {
                secret: jwt::new_uuid(),
                oid: jwt::new_uuid(),
            });
    }
}

struct App {
    secret: String,
    /// Object ID of the app's service principal: stable per app, as in a real tenant.
    oid: String,
}

/// "Do this to the next `remaining` requests", with a parameter.
#[derive(Clone, Copy)]
struct Countdown<T> {
    remaining: usize,
    value: T,
}

impl<T: Copy> Countdown<T> {
    /// Uses up one request if any are left.
    fn take(slot: &mut Option<Self>) -> Option<T> {
        let countdown = slot.as_mut()?;
        if countdown.remaining == 0 {
            *slot = None;
            return None;
        }
        countdown.remaining -= 1;
        Some(countdown.value)
    }
}

pub(crate) struct Config {
    /// The user flows (authorize, codes, refresh tokens, device codes): `entra_user`.
    pub(crate) user: UserState,
    clients: HashMap<String, App>,
    token_lifetime: u64,
    refresh_in: Option<u64>,
    throttle: Option<Countdown<u64>>,
    failure: Option<Countdown<u32>>,
    delay: Duration,
    /// Certificates and federated credentials of apps (client assertions).
    assertions: AssertionRegistry,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            user: UserState::default(),
            clients: HashMap::new(),
            token_lifetime: DEFAULT_TOKEN_LIFETIME_SECS,
            refresh_in: None,
            throttle: None,
            failure: None,
            delay: Duration::ZERO,
            assertions: AssertionRegistry::default(),
        }
    }
}

#[derive(Default)]
pub(crate) struct Shared {
    config: Mutex<Config>,
    requests: Mutex<Vec<RecordedRequest>>,
}

impl Shared {
    // A panicking test thread must not poison the double for the rest of the test.
    pub(crate) fn config(&self) -> MutexGuard<'_, Config> {
        self.config.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn requests(&self) -> MutexGuard<'_, Vec<RecordedRequest>> {
        self.requests.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

async fn handle(shared: &Shared, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_owned();
    if let Some(tenant) = endpoint_tenant(&path, "authorize") {
        if request.method() != Method::GET {
            return plain(StatusCode::METHOD_NOT_ALLOWED);
        }
        let query = request.uri().query().unwrap_or_default();
        let (status, headers, body) =
            entra_user::authorize(&mut shared.config().user, tenant, query);
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        for (name, value) in headers {
            if let Ok(value) = HeaderValue::from_str(&value) {
                response.headers_mut().insert(name, value);
            }
        }
        return response;
    }
    let device = endpoint_tenant(&path, "devicecode").map(str::to_owned);
    let Some(tenant) = device
        .clone()
        .or_else(|| token_endpoint_tenant(&path).map(str::to_owned))
    else {
        return plain(StatusCode::NOT_FOUND);
    };
    if request.method() != Method::POST {
        let text = format!(
            "The endpoint only accepts POST requests. Received a {} request.",
            request.method()
        );
        return entra_error(
            &EntraError::new(StatusCode::BAD_REQUEST, "invalid_request", 900561, text),
            None,
        );
    }
    let is_form = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        });
    let body = match Limited::new(request.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(body) => body.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            record(
                shared,
                &tenant,
                &Form::default(),
                StatusCode::PAYLOAD_TOO_LARGE,
            );
            return plain(StatusCode::PAYLOAD_TOO_LARGE);
        }
        // The client went away mid-body; nobody will read this reply.
        Err(_) => return plain(StatusCode::BAD_REQUEST),
    };
    // Entra ignores bodies that are not form-encoded, then misses `grant_type`.
    let form = if is_form {
        Form::parse(&body)
    } else {
        Form::default()
    };

    let (reply, delay) = {
        let mut config = shared.config();
        let reply = if device.is_some() {
            entra_user::device_authorization(&mut config.user, &tenant, &form)
        } else {
            decide(&mut config, &tenant, &form)
        };
        (reply, config.delay)
    };
    let response = match reply {
        Reply::Token(body) => json_response(StatusCode::OK, &body, None),
        Reply::Json(status, body) => bytes_response(status, body, None),
        Reply::Throttled { retry_after } => {
            let error = EntraError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "temporarily_unavailable",
                90055,
                "TenantThrottlingError - There are too many incoming requests. \
                 Please try again later."
                    .to_owned(),
            );
            entra_error(&error, Some(retry_after))
        }
        Reply::Error(error) => entra_error(&error, None),
    };
    if device.is_none() {
        // Only token endpoint requests are recorded; device-code starts are not.
        record(shared, &tenant, &form, response.status());
    }
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    response
}

/// `/{tenant}/oauth2/v2.0/token` -> `tenant`.
fn token_endpoint_tenant(path: &str) -> Option<&str> {
    endpoint_tenant(path, "token")
}

/// `/{tenant}/oauth2/v2.0/{name}` -> `tenant`.
fn endpoint_tenant<'a>(path: &'a str, name: &str) -> Option<&'a str> {
    let tenant = path
        .strip_prefix('/')?
        .strip_suffix(name)?
        .strip_suffix("/oauth2/v2.0/")?;
    (!tenant.is_empty() && !tenant.contains('/')).then_some(tenant)
}

fn record(shared: &Shared, tenant: &str, form: &Form, status: StatusCode) {
    shared.requests().push(RecordedRequest {
        tenant: tenant.to_owned(),
        client_id: form.get("client_id").to_owned(),
        scope: form.get("scope").to_owned(),
        grant_type: form.get("grant_type").to_owned(),
        status: status.as_u16(),
    });
}

/// The form fields, first occurrence of each name winning.
#[derive(Default)]
pub(crate) struct Form(HashMap<String, String>);

impl Form {
    pub(crate) fn parse(body: &[u8]) -> Form {
        let mut fields = HashMap::new();
        for (name, value) in form_urlencoded::parse(body) {
            fields
                .entry(name.into_owned())
                .or_insert_with(|| value.into_owned());
        }
        Form(fields)
    }

    pub(crate) fn get(&self, name: &str) -> &str {
        self.0.get(name).map_or("", String::as_str)
    }
}

pub(crate) enum Reply {
    Token(TokenBody),
    /// A ready JSON body (user flows).
    Json(StatusCode, Vec<u8>),
    Throttled {
        retry_after: u64,
    },
    Error(EntraError),
}

/// The successful reply, fields in the order Entra sends them.
#[derive(Serialize)]
pub(crate) struct TokenBody {
    token_type: &'static str,
    expires_in: u64,
    ext_expires_in: u64,
    access_token: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_in: Option<u64>,
}

/// Validates a token request the way Entra does for client credentials.
fn decide(config: &mut Config, tenant: &str, form: &Form) -> Reply {
    if let Some(retry_after) = Countdown::take(&mut config.throttle) {
        return Reply::Throttled { retry_after };
    }
    let client_id = form.get("client_id");
    let scope = form.get("scope");
    if let Some(code) = Countdown::take(&mut config.failure) {
        return Reply::Error(EntraError::for_code(code, tenant, client_id, scope));
    }
    let missing = |name: &str| {
        let text = format!("The request body must contain the following parameter: '{name}'.");
        Reply::Error(EntraError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            text,
        ))
    };
    let grant_type = form.get("grant_type");
    if grant_type.is_empty() {
        return missing("grant_type");
    }
    let (lifetime, refresh_in) = (config.token_lifetime, config.refresh_in);
    if let Some(reply) = entra_user::token(&mut config.user, lifetime, refresh_in, tenant, form) {
        return reply;
    }
    if grant_type != "client_credentials" {
        let text = format!("The app requested an unsupported grant type '{grant_type}'.");
        return Reply::Error(EntraError::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            text,
        ));
    }
    if client_id.is_empty() {
        return missing("client_id");
    }
    let Some(app) = config.clients.get(client_id) else {
        return Reply::Error(EntraError::for_code(700016, tenant, client_id, scope));
    };
    if !form.get("client_assertion").is_empty() {
        if let Err(error) = check_client_assertion(&mut config.assertions, client_id, form) {
            return Reply::Error(error);
        }
    } else {
        let secret = form.get("client_secret");
        if secret.is_empty() {
            return Reply::Error(EntraError::for_code(7000218, tenant, client_id, scope));
        }
        if secret != app.secret {
            return Reply::Error(EntraError::for_code(7000215, tenant, client_id, scope));
        }
    }
    if scope.is_empty() {
        return missing("scope");
    }
    // Client credentials accept exactly one resource's `/.default` scope.
    if !scope.ends_with("/.default") || scope.contains(' ') {
        return Reply::Error(EntraError::for_code(1002012, tenant, client_id, scope));
    }

    let lifetime = config.token_lifetime;
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let claims = AppClaims::new(
        scope,
        tenant,
        client_id,
        &app.oid,
        now,
        i64::try_from(lifetime).unwrap_or(i64::MAX),
    );
    Reply::Token(TokenBody {
        token_type: "Bearer",
        expires_in: lifetime,
        ext_expires_in: lifetime,
        access_token: jwt::mint(&claims),
        refresh_in: config.refresh_in,
    })
}

/// Authenticates a client by `client_assertion` (certificate or federated token).
fn check_client_assertion(
    assertions: &mut AssertionRegistry,
    client_id: &str,
    form: &Form,
) -> Result<(), EntraError> {
    let assertion_type = form.get("client_assertion_type");
    if assertion_type != JWT_BEARER {
        return Err(EntraError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            50027,
            format!("Invalid client_assertion_type '{assertion_type}'."),
        ));
    }
    let now = OffsetDateTime::now_utc().unix_timestamp();
    assertions
        .verify(client_id, form.get("client_assertion"), now)
        .map_err(|rejection| {
            let (status, error) = match rejection.code {
                70021 | 50027 => (StatusCode::BAD_REQUEST, "invalid_request"),
                _ => (StatusCode::UNAUTHORIZED, "invalid_client"),
            };
            EntraError::new(status, error, rejection.code, rejection.text)
        })
}

/// An Entra error reply: HTTP status, OAuth `error`, and the AADSTS code and text.
#[derive(Debug)]
pub(crate) struct EntraError {
    status: StatusCode,
    error: &'static str,
    code: u32,
    text: String,
}

impl EntraError {
    pub(crate) fn new(status: StatusCode, error: &'static str, code: u32, text: String) -> Self {
        EntraError {
            status,
            error,
            code,
            text,
        }
    }

    /// The real reply for well-known codes; a generic `invalid_request` otherwise.
    pub(crate) fn for_code(code: u32, tenant: &str, client_id: &str, scope: &str) -> Self {
        let resource = jwt::audience_for_scope(scope);
        let issued = timestamp(OffsetDateTime::now_utc() - time::Duration::days(1));
        let (status, error, text) = match code {
            7000215 => (
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                format!(
                    "Invalid client secret provided. Ensure the secret being sent in the request \
                     is the client secret value, not the client secret ID, for a secret added to \
                     app '{client_id}'."
                ),
            ),
            7000218 => (
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "The request body must contain the following parameter: 'client_assertion' or \
                 'client_secret'."
                    .to_owned(),
            ),
            7000222 => (
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                format!("The provided client secret keys for app '{client_id}' are expired."),
            ),
            700016 => (
                StatusCode::BAD_REQUEST,
                "unauthorized_client",
                format!(
                    "Application with identifier '{client_id}' was not found in the directory \
                     '{tenant}'. This can happen if the application has not been installed by \
                     the administrator of the tenant or consented to by any user in the tenant. \
                     You may have sent your authentication request to the wrong tenant."
                ),
            ),
            50076 => (
                StatusCode::BAD_REQUEST,
                "interaction_required",
                format!(
                    "Due to a configuration change made by your administrator, or because you \
                     moved to a new location, you must use multi-factor authentication to access \
                     '{resource}'."
                ),
            ),
            53003 => (
                StatusCode::BAD_REQUEST,
                "interaction_required",
                "Access has been blocked by Conditional Access policies. The access policy does \
                 not allow token issuance."
                    .to_owned(),
            ),
            70008 => (
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                "The provided authorization code or refresh token has expired due to \
                 inactivity. Send a new interactive authorization request for this user and \
                 resource."
                    .to_owned(),
            ),
            700082 => (
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                format!(
                    "The refresh token has expired due to inactivity. The token was issued on \
                     {issued} and was inactive for 90.00:00:00."
                ),
            ),
            50173 => (
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                format!(
                    "The provided grant has expired due to it being revoked, a fresh auth token \
                     is needed. The user might have changed or reset their password. The grant \
                     was issued on '{issued}' and the TokensValidFrom date (before which tokens \
                     are not valid) for this user is '{}'.",
                    timestamp(OffsetDateTime::now_utc())
                ),
            ),
            90002 => (
                StatusCode::BAD_REQUEST,
                "invalid_request",
                format!(
                    "Tenant '{tenant}' not found. Check to make sure you have the correct tenant \
                     ID and are signing into the correct cloud. Check with your subscription \
                     administrator, this may happen if there are no active subscriptions for the \
                     tenant."
                ),
            ),
            500011 => (
                StatusCode::BAD_REQUEST,
                "invalid_resource",
                format!(
                    "The resource principal named {resource} was not found in the tenant named \
                     {tenant}. This can happen if the application has not been installed by the \
                     administrator of the tenant or consented to by any user in the tenant. You \
                     might have sent your authentication request to the wrong tenant."
                ),
            ),
            1002012 => (
                StatusCode::BAD_REQUEST,
                "invalid_scope",
                format!(
                    "The provided value for scope {scope} is not valid. Client credential flows \
                     must have a scope value with /.default suffixed to the resource identifier \
                     (application ID URI)."
                ),
            ),
            _ => (
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "Simulated failure (the Entra double has no description for this code).".to_owned(),
            ),
        };
        EntraError::new(status, error, code, text)
    }
}

/// The error body, fields in the order Entra sends them.
#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    error_description: String,
    error_codes: [u32; 1],
    timestamp: &'a str,
    trace_id: &'a str,
    correlation_id: &'a str,
    error_uri: String,
}

fn entra_error(error: &EntraError, retry_after: Option<u64>) -> Response<Full<Bytes>> {
    let trace_id = jwt::new_uuid();
    let correlation_id = jwt::new_uuid();
    let timestamp = timestamp(OffsetDateTime::now_utc());
    let body = ErrorBody {
        error: error.error,
        error_description: format!(
            "AADSTS{}: {} Trace ID: {trace_id} Correlation ID: {correlation_id} \
             Timestamp: {timestamp}",
            error.code, error.text
        ),
        error_codes: [error.code],
        timestamp: &timestamp,
        trace_id: &trace_id,
        correlation_id: &correlation_id,
        error_uri: format!(
            "https://login.microsoftonline.com/error?code={}",
            error.code
        ),
    };
    let mut response = json_response(error.status, &body, Some(&trace_id));
    if let Some(secs) = retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

/// Entra's timestamp format, e.g. `2025-04-04 21:10:04Z`.
fn timestamp(at: OffsetDateTime) -> String {
    at.format(format_description!(
        "[year]-[month]-[day] [hour]:[minute]:[second]Z"
    ))
    .expect("formatting a UTC timestamp")
}

/// A JSON reply with the headers the real token endpoint sends.
fn json_response(
    status: StatusCode,
    body: &impl Serialize,
    request_id: Option<&str>,
) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(body).expect("reply bodies serialize");
    bytes_response(status, body, request_id)
}

/// A reply with a JSON `body` and the headers the real token endpoint sends.
fn bytes_response(
    status: StatusCode,
    body: Vec<u8>,
    request_id: Option<&str>,
) -> Response<Full<Bytes>> {
    let request_id = request_id.map_or_else(jwt::new_uuid, str::to_owned);
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    for (name, value) in [
        ("cache-control", "no-store, no-cache"),
        ("pragma", "no-cache"),
        ("content-type", "application/json; charset=utf-8"),
        ("expires", "-1"),
        (
            "strict-transport-security",
            "max-age=31536000; includeSubDomains",
        ),
        ("x-content-type-options", "nosniff"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        headers.insert("x-ms-request-id", value);
    }
    response
}

fn plain(status: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use azure_core::credentials::{Secret, TokenCredential};
    use azure_core::http::{ClientOptions, RetryOptions, Transport};
    use azure_identity::{ClientSecretCredential, ClientSecretCredentialOptions};
    use tokio::net::TcpStream;

    const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
    const CLIENT: &str = "0c6ddb5e-5b87-4bd5-9c2a-3a7fd2b1c4a3";
    const SECRET: &str = "s3cr3t~value";
    const ARM: &str = "https://management.azure.com/.default";

    struct Fixture {
        _dir: tempfile::TempDir,
        pki: TestPki,
        entra: EntraDouble,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let pki = TestPki::generate(dir.path());
        let entra = EntraDouble::start(&pki);
        entra.register_client(CLIENT, SECRET);
        Fixture {
            _dir: dir,
            pki,
            entra,
        }
    }

    /// A reqwest client that trusts only the test CA (no platform roots, so the
    /// result does not depend on the machine).
    fn http_client(pki: &TestPki) -> reqwest::Client {
        let ca = reqwest::Certificate::from_pem(pki.ca_pem().as_bytes()).unwrap();
        reqwest::Client::builder()
            .tls_certs_only([ca])
            .build()
            .unwrap()
    }

    fn credential(
        pki: &TestPki,
        authority: &str,
        secret: &str,
        retry: RetryOptions,
    ) -> Arc<ClientSecretCredential> {
        let mut cloud = azure_core::cloud::CustomConfiguration::default();
        cloud.authority_host = authority.to_owned();
        let options = ClientSecretCredentialOptions {
            client_options: ClientOptions {
                transport: Some(Transport::new(Arc::new(http_client(pki)))),
                cloud: Some(Arc::new(cloud.into())),
                retry,
                ..Default::default()
            },
        };
        ClientSecretCredential::new(
            TENANT,
            CLIENT.to_owned(),
            Secret::new(secret.to_owned()),
            Some(options),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn serves_azure_identity_client_secret_credential() {
        let f = fixture();
        let credential = credential(&f.pki, &f.entra.authority(), SECRET, RetryOptions::none());

        let started = OffsetDateTime::now_utc();
        let token = credential.get_token(&[ARM], None).await.unwrap();

        let lifetime = (token.expires_on - started).whole_seconds();
        assert!((3598..=3600).contains(&lifetime), "lifetime {lifetime}");
        let claims = jwt::decode_claims(token.token.secret()).unwrap();
        assert_eq!(claims["aud"], "https://management.azure.com");
        assert_eq!(claims["tid"], TENANT);
        assert_eq!(claims["appid"], CLIENT);
        assert_eq!(claims["iss"], format!("https://sts.windows.net/{TENANT}/"));
        assert_eq!(claims["idtyp"], "app");
        assert_eq!(
            f.entra.requests(),
            [RecordedRequest {
                tenant: TENANT.to_owned(),
                client_id: CLIENT.to_owned(),
                scope: ARM.to_owned(),
                grant_type: "client_credentials".to_owned(),
                status: 200,
            }]
        );
        assert_eq!(f.entra.token_requests(), 1);
    }

    #[tokio::test]
    async fn wrong_secret_is_aadsts7000215() {
        let f = fixture();
        let credential = credential(&f.pki, &f.entra.authority(), "wrong", RetryOptions::none());

        let error = credential.get_token(&[ARM], None).await.unwrap_err();

        let text = error.to_string();
        assert!(text.contains("AADSTS7000215"), "{text}");
        let expected = "ClientSecretCredential authentication failed. \
                        AADSTS7000215: Invalid client secret provided.";
        assert!(text.starts_with(expected), "{text}");
        assert_eq!(f.entra.requests()[0].status, 401);
    }

    #[tokio::test]
    async fn throttling_is_retried_by_azure_identity_after_retry_after() {
        let f = fixture();
        f.entra.throttle_next(1, 1);
        // Default retry options: what the daemon gets unless it overrides them.
        let credential = credential(
            &f.pki,
            &f.entra.authority(),
            SECRET,
            RetryOptions::default(),
        );

        let started = std::time::Instant::now();
        credential.get_token(&[ARM], None).await.unwrap();

        assert!(started.elapsed() >= Duration::from_secs(1));
        let statuses: Vec<u16> = f.entra.requests().iter().map(|r| r.status).collect();
        assert_eq!(statuses, [429, 200]);
    }

    #[tokio::test]
    async fn untrusted_certificate_fails_as_a_retried_connection_error() {
        let f = fixture();
        let untrusted = EntraDouble::start_with_tls(TestPki::untrusted_server_config());
        let retry = RetryOptions::fixed(azure_core::http::FixedRetryOptions {
            delay: azure_core::time::Duration::milliseconds(10),
            max_retries: 2,
            ..Default::default()
        });
        let credential = credential(&f.pki, &untrusted.authority(), SECRET, retry);

        let error = credential.get_token(&[ARM], None).await.unwrap_err();

        // A TLS failure is a transport error, which the retry policy retries:
        // one attempt plus two retries. (The server may still be finishing the
        // last handshake when the client gives up, hence the wait.)
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while untrusted.failed_handshakes() < 3 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(untrusted.failed_handshakes(), 3, "{error}");
        assert_eq!(untrusted.token_requests(), 0);
        // The message does not say why; the cause is at the end of the source chain.
        let chain = error_chain(&error);
        assert_eq!(
            chain.first().unwrap(),
            "ClientSecretCredential authentication failed. retry policy expired and the request \
             will no longer be retried\nTo troubleshoot, visit \
             https://aka.ms/azsdk/rust/identity/troubleshoot#client-secret"
        );
        assert_eq!(
            chain.last().unwrap(),
            "invalid peer certificate: UnknownIssuer"
        );
    }

    fn error_chain(error: &(dyn std::error::Error + 'static)) -> Vec<String> {
        std::iter::successors(Some(error), |e| e.source())
            .map(ToString::to_string)
            .collect()
    }

    #[tokio::test]
    async fn broken_certificates_from_the_trusted_ca_are_rejected() {
        let f = fixture();
        for (tls, cause) in [
            (
                f.pki.expired_server_config(),
                "invalid peer certificate: certificate expired",
            ),
            (
                f.pki.wrong_host_server_config(),
                "invalid peer certificate: certificate not valid for name",
            ),
        ] {
            let entra = EntraDouble::start_with_tls(tls);
            entra.register_client(CLIENT, SECRET);
            let credential = credential(&f.pki, &entra.authority(), SECRET, RetryOptions::none());
            let error = credential.get_token(&[ARM], None).await.unwrap_err();
            let chain = error_chain(&error);
            assert!(chain.last().unwrap().starts_with(cause), "{chain:?}");
        }
    }

    /// Raw HTTPS exchange, to check bytes that `azure_identity` does not expose.
    async fn post(f: &Fixture, path: &str, body: &str) -> reqwest::Response {
        http_client(&f.pki)
            .post(format!("{}{path}", f.entra.authority()))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.to_owned())
            .send()
            .await
            .unwrap()
    }

    fn form(client_id: &str, secret: &str, scope: &str) -> String {
        form_urlencoded::Serializer::new(String::new())
            .append_pair("client_id", client_id)
            .append_pair("client_secret", secret)
            .append_pair("grant_type", "client_credentials")
            .append_pair("scope", scope)
            .finish()
    }

    fn token_path() -> String {
        format!("/{TENANT}/oauth2/v2.0/token")
    }

    #[tokio::test]
    async fn success_body_and_headers_match_entra() {
        let f = fixture();
        f.entra.set_token_lifetime(120);
        f.entra.set_refresh_in(Some(60));
        let response = post(&f, &token_path(), &form(CLIENT, SECRET, ARM)).await;

        assert_eq!(response.status(), 200);
        let headers = response.headers();
        assert_eq!(headers["content-type"], "application/json; charset=utf-8");
        assert_eq!(headers["cache-control"], "no-store, no-cache");
        let body = response.text().await.unwrap();
        let prefix =
            r#"{"token_type":"Bearer","expires_in":120,"ext_expires_in":120,"access_token":"eyJ"#;
        assert!(body.starts_with(prefix), "{body}");
        assert!(body.ends_with(r#"","refresh_in":60}"#), "{body}");

        f.entra.set_refresh_in(None);
        let first = post(&f, &token_path(), &form(CLIENT, SECRET, ARM)).await;
        let first: serde_json::Value = first.json().await.unwrap();
        let second = post(&f, &token_path(), &form(CLIENT, SECRET, ARM)).await;
        let second: serde_json::Value = second.json().await.unwrap();
        assert_eq!(
            first.as_object().unwrap().len(),
            4,
            "no refresh_in: {first}"
        );
        assert_ne!(first["access_token"], second["access_token"]);
        assert_ne!(
            jwt::decode_claims(first["access_token"].as_str().unwrap()).unwrap()["uti"],
            jwt::decode_claims(second["access_token"].as_str().unwrap()).unwrap()["uti"],
        );
    }

    fn assert_entra_error(body: &serde_json::Value, error: &str, code: u32) {
        let keys: Vec<&str> = body
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut expected = [
            "error",
            "error_description",
            "error_codes",
            "timestamp",
            "trace_id",
            "correlation_id",
            "error_uri",
        ];
        expected.sort_unstable(); // serde_json::Value sorts keys
        assert_eq!(keys, expected);
        assert_eq!(body["error"], error);
        assert_eq!(body["error_codes"], serde_json::json!([code]));
        let description = body["error_description"].as_str().unwrap();
        assert!(
            description.starts_with(&format!("AADSTS{code}: ")),
            "{description}"
        );
        let suffix = format!(
            " Trace ID: {} Correlation ID: {} Timestamp: {}",
            body["trace_id"].as_str().unwrap(),
            body["correlation_id"].as_str().unwrap(),
            body["timestamp"].as_str().unwrap()
        );
        assert!(description.ends_with(&suffix), "{description}");
        let ts = body["timestamp"].as_str().unwrap();
        assert_eq!((ts.len(), &ts[10..11], &ts[19..]), (20, " ", "Z"), "{ts}");
        assert_eq!(
            body["error_uri"],
            format!("https://login.microsoftonline.com/error?code={code}")
        );
    }

    #[tokio::test]
    async fn client_errors_match_entra() {
        let f = fixture();

        let wrong = post(&f, &token_path(), &form(CLIENT, "nope", ARM)).await;
        assert_eq!(wrong.status(), 401);
        let raw = wrong.text().await.unwrap();
        let expected = concat!(
            r#"{"error":"invalid_client","error_description":"AADSTS7000215: "#,
            "Invalid client secret provided. Ensure the secret being sent in the request is the ",
            "client secret value, not the client secret ID, for a secret added to app ",
            "'0c6ddb5e-5b87-4bd5-9c2a-3a7fd2b1c4a3'. Trace ID: "
        );
        assert!(raw.starts_with(expected), "{raw}");
        assert_entra_error(
            &serde_json::from_str(&raw).unwrap(),
            "invalid_client",
            7000215,
        );

        let unknown = post(&f, &token_path(), &form("someone-else", SECRET, ARM)).await;
        assert_eq!(unknown.status(), 400);
        assert_entra_error(
            &unknown.json().await.unwrap(),
            "unauthorized_client",
            700016,
        );

        let bad_scope = post(
            &f,
            &token_path(),
            &form(CLIENT, SECRET, "https://graph.microsoft.com/User.Read"),
        )
        .await;
        assert_eq!(bad_scope.status(), 400);
        assert_entra_error(&bad_scope.json().await.unwrap(), "invalid_scope", 1002012);

        let no_grant = post(&f, &token_path(), "client_id=x").await;
        assert_eq!(no_grant.status(), 400);
        assert_entra_error(&no_grant.json().await.unwrap(), "invalid_request", 900144);

        assert_eq!(f.entra.token_requests(), 4);
    }

    #[tokio::test]
    async fn fail_and_throttle_knobs_count_down() {
        let f = fixture();
        f.entra.fail_next(2, 50076);
        f.entra.throttle_next(1, 7);
        let body = form(CLIENT, SECRET, ARM);

        let throttled = post(&f, &token_path(), &body).await;
        assert_eq!(throttled.status(), 429);
        assert_eq!(throttled.headers()["retry-after"], "7");
        assert_entra_error(
            &throttled.json().await.unwrap(),
            "temporarily_unavailable",
            90055,
        );
        for _ in 0..2 {
            let mfa = post(&f, &token_path(), &body).await;
            assert_eq!(mfa.status(), 400);
            let mfa: serde_json::Value = mfa.json().await.unwrap();
            assert_entra_error(&mfa, "interaction_required", 50076);
            assert!(mfa["error_description"]
                .as_str()
                .unwrap()
                .contains("'https://management.azure.com'"));
        }
        assert_eq!(post(&f, &token_path(), &body).await.status(), 200);
    }

    #[tokio::test]
    async fn delay_holds_the_reply_but_counts_the_request() {
        let f = fixture();
        f.entra.set_delay(Duration::from_millis(500));
        let started = std::time::Instant::now();
        let request = http_client(&f.pki)
            .post(f.entra.token_url(TENANT))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form(CLIENT, SECRET, ARM))
            .send();
        let pending = tokio::spawn(request);
        while f.entra.token_requests() == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            !pending.is_finished(),
            "the request is counted while its reply is held"
        );
        assert_eq!(pending.await.unwrap().unwrap().status(), 200);
        assert!(started.elapsed() >= Duration::from_millis(500));
    }

    #[tokio::test]
    async fn tolerates_bad_input() {
        let f = fixture();
        assert_eq!(post(&f, "/", "").await.status(), 404);
        assert_eq!(post(&f, "/t/oauth2/v2.0/nothing", "").await.status(), 404);
        let device = post(&f, "/t/oauth2/v2.0/devicecode", "").await;
        assert_eq!(device.status(), 400);
        assert_entra_error(&device.json().await.unwrap(), "invalid_request", 900144);
        assert_eq!(post(&f, "//oauth2/v2.0/token", "").await.status(), 404);
        let huge = "a".repeat(MAX_BODY_BYTES + 1);
        assert_eq!(post(&f, &token_path(), &huge).await.status(), 413);

        let get = http_client(&f.pki)
            .get(f.entra.token_url(TENANT))
            .send()
            .await
            .unwrap();
        assert_eq!(get.status(), 400);
        assert_entra_error(&get.json().await.unwrap(), "invalid_request", 900561);

        // Garbage instead of TLS, then a client that hangs up: the server lives on.
        use tokio::io::AsyncWriteExt as _;
        let mut raw = TcpStream::connect(f.entra.addr()).await.unwrap();
        raw.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        drop(raw);
        let ok = post(&f, &token_path(), &form(CLIENT, SECRET, ARM)).await;
        assert_eq!(ok.status(), 200);
    }

    #[test]
    fn usable_without_a_runtime_and_stops_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let pki = TestPki::generate(dir.path());
        let entra = EntraDouble::start(&pki);
        let addr = entra.addr();
        std::net::TcpStream::connect(addr).unwrap();
        drop(entra);
        assert!(std::net::TcpStream::connect(addr).is_err());
    }
}
