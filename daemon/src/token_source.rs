//! What a credential source is, for those who call one (credential and account
//! actors, the cache, the broker) and those who implement one (`sources/`,
//! `login/`): the request, the token, the error, and the [`TokenSource`] trait.
//! It sits below both so that neither needs the other's module to speak.

#[cfg(test)]
pub mod scripted;

use std::time::Duration;

use azbroker_proto::Secret;

/// What a credential is asked for. Scopes are already validated and normalized.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SourceRequest {
    pub scopes: Vec<String>,
    pub tenant: Option<String>,
    pub claims: Option<String>,
    /// Whether the credential may ask the user (open a browser). `false` for
    /// the standard doors (the `az` shim, the managed-identity endpoint):
    /// they are served from logins that exist, or fail fast.
    pub interactive: bool,
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

    /// Why this source cannot serve `request` by construction (a tool that
    /// takes one scope per token, say), if it cannot. Checked before acquiring:
    /// such a request is answered "unavailable" without an attempt and without
    /// counting against the credential's health, since the request is at
    /// fault, not the credential.
    fn unsupported(&self, _request: &SourceRequest) -> Option<String> {
        None
    }

    /// A background refresh: like [`acquire`](Self::acquire), but never asks the
    /// user anything (no browser). Sources that never do are unaffected.
    async fn acquire_silently(&self, request: &SourceRequest) -> Result<Token, SourceError> {
        self.acquire(request).await
    }
}
