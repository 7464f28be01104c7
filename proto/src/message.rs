//! Requests and replies. Every frame from a client is a [`ClientFrame`]; every
//! frame from the daemon is a [`DaemonFrame`] whose `id` echoes the request it answers.

use serde::ser::SerializeStruct;
use serde::{Deserialize, Serialize, Serializer};

use crate::audit::{AuditPage, AuditQuery};
use crate::chain::ChainSpec;
use crate::diagnose::{DiagnoseRequest, Diagnosis};
use crate::error::WireError;
use crate::secret::Secret;

/// Request id chosen by the client; unique among its in-flight requests.
pub type RequestId = u64;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientFrame {
    pub id: RequestId,
    pub request: Request,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DaemonFrame {
    pub id: RequestId,
    pub reply: Reply,
}

/// What a client asks. Append-only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// First frame of every connection. Answered by [`Reply::Welcome`] or a refusal.
    Hello(Hello),
    /// Answered by [`Reply::Token`].
    GetToken(GetToken),
    /// Answered by [`Reply::Status`].
    Status,
    /// Drops cached tokens; answered by [`Reply::Invalidated`].
    Invalidate(Invalidate),
    /// Asks the daemon to exit; answered by [`Reply::ShuttingDown`].
    Shutdown,
    /// Logs a user in inside the daemon (browser or device code). Answered by
    /// zero or more [`Reply::LoginProgress`] frames with the same id (the device
    /// code message to show), then [`Reply::LoggedIn`] or an error.
    Login(Login),
    /// Forgets persisted accounts and drops their cached tokens; answered by
    /// [`Reply::LoggedOut`].
    Logout(Logout),
    /// Where the daemon serves the managed-identity endpoint; answered by
    /// [`Reply::ManagedIdentity`].
    ManagedIdentity,
    /// Checks endpoints with the daemon's proxy and trust settings; answered by [`Reply::Diagnosis`].
    Diagnose(DiagnoseRequest),
    /// One page of the status; answered by [`Reply::StatusPage`]. [`Request::Status`]
    /// answers with the first page only (what fits in a frame).
    StatusPage(StatusQuery),
    /// Registers the calling process (by its peer credentials) as an
    /// `azbroker exec --name NAME` with the scope rules of its flags; it and
    /// every process it starts are then asked for under that NAME. Answered
    /// by [`Reply::ExecRegistered`].
    RegisterExec(RegisterExec),
    /// Recorded token requests; answered by [`Reply::Audit`].
    Audit(AuditQuery),
}

/// What `azbroker exec` registers before it becomes COMMAND.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterExec {
    pub name: String,
    /// Scope patterns (`https://storage.azure.com/*` or exact scopes); empty: any.
    pub allow_scopes: Vec<String>,
    pub deny_scopes: Vec<String>,
}

/// What the daemon answers. Append-only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Reply {
    Welcome(Welcome),
    Token(TokenReply),
    Status(Box<StatusReport>),
    Invalidated {
        removed: u64,
    },
    ShuttingDown,
    Error(WireError),
    /// Something the user must see while a [`Request::Login`] runs, e.g. the
    /// device code message. Not final: the request's answer follows.
    LoginProgress {
        message: String,
    },
    LoggedIn(LoggedIn),
    LoggedOut {
        /// Accounts forgotten.
        accounts: u64,
        /// Cached access tokens dropped.
        tokens_dropped: u64,
    },
    /// `None` when the daemon was started without its managed-identity endpoint.
    ManagedIdentity(Option<ManagedIdentityEndpoint>),
    /// Answers [`Request::Diagnose`].
    Diagnosis(Box<Diagnosis>),
    /// Answers [`Request::StatusPage`].
    StatusPage(Box<StatusPage>),
    /// The exec is registered.
    ExecRegistered,
    /// Answers [`Request::Audit`].
    Audit(AuditPage),
}

impl Reply {
    /// The variant's name, for errors about a reply that was not expected.
    pub fn name(&self) -> &'static str {
        match self {
            Reply::Welcome(_) => "Welcome",
            Reply::Token(_) => "Token",
            Reply::Status(_) => "Status",
            Reply::Invalidated { .. } => "Invalidated",
            Reply::ShuttingDown => "ShuttingDown",
            Reply::Error(_) => "Error",
            Reply::LoginProgress { .. } => "LoginProgress",
            Reply::LoggedIn(_) => "LoggedIn",
            Reply::LoggedOut { .. } => "LoggedOut",
            Reply::ManagedIdentity(_) => "ManagedIdentity",
            Reply::Diagnosis(_) => "Diagnosis",
            Reply::StatusPage(_) => "StatusPage",
            Reply::ExecRegistered => "ExecRegistered",
            Reply::Audit(_) => "Audit",
        }
    }
}

/// How [`Request::Login`] signs the user in. Append-only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LoginMethod {
    /// Authorization code with PKCE in the user's browser (loopback redirect).
    Browser,
    /// Device code: the user opens a URL anywhere and types a code.
    DeviceCode,
}

/// Which account to log in. The authority is the session's (its chain's
/// `authority_host`); `None` fields take the defaults the InteractiveBrowser
/// credential uses (tenant `organizations`, Azure.Identity's developer client id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Login {
    pub method: LoginMethod,
    pub tenant: Option<String>,
    pub client_id: Option<String>,
    /// Scopes of the access token requested with the login; empty means Resource Manager.
    pub scopes: Vec<String>,
    /// Browser logins give up after this long; 0 means the default (300 s).
    pub timeout_secs: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoggedIn {
    /// The signed-in user's name (`preferred_username`), when the identity platform said.
    pub username: Option<String>,
    /// Tenant of the account's home (`tid`), when known.
    pub tenant: Option<String>,
    /// Where the refresh token was persisted (same text as [`StatusReport::store`]).
    pub store: String,
}

/// Which accounts to forget: all of them, or the one `tenant`/`client_id`
/// select under the session's authority (defaults as in [`Login`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Logout {
    pub all: bool,
    pub tenant: Option<String>,
    pub client_id: Option<String>,
}

/// The first message. `protocol_version` is its first field on purpose: a daemon
/// can read it even when the rest of a newer client's Hello does not parse.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    pub protocol_version: u32,
    /// For logs and status, e.g. `azbroker-cli` or `azbroker-mcp`.
    pub client_name: String,
    pub pid: u32,
    /// The credential chain the client's environment selects.
    pub chain: ChainSpec,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    pub protocol_version: u32,
    pub daemon_version: String,
    pub daemon_pid: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetToken {
    /// One or more scopes, e.g. `https://management.azure.com/.default`.
    pub scopes: Vec<String>,
    /// Tenant to authenticate in, when not the credential's own.
    pub tenant: Option<String>,
    /// A claims challenge (continuous access evaluation); bypasses the cache.
    /// The JSON itself, decoded from the challenge's base64 `claims` (what
    /// Azure.Identity's `TokenRequestContext.Claims` holds).
    pub claims: Option<String>,
    /// The token must stay valid at least this long; 0 means the default (5 minutes).
    pub min_validity_secs: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenReply {
    pub access_token: Secret,
    pub token_type: String,
    /// Expiry, seconds since the Unix epoch.
    pub expires_on: i64,
    /// When the daemon will refresh it, seconds since the Unix epoch.
    pub refresh_on: i64,
    /// Tenant the token was requested for, when known.
    pub tenant: Option<String>,
    /// Name of the credential that minted it, e.g. `AzureCliCredential`.
    pub credential: String,
    /// Whether it came from the cache.
    pub cached: bool,
    /// Valid for less than the daemon's 5-minute floor: the daemon could not
    /// get a newer one (the identity provider fails or throttles) and serves
    /// this one while it lasts, as the Azure SDKs' bearer-token policy does.
    /// `azbroker status` shows the credential's error.
    pub stale: bool,
}

/// The daemon's App Service style managed-identity endpoint. The header secret
/// itself never crosses the socket: it lives only in `header_file` (0600).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManagedIdentityEndpoint {
    /// The value for `IDENTITY_ENDPOINT`, e.g. `http://127.0.0.1:41741/msi/token`.
    pub endpoint: String,
    /// The file holding the value for `IDENTITY_HEADER`.
    pub header_file: String,
}

/// A [`ClientFrame`] that borrows its request: encodes to the same bytes, so a
/// client can keep the request (to resend it once on a broken connection)
/// without copying it for every send.
#[derive(Debug, Serialize)]
pub struct ClientFrameRef<'a> {
    pub id: RequestId,
    pub request: &'a Request,
}

/// A [`TokenReply`] that borrows its strings, so the daemon answers a cache hit
/// straight from the cached token instead of copying the token (and wiping the
/// copy) for every reply. Field order is [`TokenReply`]'s.
#[derive(Serialize)]
pub struct TokenReplyRef<'a> {
    pub access_token: &'a str,
    pub token_type: &'a str,
    pub expires_on: i64,
    pub refresh_on: i64,
    pub tenant: Option<&'a str>,
    pub credential: &'a str,
    pub cached: bool,
    pub stale: bool,
}

/// Like [`Secret`](crate::Secret)'s: the token itself is never shown.
impl std::fmt::Debug for TokenReplyRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenReplyRef")
            .field("access_token", &"<redacted>")
            .field("token_type", &self.token_type)
            .field("expires_on", &self.expires_on)
            .field("refresh_on", &self.refresh_on)
            .field("tenant", &self.tenant)
            .field("credential", &self.credential)
            .field("cached", &self.cached)
            .field("stale", &self.stale)
            .finish()
    }
}

/// Encodes exactly as `DaemonFrame { id, reply: Reply::Token(..) }` does
/// (checked by a test in `tests/wire.rs`).
#[derive(Debug)]
pub struct TokenFrameRef<'a> {
    pub id: RequestId,
    pub token: TokenReplyRef<'a>,
}

/// Position of [`Reply::Token`] among [`Reply`]'s variants.
const REPLY_TOKEN_VARIANT: u32 = 1;

impl Serialize for TokenFrameRef<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        struct AsReplyToken<'b, 'a>(&'b TokenReplyRef<'a>);
        impl Serialize for AsReplyToken<'_, '_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_newtype_variant("Reply", REPLY_TOKEN_VARIANT, "Token", self.0)
            }
        }
        let mut frame = serializer.serialize_struct("DaemonFrame", 2)?;
        frame.serialize_field("id", &self.id)?;
        frame.serialize_field("reply", &AsReplyToken(&self.token))?;
        frame.end()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invalidate {
    /// Only entries with exactly these scopes; empty means every entry.
    pub scopes: Vec<String>,
    /// Only tokens minted by credentials of these kinds; empty means any.
    pub credentials: Vec<crate::chain::CredentialKind>,
}

/// Everything `azbroker status` shows. Never holds a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    pub daemon_pid: u32,
    pub daemon_version: String,
    pub protocol_version: u32,
    pub uptime_secs: u64,
    pub socket_path: String,
    /// Where refresh tokens are persisted, e.g. `none`, `file <path>`, `keyring`.
    pub store: String,
    pub credentials: Vec<CredentialStatus>,
    pub cache: Vec<CacheEntryStatus>,
    pub counters: Counters,
    /// Requests per `azbroker exec` NAME, by name.
    pub names: Vec<NameCount>,
}

/// What the requests of one `azbroker exec` NAME came to (see [`crate::audit`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameCount {
    pub name: String,
    pub requests: u64,
    pub hits: u64,
    pub denied: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialStatus {
    pub credential: String,
    /// Short fingerprint of the credential identity (kind, tenant, client id, secret hash).
    pub identity: String,
    pub state: CredentialState,
    pub acquisitions: u64,
    pub last_success: Option<i64>,
    pub last_error: Option<String>,
    /// For a tool credential: the executable and the profile directory that
    /// make it (two profiles are two credentials).
    pub profile: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CredentialState {
    /// Started, nothing acquired yet.
    Idle,
    /// Last acquisition succeeded.
    Healthy,
    /// Not set up here (last attempt said unavailable).
    Unavailable,
    /// Last acquisition failed.
    Failing,
}

impl CredentialState {
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialState::Idle => "idle",
            CredentialState::Healthy => "healthy",
            CredentialState::Unavailable => "unavailable",
            CredentialState::Failing => "failing",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheEntryStatus {
    /// The kind of credential that minted the token.
    pub credential: String,
    pub tenant: Option<String>,
    pub scopes: Vec<String>,
    pub expires_on: i64,
    pub refresh_on: i64,
    pub hits: u64,
    /// The minting credential's fingerprint, as [`CredentialStatus::identity`].
    pub identity: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub requests: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub upstream_acquisitions: u64,
    pub refreshes: u64,
    pub refresh_failures: u64,
    pub errors: u64,
    pub connections_accepted: u64,
    pub connections_refused: u64,
    pub connections_open: u64,
}

/// Which page of the status [`Request::StatusPage`] asks for. The daemon's
/// lists can outgrow a frame (the cache holds up to 100,000 keys, a frame
/// 64 KiB), so clients ask for them a page at a time, each list from an
/// offset in the order status lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusQuery {
    /// Credentials to skip.
    pub credentials_from: u64,
    /// Cache entries to skip.
    pub cache_from: u64,
    /// At most this many cache entries; `None`: as many as fit in the frame.
    pub cache_limit: Option<u32>,
}

/// One page of the status: `report` holds the credentials and cache entries
/// from the query's offsets on, as many as fit in a frame, and the totals say
/// how many there are in all (each page is a fresh look: lists may change
/// between pages).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusPage {
    pub report: StatusReport,
    pub credentials_total: u64,
    pub cache_total: u64,
}

/// Reads the protocol version from the body of a client's first frame without
/// decoding the rest, so a version mismatch gets a clear refusal instead of a
/// parse error. `None` when the body is not a Hello at all.
pub fn peek_hello_version(body: &[u8]) -> Option<(RequestId, u32)> {
    // A ClientFrame is: id (varint u64), Request variant index (varint u32), then
    // for Hello its first field, protocol_version (varint u32).
    let (id, rest) = postcard::take_from_bytes::<RequestId>(body).ok()?;
    let (variant, rest) = postcard::take_from_bytes::<u32>(rest).ok()?;
    if variant != 0 {
        return None;
    }
    let (version, _) = postcard::take_from_bytes::<u32>(rest).ok()?;
    Some((id, version))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame;

    #[test]
    fn status_pages_round_trip_and_extend_the_enums_at_their_end() {
        let query = ClientFrame {
            id: 3,
            request: Request::StatusPage(StatusQuery {
                credentials_from: 1,
                cache_from: 700,
                cache_limit: Some(100),
            }),
        };
        let bytes = frame::encode(&query).unwrap();
        assert_eq!(
            frame::decode::<ClientFrame>(&bytes[frame::HEADER_LEN..]).unwrap(),
            query
        );
        // Variant 9 (after Diagnose): a daemon that predates it refuses it as
        // a bad frame instead of mistaking it for another request.
        assert_eq!(bytes[frame::HEADER_LEN + 1], 9);

        let page = DaemonFrame {
            id: 3,
            reply: Reply::StatusPage(Box::new(StatusPage {
                report: StatusReport {
                    daemon_pid: 1,
                    daemon_version: "0.1.0".into(),
                    protocol_version: 1,
                    uptime_secs: 2,
                    socket_path: "/s".into(),
                    store: "none".into(),
                    credentials: vec![],
                    cache: vec![],
                    counters: Counters::default(),
                    names: vec![],
                },
                credentials_total: 0,
                cache_total: 12_000,
            })),
        };
        let bytes = frame::encode(&page).unwrap();
        assert_eq!(
            frame::decode::<DaemonFrame>(&bytes[frame::HEADER_LEN..]).unwrap(),
            page
        );
        assert_eq!(bytes[frame::HEADER_LEN + 1], 11);
    }
}
