//! The managed-identity endpoint: the App Service protocol (api-version
//! 2019-08-01) on 127.0.0.1, so that any Azure SDK's `ManagedIdentityCredential`
//! gets the broker's tokens with `IDENTITY_ENDPOINT` and `IDENTITY_HEADER` set
//! (`azbroker env --managed-identity` prints them).
//!
//! Off by default (`azbrokerd --managed-identity-endpoint`). Guards, in order:
//! on Linux the connecting socket must belong to the daemon's user (found in
//! the kernel's socket table, see [`crate::tcp_owner`]), else 403 before a
//! byte is read; every request must carry `X-IDENTITY-HEADER` equal to a
//! secret that is random per daemon and stored only in a 0600 file beside the
//! socket (compared in constant time), else 401 and nothing else. A 401 or
//! 403 closes its connection, idle keep-alive connections close after
//! [`HEADER_TIMEOUT`] and busy ones after [`MAX_REQUESTS_PER_CONNECTION`], so
//! clients without the secret cannot keep the slots from clients with it.
//! Tokens come from the chain the daemon's own environment selects, through
//! the normal cache, and never by asking the user (what the endpoint stands
//! for never prompts). A request naming a user-assigned identity is served
//! only by the chain's credentials configured with that client id; any other
//! identity it names gets 400, never another identity's token.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use azbroker_proto::{
    ChainSpec, CredentialSpec, ErrorKind, GetToken, Hello, ManagedIdentityEndpoint, Secret,
    WireError, PROTOCOL_VERSION,
};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONNECTION, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use rand::RngCore;
use subtle::ConstantTimeEq;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use crate::broker::Broker;
use crate::cache::{CachedToken, HitMemo};
use crate::policy::Requester;
use crate::session::Session;
use crate::stats::Stats;

/// The path `IDENTITY_ENDPOINT` names (App Service uses the same one).
pub const TOKEN_PATH: &str = "/msi/token";
/// The only protocol version served.
pub const API_VERSION: &str = "2019-08-01";
/// The header that must carry the secret.
pub const SECRET_HEADER: &str = "x-identity-header";
/// Connections served at once; the next accept waits for a slot.
const MAX_CONNECTIONS: usize = 64;
/// A request head (line and headers) must arrive within this time, and an
/// idle keep-alive connection is closed after it (hyper starts this timer
/// whenever it waits for a head, the first or the next).
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests one connection may make; the last answer closes it, so a busy
/// client takes its turn at `accept` with everyone else.
const MAX_REQUESTS_PER_CONNECTION: usize = 100;
/// Largest request head accepted (hyper's minimum is 8 KiB).
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// How long a refused connection's input is drained before it is closed.
const REFUSAL_LINGER: Duration = Duration::from_secs(1);
/// Backstop for one connection, however slow the acquisition behind it.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(15 * 60);

/// A bound, not yet serving, endpoint: the listener, its secret and the file
/// that holds the secret. Binding comes first so a daemon that cannot serve
/// the endpoint fails before it takes clients.
pub struct BoundEndpoint {
    listener: TcpListener,
    secret: Secret,
    chain: ChainSpec,
    info: ManagedIdentityEndpoint,
    header_file: PathBuf,
}

impl BoundEndpoint {
    /// Binds 127.0.0.1 on a port the kernel chooses, makes the secret and
    /// writes it to `<socket>.identity-header` (0600).
    pub async fn bind(socket: &Path) -> Result<BoundEndpoint, String> {
        // Secret variables were scrubbed from the environment at start; own_var keeps them.
        let mut chain = ChainSpec::from_lookup(crate::harden::own_var)
            .map_err(|e| format!("managed-identity endpoint: the daemon's chain: {e}"))?;
        chain.interactive = false;
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(|e| format!("managed-identity endpoint: cannot listen on 127.0.0.1: {e}"))?;
        let port = listener
            .local_addr()
            .map_err(|e| format!("managed-identity endpoint: {e}"))?
            .port();
        let secret = new_secret();
        let header_file = azbroker_proto::paths::sibling(socket, "identity-header");
        write_secret_file(&header_file, &secret)
            .map_err(|e| format!("managed-identity endpoint: {}: {e}", header_file.display()))?;
        Ok(BoundEndpoint {
            listener,
            secret,
            chain,
            info: ManagedIdentityEndpoint {
                endpoint: format!("http://127.0.0.1:{port}{TOKEN_PATH}"),
                header_file: header_file.display().to_string(),
            },
            header_file,
        })
    }

    pub fn info(&self) -> &ManagedIdentityEndpoint {
        &self.info
    }

    /// The file to remove when the daemon stops.
    pub fn header_file(&self) -> &Path {
        &self.header_file
    }

    /// Serves until `shutdown` turns true. The chain is checked like any
    /// client's, once.
    pub fn serve(
        self,
        broker: Arc<Broker>,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<tokio::task::JoinHandle<()>, String> {
        let open = |chain: ChainSpec| {
            Session::open(
                Hello {
                    protocol_version: PROTOCOL_VERSION,
                    client_name: "managed-identity-endpoint".into(),
                    pid: std::process::id(),
                    chain,
                },
                // Each connection serves its peer process: see `serve_connection`.
                Requester::default(),
            )
            .map_err(|e| format!("managed-identity endpoint: the daemon's chain: {e}"))
        };
        let by_client_id = user_assigned_chains(&self.chain)
            .into_iter()
            .map(|(client_id, chain)| Ok((client_id, open(chain)?)))
            .collect::<Result<HashMap<_, _>, String>>()?;
        let session = open(self.chain)?;
        tracing::info!(
            endpoint = %self.info.endpoint,
            chain = %session.chain.selected_by,
            client_ids = ?by_client_id.keys().collect::<Vec<_>>(),
            "managed-identity endpoint listening"
        );
        let state = Arc::new(EndpointState {
            broker,
            session,
            by_client_id,
            secret: self.secret,
        });
        let listener = self.listener;
        Ok(tokio::spawn(async move {
            let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
            loop {
                let permit = tokio::select! {
                    permit = slots.clone().acquire_owned() => permit.expect("semaphore never closes"),
                    _ = shutdown.changed() => return,
                };
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    _ = shutdown.changed() => return,
                };
                match accepted {
                    Ok((stream, peer)) => {
                        let (state, shutdown) = (state.clone(), shutdown.clone());
                        tokio::spawn(serve_connection(state, stream, peer, permit, shutdown));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "managed-identity endpoint: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }))
    }
}

/// What every connection to the endpoint shares.
struct EndpointState {
    broker: Arc<Broker>,
    /// The daemon's whole chain: requests that name no identity.
    session: Session,
    /// Requests naming `client_id` (lowercase): the chain's credentials
    /// configured with exactly that client id, and nothing else.
    by_client_id: HashMap<String, Session>,
    secret: Secret,
}

/// For each client id that a credential of `chain` is configured with
/// (environment, workload identity, user-assigned managed identity), the
/// chain of just those credentials: a request naming that identity can then
/// only be served as that identity.
fn user_assigned_chains(chain: &ChainSpec) -> HashMap<String, ChainSpec> {
    let mut chains: HashMap<String, ChainSpec> = HashMap::new();
    for credential in &chain.credentials {
        let client_id = match credential {
            CredentialSpec::Environment { client_id, .. }
            | CredentialSpec::WorkloadIdentity { client_id, .. }
            | CredentialSpec::ManagedIdentity { client_id, .. } => client_id,
            _ => &None,
        };
        let Some(client_id) = client_id.as_deref().filter(|id| !id.is_empty()) else {
            continue;
        };
        chains
            .entry(client_id.to_ascii_lowercase())
            .or_insert_with(|| ChainSpec {
                credentials: Vec::new(),
                selected_by: format!(
                    "{}, credentials with client_id {client_id}",
                    chain.selected_by
                ),
                ..chain.clone()
            })
            .credentials
            .push(credential.clone());
    }
    chains
}

/// 32 random bytes from the OS, as 64 hex digits (safe in a header and a shell line).
fn new_secret() -> Secret {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    bytes.fill(0);
    Secret::new(hex)
}

/// Writes a fresh 0600 file: any old one (a previous daemon's) is removed
/// first, and the new one is created exclusively, so nothing else can be
/// holding it open or point it elsewhere.
fn write_secret_file(path: &Path, secret: &Secret) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(secret.expose().as_bytes())?;
    file.sync_all()
}

/// Serves one connection, holding `slot` until it ends (a refused one gives
/// it back at once: its linger must not keep the user's clients waiting).
async fn serve_connection(
    state: Arc<EndpointState>,
    stream: TcpStream,
    peer: SocketAddr,
    slot: OwnedSemaphorePermit,
    mut shutdown: watch::Receiver<bool>,
) {
    Stats::bump(&state.broker.stats.connections_accepted);
    let socket = match crate::tcp_owner::require_own_user(&stream).await {
        Ok(socket) => socket,
        Err(why) => {
            Stats::bump(&state.broker.stats.connections_refused);
            tracing::warn!(%peer, reason = %why, "managed-identity endpoint: connection refused");
            drop(slot);
            refuse_connection(stream).await;
            return;
        }
    };
    // Who is asking, for the scope policy and the audit: the process holding
    // the peer's socket (its exec NAME, if any), as a Unix socket's peer
    // credentials tell it.
    let pid = match socket {
        Some(socket) => tokio::task::spawn_blocking(move || crate::tcp_owner::holder(socket))
            .await
            .ok()
            .flatten(),
        None => None,
    };
    let requester = Arc::new(state.broker.policy.requester(pid));
    let served = Arc::new(AtomicUsize::new(0));
    let service = hyper::service::service_fn(move |request| {
        let (state, served, requester) = (state.clone(), served.clone(), requester.clone());
        async move {
            let mut response = handle(&state, &requester, request).await;
            let count = served.fetch_add(1, Ordering::Relaxed) + 1;
            if ends_connection(response.status(), count) {
                // hyper closes the connection after a response that says so.
                response
                    .headers_mut()
                    .insert(CONNECTION, HeaderValue::from_static("close"));
            }
            Ok::<_, Infallible>(response)
        }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES)
        .serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        _ = tokio::time::timeout(CONNECTION_LIFETIME, connection) => {}
        _ = shutdown.changed() => {}
    }
}

/// Whether the answer to a connection's `count`th request is its last: a
/// refusal (a client without the secret gets nothing more from a connection,
/// and its slot goes back), or the connection's request allowance is spent.
fn ends_connection(status: StatusCode, count: usize) -> bool {
    matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN)
        || count >= MAX_REQUESTS_PER_CONNECTION
}

/// A fixed 403 written straight to the socket, then close: no request of a
/// foreign user is even parsed. Closing a socket with unread input sends a
/// reset, which can destroy the 403 before the peer reads it; so whatever the
/// peer sent is first read and thrown away, bounded in size and time.
async fn refuse_connection(mut stream: TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = error_body(StatusCode::FORBIDDEN, "azbrokerd serves only its own user");
    let head = format!(
        "HTTP/1.1 403 Forbidden\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        stream.shutdown().await
    })
    .await;
    let _ = tokio::time::timeout(REFUSAL_LINGER, async {
        let mut sink = [0u8; 1024];
        let mut left = MAX_HEAD_BYTES;
        while left > 0 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    })
    .await;
}

async fn handle(
    state: &EndpointState,
    requester: &Requester,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    if !has_secret(&request, &state.secret) {
        Stats::bump(&state.broker.stats.connections_refused);
        return error(
            StatusCode::UNAUTHORIZED,
            "missing or wrong X-IDENTITY-HEADER",
        );
    }
    Stats::bump(&state.broker.stats.requests);
    if request.method() != Method::GET {
        return error(StatusCode::METHOD_NOT_ALLOWED, "only GET is served");
    }
    if request.uri().path() != TOKEN_PATH {
        return error(
            StatusCode::NOT_FOUND,
            &format!("tokens are served at {TOKEN_PATH}"),
        );
    }
    let query = match EndpointQuery::parse(request.uri().query().unwrap_or("")) {
        Ok(query) => query,
        Err(why) => return error(StatusCode::BAD_REQUEST, &why),
    };
    let session = match session_for(state, query.identity.as_ref()) {
        Ok(session) => session.for_requester(requester.clone()),
        Err(why) => return error(StatusCode::BAD_REQUEST, &why),
    };
    match token(state, &session, &query.resource).await {
        Ok(reply) => json_response(
            StatusCode::OK,
            serde_json::json!({
                "access_token": reply.access_token.expose(),
                "expires_on": reply.expires_on.to_string(),
                "resource": query.resource,
                "token_type": "Bearer",
            }),
        ),
        Err(e) => {
            Stats::bump(&state.broker.stats.errors);
            let status = match e.kind {
                ErrorKind::InvalidRequest => StatusCode::BAD_REQUEST,
                ErrorKind::Refused => StatusCode::FORBIDDEN,
                ErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            error(status, &e.to_string())
        }
    }
}

/// Exactly one `X-IDENTITY-HEADER`, equal to the secret (constant time).
fn has_secret(request: &Request<Incoming>, secret: &Secret) -> bool {
    let mut values = request.headers().get_all(SECRET_HEADER).iter();
    match (values.next(), values.next()) {
        (Some(value), None) => bool::from(value.as_bytes().ct_eq(secret.expose().as_bytes())),
        _ => false,
    }
}

/// The session that serves a request naming `identity` (none: the daemon's
/// chain), or why no session may.
fn session_for<'a>(
    state: &'a EndpointState,
    identity: Option<&IdentitySelector>,
) -> Result<&'a Session, String> {
    let Some(identity) = identity else {
        return Ok(&state.session);
    };
    let served = (identity.name == "client_id")
        .then(|| state.by_client_id.get(&identity.value.to_ascii_lowercase()))
        .flatten();
    served.ok_or_else(|| {
        tracing::info!(selector = %identity.name, "managed-identity endpoint: identity not served");
        format!(
            "no managed identity here matches {}={}: azbrokerd's endpoint serves the identity of \
             its own chain ({}), and only a client_id that one of its credentials is configured \
             with (AZURE_CLIENT_ID); object_id and mi_res_id are never served",
            identity.name, identity.value, state.session.chain.selected_by
        )
    })
}

/// The request's query: `resource`, `api-version` and at most one identity
/// selector (`client_id`, `object_id`, `mi_res_id`, `msi_res_id`, `principal_id`).
#[derive(Debug, PartialEq, Eq)]
struct EndpointQuery {
    resource: String,
    identity: Option<IdentitySelector>,
}

/// A user-assigned identity named by a request, e.g. `client_id=<guid>`.
#[derive(Debug, PartialEq, Eq)]
struct IdentitySelector {
    name: &'static str,
    value: String,
}

const IDENTITY_SELECTORS: [&str; 5] = [
    "client_id",
    "object_id",
    "mi_res_id",
    "msi_res_id",
    "principal_id",
];

impl EndpointQuery {
    fn parse(query: &str) -> Result<EndpointQuery, String> {
        let mut resource = None;
        let mut api_version = None;
        let mut identity = None;
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            if let Some(selector) = IDENTITY_SELECTORS.iter().find(|s| **s == name) {
                let named = IdentitySelector {
                    name: selector,
                    value: value.into_owned(),
                };
                if identity.replace(named).is_some() {
                    return Err("the query names more than one identity".into());
                }
                continue;
            }
            let slot = match name.as_ref() {
                "resource" => &mut resource,
                "api-version" => &mut api_version,
                _ => continue,
            };
            if slot.replace(value.into_owned()).is_some() {
                return Err(format!("the query names {name} more than once"));
            }
        }
        match api_version.as_deref() {
            Some(API_VERSION) => {}
            Some(other) => {
                return Err(format!(
                    "api-version {other} is not supported: use {API_VERSION}"
                ))
            }
            None => return Err(format!("api-version is required ({API_VERSION})")),
        }
        let resource = resource
            .filter(|r| !r.is_empty())
            .ok_or("resource is required")?;
        Ok(EndpointQuery { resource, identity })
    }
}

/// The scope a managed-identity `resource` asks for, as `azbroker token` and
/// the managed-identity credential read it: `/.default` of the resource's
/// host, whatever permission or path follows it
/// (`https://graph.microsoft.com/User.Read` -> `https://graph.microsoft.com/.default`).
/// The resource is checked as a client's scope first, so nothing the broker
/// would refuse is made acceptable by cutting it short.
fn resource_scope(resource: &str) -> Result<String, String> {
    use azbroker_proto::resource::{resource_to_scope, to_default_scope};
    crate::scopes::normalize_scopes(&[resource.to_string()])?;
    Ok(resource_to_scope(&to_default_scope(resource)))
}

async fn token(
    state: &EndpointState,
    session: &Session,
    resource: &str,
) -> Result<Arc<CachedToken>, WireError> {
    let prepared = state.broker.prepare(
        session,
        GetToken {
            scopes: vec![resource_scope(resource)
                .map_err(|e| WireError::new(ErrorKind::InvalidRequest, e))?],
            tenant: None,
            claims: None,
            min_validity_secs: 0,
        },
    )?;
    // One request per connection here: a memo would outlive nothing.
    let mut memo = HitMemo::default();
    if let Some(token) = state.broker.lookup(session, &prepared, &mut memo).await {
        return Ok(token);
    }
    let (token, _cached) = state.broker.acquire(session, prepared).await?;
    Ok(token)
}

/// App Service's error shape, which the SDKs read (`statusCode`, `message`).
fn error_body(status: StatusCode, message: &str) -> String {
    serde_json::json!({ "statusCode": status.as_u16(), "message": message }).to_string()
}

fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(error_body(status, message))));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn json_response(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_needs_resource_and_the_one_api_version() {
        assert_eq!(
            EndpointQuery::parse("resource=https%3A%2F%2Fvault.azure.net&api-version=2019-08-01"),
            Ok(EndpointQuery {
                resource: "https://vault.azure.net".into(),
                identity: None,
            })
        );
        assert_eq!(
            EndpointQuery::parse(
                "api-version=2019-08-01&resource=r&client_id=00000000-0000-0000-0000-000000000000"
            )
            .unwrap()
            .identity,
            Some(IdentitySelector {
                name: "client_id",
                value: "00000000-0000-0000-0000-000000000000".into()
            })
        );
        assert!(
            EndpointQuery::parse("api-version=2019-08-01&resource=r&client_id=a&mi_res_id=b")
                .unwrap_err()
                .contains("more than one identity")
        );
        assert!(EndpointQuery::parse("resource=r")
            .unwrap_err()
            .contains("api-version"));
        assert!(EndpointQuery::parse("resource=r&api-version=2017-09-01")
            .unwrap_err()
            .contains("2017-09-01"));
        assert!(EndpointQuery::parse("api-version=2019-08-01")
            .unwrap_err()
            .contains("resource"));
        assert!(
            EndpointQuery::parse("api-version=2019-08-01&resource=a&resource=b")
                .unwrap_err()
                .contains("more than once")
        );
    }

    #[test]
    fn resources_are_read_as_their_default_scope() {
        for (resource, scope) in [
            (
                "https://graph.microsoft.com/User.Read",
                "https://graph.microsoft.com/.default",
            ),
            (
                "https://vault.azure.net",
                "https://vault.azure.net/.default",
            ),
            (
                "https://management.azure.com/",
                "https://management.azure.com/.default",
            ),
            (
                "https://storage.azure.com/.default",
                "https://storage.azure.com/.default",
            ),
            ("api://app", "api://app/.default"),
            (
                "00000000-0000-4000-8000-000000000001",
                "00000000-0000-4000-8000-000000000001/.default",
            ),
        ] {
            assert_eq!(resource_scope(resource).as_deref(), Ok(scope), "{resource}");
        }
        assert!(resource_scope("https://x/.default; rm -rf /").is_err());
        assert!(resource_scope("").is_err());
    }

    #[test]
    fn a_client_id_is_served_only_by_the_credentials_configured_with_it() {
        let chain = ChainSpec {
            authority_host: "https://login.microsoftonline.com".into(),
            credentials: vec![
                CredentialSpec::Environment {
                    tenant_id: Some("t".into()),
                    client_id: Some("AAAA".into()),
                    client_secret: None,
                    certificate_path: None,
                    certificate_password: None,
                },
                CredentialSpec::ManagedIdentity {
                    client_id: None,
                    endpoint: None,
                    header: None,
                },
                CredentialSpec::ManagedIdentity {
                    client_id: Some("aaaa".into()),
                    endpoint: None,
                    header: None,
                },
            ],
            selected_by: "test".into(),
            interactive: false,
        };
        let chains = user_assigned_chains(&chain);
        assert_eq!(chains.len(), 1);
        let served = &chains["aaaa"];
        assert_eq!(
            served.credentials,
            [chain.credentials[0].clone(), chain.credentials[2].clone()]
        );
        assert!(!served.interactive);
    }

    #[test]
    fn refusals_and_the_last_allowed_request_end_the_connection() {
        assert!(ends_connection(StatusCode::UNAUTHORIZED, 1));
        assert!(ends_connection(StatusCode::FORBIDDEN, 1));
        assert!(!ends_connection(StatusCode::OK, 1));
        assert!(!ends_connection(StatusCode::NOT_FOUND, 1));
        assert!(!ends_connection(
            StatusCode::OK,
            MAX_REQUESTS_PER_CONNECTION - 1
        ));
        assert!(ends_connection(StatusCode::OK, MAX_REQUESTS_PER_CONNECTION));
    }

    #[test]
    fn secrets_are_random_hex() {
        let (a, b) = (new_secret(), new_secret());
        assert_eq!(a.len(), 64);
        assert!(a.expose().chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
