//! A local double of the managed identity endpoints, over plain HTTP on
//! loopback (both real ones are plain HTTP):
//!
//! - App Service / Functions (api-version 2019-08-01): `GET /msi/token?resource=R
//!   &api-version=2019-08-01[&client_id=C]` with `X-IDENTITY-HEADER: <secret>`;
//!   answers `{"access_token","expires_on","resource","token_type","client_id"}`
//!   (numbers as strings). An unknown identity gets 400
//!   `{"statusCode":400,"message":"Unable to load the proper Managed Identity.","correlationId":"..."}`.
//! - VM metadata endpoint (IMDS): `GET /metadata/identity/oauth2/token?api-version=2018-02-01
//!   &resource=R[&client_id=C]` with `Metadata: true`; answers
//!   `{"access_token","refresh_token":"","expires_in","expires_on","not_before","resource","token_type"}`.
//!   An unknown identity gets 400 `{"error":"invalid_request","error_description":"Identity not found"}`,
//!   a missing `Metadata` header 400 `{"error":"bad_request_102","error_description":"Required metadata header not specified"}`.
//!
//! The bodies of the App Service replies for a wrong secret header (401) and
//! a wrong api-version (400) are not documented; the double uses the same
//! `{statusCode, message, correlationId}` envelope as the documented error.

use crate::https_server::serve_http1;
use crate::jwt::{self, AppClaims};
use crate::loopback_server::LoopbackServer;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::HeaderValue;
use hyper::{Request, Response, StatusCode};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// Tenant of the identities unless [`ManagedIdentityDouble::set_tenant`] says otherwise.
pub const DEFAULT_TENANT: &str = "3c0ffee0-0000-4000-8000-00000000cafe";
/// Client id of the system-assigned identity.
pub const SYSTEM_CLIENT_ID: &str = "5a5a5a5a-0000-4000-8000-000000005a5a";
/// Token lifetime.
pub const LIFETIME_SECS: i64 = 86_399;

/// Which protocol a request used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    AppService,
    Imds,
}

/// One request as the double understood it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MiRequest {
    pub protocol: Protocol,
    pub resource: String,
    pub client_id: Option<String>,
    pub api_version: String,
    pub status: u16,
}

/// The running double; dropping it stops the server.
pub struct ManagedIdentityDouble {
    server: LoopbackServer,
    shared: Arc<Shared>,
}

struct Config {
    secret: String,
    tenant: String,
    system_assigned: bool,
    user_assigned: HashSet<String>,
    /// Status codes for the next requests, oldest first (e.g. 500, 429).
    failures: Vec<u16>,
    delay: Duration,
}

#[derive(Default)]
struct Shared {
    config: Mutex<Option<Config>>,
    requests: Mutex<Vec<MiRequest>>,
}

impl Shared {
    fn config(&self) -> MutexGuard<'_, Option<Config>> {
        self.config.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl ManagedIdentityDouble {
    /// Starts on `127.0.0.1:<ephemeral>` with a system-assigned identity and a random secret header.
    pub fn start() -> ManagedIdentityDouble {
        let shared = Arc::new(Shared::default());
        *shared.config() = Some(Config {
            secret: jwt::new_uuid(),
            tenant: DEFAULT_TENANT.to_owned(),
            system_assigned: true,
            user_assigned: HashSet::new(),
            failures: Vec::new(),
            delay: Duration::ZERO,
        });
        let handler = {
            let shared = Arc::clone(&shared);
            Arc::new(move |request| {
                let shared = Arc::clone(&shared);
                async move { handle(&shared, request).await }
            })
        };
        let server = LoopbackServer::start("mi-double", move |tcp| {
            serve_http1(tcp, Arc::clone(&handler))
        });
        ManagedIdentityDouble { server, shared }
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// `IDENTITY_ENDPOINT` for the App Service protocol.
    pub fn app_service_endpoint(&self) -> String {
        format!("http://{}/msi/token", self.addr())
    }

    /// `IDENTITY_HEADER`: the secret the App Service endpoint expects.
    pub fn app_service_secret(&self) -> String {
        self.with(|c| c.secret.clone())
    }

    /// The URL that stands in for `http://169.254.169.254/metadata/identity/oauth2/token`.
    pub fn imds_endpoint(&self) -> String {
        format!("http://{}/metadata/identity/oauth2/token", self.addr())
    }

    pub fn set_system_assigned(&self, present: bool) {
        self.with(|c| c.system_assigned = present);
    }

    pub fn add_user_assigned(&self, client_id: &str) {
        self.with(|c| c.user_assigned.insert(client_id.to_owned()));
    }

    pub fn set_tenant(&self, tenant: &str) {
        self.with(|c| c.tenant = tenant.to_owned());
    }

    /// The next requests fail with these statuses, in order (429 gets `Retry-After: 7`).
    pub fn fail_next(&self, statuses: &[u16]) {
        self.with(|c| c.failures = statuses.to_vec());
    }

    pub fn set_delay(&self, delay: Duration) {
        self.with(|c| c.delay = delay);
    }

    pub fn requests(&self) -> Vec<MiRequest> {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn with<T>(&self, f: impl FnOnce(&mut Config) -> T) -> T {
        f(self.shared.config().as_mut().expect("configured"))
    }
}

async fn handle(shared: &Shared, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let protocol = match request.uri().path() {
        "/msi/token" => Protocol::AppService,
        "/metadata/identity/oauth2/token" => Protocol::Imds,
        _ => return reply(StatusCode::NOT_FOUND, String::new(), None),
    };
    let query: HashMap<String, String> = request
        .uri()
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let resource = query.get("resource").cloned().unwrap_or_default();
    let client_id = query.get("client_id").cloned();
    let api_version = query.get("api-version").cloned().unwrap_or_default();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();

    let (status, body, delay) = {
        let mut guard = shared.config();
        let config = guard.as_mut().expect("configured");
        let known = match &client_id {
            Some(id) => config.user_assigned.contains(id),
            None => config.system_assigned,
        };
        let failure = (!config.failures.is_empty()).then(|| config.failures.remove(0));
        let app_service_error = |status: u16, message: &str| {
            (
                status,
                serde_json::json!({"statusCode": status, "message": message, "correlationId": jwt::new_uuid()})
                    .to_string(),
            )
        };
        let imds_error = |error: &str, description: &str| {
            (
                400,
                serde_json::json!({"error": error, "error_description": description}).to_string(),
            )
        };
        let (status, body) = match (protocol, failure) {
            (_, Some(status)) => (status, String::new()),
            (Protocol::AppService, None) => {
                if header("x-identity-header").as_deref() != Some(config.secret.as_str()) {
                    app_service_error(401, "Unauthorized.")
                } else if api_version != "2019-08-01" {
                    app_service_error(400, "Unsupported api-version.")
                } else if !known || resource.is_empty() {
                    app_service_error(400, "Unable to load the proper Managed Identity.")
                } else {
                    let id = client_id
                        .clone()
                        .unwrap_or_else(|| SYSTEM_CLIENT_ID.to_owned());
                    let token = mint(&resource, &config.tenant, &id, now);
                    // Field order as App Service sends it.
                    let body = format!(
                        r#"{{"access_token":"{token}","expires_on":"{}","resource":"{resource}","token_type":"Bearer","client_id":"{id}"}}"#,
                        now + LIFETIME_SECS
                    );
                    (200, body)
                }
            }
            (Protocol::Imds, None) => {
                if header("metadata").as_deref() != Some("true") {
                    imds_error("bad_request_102", "Required metadata header not specified")
                } else if !known || api_version.is_empty() {
                    imds_error("invalid_request", "Identity not found")
                } else {
                    let id = client_id
                        .clone()
                        .unwrap_or_else(|| SYSTEM_CLIENT_ID.to_owned());
                    let token = mint(&resource, &config.tenant, &id, now);
                    let body = format!(
                        r#"{{"access_token":"{token}","refresh_token":"","expires_in":"{LIFETIME_SECS}","expires_on":"{}","not_before":"{}","resource":"{resource}","token_type":"Bearer"}}"#,
                        now + LIFETIME_SECS,
                        now - jwt::BACKDATE_SECS
                    );
                    (200, body)
                }
            }
        };
        (status, body, config.delay)
    };
    shared
        .requests
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(MiRequest {
            protocol,
            resource,
            client_id,
            api_version,
            status,
        });
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let retry_after = (status == 429).then_some(7);
    reply(
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        body,
        retry_after,
    )
}

fn mint(resource: &str, tenant: &str, client_id: &str, now: i64) -> String {
    let scope = format!("{}/.default", resource.trim_end_matches('/'));
    let mut claims = AppClaims::new(&scope, tenant, client_id, client_id, now, LIFETIME_SECS);
    // Managed identity tokens say how the app authenticated: "2" (certificate-like).
    claims.appidacr = "2".to_owned();
    jwt::mint(&claims)
}

fn reply(status: StatusCode, body: String, retry_after: Option<u64>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    if let Some(secs) = retry_after {
        response
            .headers_mut()
            .insert("retry-after", HeaderValue::from(secs));
    }
    response
}
