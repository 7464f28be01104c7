//! Credential sources: one adapter per credential kind behind [`TokenSource`].
//!
//! Sources are stateless about caching (the broker caches) and know nothing
//! about actors; a credential actor owns one source and decides when to call it.
//! Wherever `azure_identity` implements a credential, the source is a thin
//! adapter over it; the crate's own caches are bypassed by building a fresh
//! credential object per acquisition (construction is cheap, the HTTP client
//! and its connection pool are shared).

mod azure_cli;
mod azure_developer_cli;
mod azure_powershell;
mod certificate;
mod entra;
mod environment;
pub mod http;
mod interactive_browser;
mod managed_identity;
pub mod process;
mod workload_identity;

use std::sync::Arc;
use std::time::Duration;

use azbroker_proto::{CredentialKind, CredentialSpec, Secret};

pub use azure_cli::AzureCliSource;
pub use azure_developer_cli::AzureDeveloperCliSource;
pub use azure_powershell::AzurePowerShellSource;
pub use environment::EnvironmentSource;
pub use interactive_browser::InteractiveBrowserSource;
pub use managed_identity::ManagedIdentitySource;
pub use workload_identity::WorkloadIdentitySource;

/// What a credential is asked for. Scopes are already validated and normalized.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SourceRequest {
    pub scopes: Vec<String>,
    pub tenant: Option<String>,
    pub claims: Option<String>,
}

/// A token as a source returns it.
#[derive(Debug, Clone)]
pub struct Token {
    pub access_token: Secret,
    /// Expiry, seconds since the epoch.
    pub expires_on: i64,
    /// The server's `refresh_in` hint, in seconds from now, when it sent one.
    pub refresh_in: Option<i64>,
    /// Tenant the token was issued in, when known.
    pub tenant: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceError {
    /// Not set up here (missing settings, tool not installed, not logged in): the chain moves on.
    Unavailable(String),
    /// Set up, but the acquisition failed. `retry_after` comes from a 429's `Retry-After`.
    Failed {
        message: String,
        retry_after: Option<Duration>,
    },
    /// The acquisition did not finish within the source's time limit.
    Timeout(String),
}

impl SourceError {
    pub fn failed(message: impl Into<String>) -> Self {
        SourceError::Failed {
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn message(&self) -> &str {
        match self {
            SourceError::Unavailable(m) | SourceError::Timeout(m) => m,
            SourceError::Failed { message, .. } => message,
        }
    }
}

#[async_trait::async_trait]
pub trait TokenSource: Send + Sync + 'static {
    async fn acquire(&self, request: &SourceRequest) -> Result<Token, SourceError>;

    /// A background refresh: like [`acquire`](Self::acquire), but never asks the
    /// user anything (no browser). Sources that never do are unaffected.
    async fn acquire_silently(&self, request: &SourceRequest) -> Result<Token, SourceError> {
        self.acquire(request).await
    }
}

/// What every source may need from the daemon: the shared HTTP client and settings.
#[derive(Clone)]
pub struct SourceContext {
    pub http: http::HttpClient,
    pub authority_host: String,
    /// Logged-in accounts (InteractiveBrowser).
    pub accounts: Arc<crate::login::Accounts>,
}

/// Builds the source for one credential of a chain.
pub fn build(spec: &CredentialSpec, ctx: &SourceContext) -> Arc<dyn TokenSource> {
    match spec {
        CredentialSpec::Environment { .. } => Arc::new(EnvironmentSource::new(spec.clone(), ctx)),
        CredentialSpec::WorkloadIdentity { .. } => {
            Arc::new(WorkloadIdentitySource::new(spec.clone(), ctx))
        }
        CredentialSpec::ManagedIdentity { .. } => {
            Arc::new(ManagedIdentitySource::new(spec.clone(), ctx))
        }
        CredentialSpec::AzureCli => Arc::new(AzureCliSource::new(azure_cli::TIMEOUT)),
        CredentialSpec::AzurePowerShell => {
            Arc::new(AzurePowerShellSource::new(azure_powershell::TIMEOUT))
        }
        CredentialSpec::AzureDeveloperCli => {
            Arc::new(AzureDeveloperCliSource::new(azure_developer_cli::TIMEOUT))
        }
        CredentialSpec::InteractiveBrowser { .. } => {
            Arc::new(InteractiveBrowserSource::new(spec, ctx))
        }
        other => Arc::new(Unavailable(unimplemented_reason(other.kind()))),
    }
}

/// Whether a kind can ever produce a token in this build. The chain skips the
/// others without starting an actor for them.
pub fn is_implemented(kind: CredentialKind) -> bool {
    matches!(
        kind,
        CredentialKind::Environment
            | CredentialKind::WorkloadIdentity
            | CredentialKind::ManagedIdentity
            | CredentialKind::AzureCli
            | CredentialKind::AzurePowerShell
            | CredentialKind::AzureDeveloperCli
            | CredentialKind::InteractiveBrowser
    )
}

/// Why a kind that [`is_implemented`] rejects is unavailable.
pub fn unimplemented_reason(kind: CredentialKind) -> String {
    if kind == CredentialKind::VisualStudio && !cfg!(windows) {
        return "VisualStudioCredential is only available on Windows".into();
    }
    format!("{} is not implemented yet in azbroker", kind.name())
}

/// A source that is never available, with a fixed reason.
pub struct Unavailable(pub String);

#[async_trait::async_trait]
impl TokenSource for Unavailable {
    async fn acquire(&self, _: &SourceRequest) -> Result<Token, SourceError> {
        Err(SourceError::Unavailable(self.0.clone()))
    }
}

/// The `tid` claim of a JWT access token, when it has one. Read for display
/// and tenant checks only: the token is not verified (it is not ours to verify).
pub fn token_tenant(access_token: &str) -> Option<String> {
    use base64::Engine as _;
    let payload = access_token.split('.').nth(1)?;
    if payload.len() > 16 * 1024 {
        return None;
    }
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&json).ok()?;
    claims.get("tid")?.as_str().map(str::to_string)
}

/// The whole `source()` chain of an error, joined, so that a TLS or DNS cause
/// buried under "error sending request" reaches the user.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![tidy(&err.to_string())];
    let mut next = err.source();
    while let Some(cause) = next {
        let text = tidy(&cause.to_string());
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = cause.source();
    }
    parts.join(": ")
}

/// One line of an `azure_identity` message: without the "XCredential
/// authentication failed." preamble and the troubleshooting link, which say
/// nothing the credential's name in our own reason does not.
pub fn tidy(message: &str) -> String {
    let lines: Vec<&str> = message
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with("To troubleshoot"))
        .collect();
    let text = lines.join(" ");
    match text.split_once("Credential authentication failed.") {
        Some((name, rest)) if !name.contains(' ') => rest.trim().to_string(),
        _ => text,
    }
}
