//! Error kinds that cross the wire.

use serde::{Deserialize, Serialize};

/// What went wrong, coarse enough for a client to act on. Append-only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorKind {
    /// No credential in the chain could be used (not configured, not installed, not logged in).
    CredentialUnavailable,
    /// A credential was configured but the identity provider refused it.
    AuthenticationFailed,
    /// The acquisition did not finish in time.
    Timeout,
    /// The request itself is malformed (bad scope, unknown tenant format, ...).
    InvalidRequest,
    /// The daemon will not serve this client (wrong user, wrong protocol version, shutting down).
    Refused,
    /// A bug or an unexpected failure inside the daemon.
    Internal,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::CredentialUnavailable => "credential unavailable",
            ErrorKind::AuthenticationFailed => "authentication failed",
            ErrorKind::Timeout => "timeout",
            ErrorKind::InvalidRequest => "invalid request",
            ErrorKind::Refused => "refused",
            ErrorKind::Internal => "internal error",
        }
    }
}

/// Why one credential of the chain did not produce a token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialReason {
    /// The credential's name, e.g. `AzureCliCredential`.
    pub credential: String,
    /// `true` when the credential is merely not set up here (the chain moved on);
    /// `false` when it was set up and failed.
    pub unavailable: bool,
    /// Human-readable reason. Never contains a token or secret.
    pub reason: String,
}

/// An error reply: a kind, a one-line message and, for chain failures, each credential's reason.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireError {
    pub kind: ErrorKind,
    pub message: String,
    pub reasons: Vec<CredentialReason>,
}

impl WireError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        WireError {
            kind,
            message: message.into(),
            reasons: Vec::new(),
        }
    }
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.message)?;
        for reason in &self.reasons {
            write!(f, "; {}: {}", reason.credential, reason.reason)?;
        }
        Ok(())
    }
}

impl std::error::Error for WireError {}
