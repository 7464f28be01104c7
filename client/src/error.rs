use std::time::Duration;

use azbroker_proto::handshake::{HandshakeFailure, POLICY};
use azbroker_proto::WireError;

/// Why a request did not produce an answer.
#[derive(Debug)]
pub enum ClientError {
    /// The daemon could not be reached or started.
    Connect(String),
    /// What listens at the socket path may not be this user's daemon (see
    /// `trust`): nothing was sent, and nothing is retried or started.
    Untrusted(String),
    /// The daemon answered with an error (it carries each credential's reason).
    Daemon(WireError),
    /// The connection broke, or the daemon said something unexpected.
    Protocol(String),
    /// No answer in time.
    Timeout(String),
    /// This process's environment selects no usable chain.
    Config(String),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Connect(m) => write!(f, "cannot reach azbrokerd: {m}"),
            ClientError::Untrusted(m) => write!(f, "{m}"),
            ClientError::Daemon(e) => write!(f, "{e}"),
            ClientError::Protocol(m) => write!(f, "broker connection failed: {m}"),
            ClientError::Timeout(m) => write!(f, "timed out: {m}"),
            ClientError::Config(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for ClientError {}

impl ClientError {
    /// The pause before connecting afresh after attempt `attempt` (counted
    /// from 1) failed with this error: only a broken connection is worth
    /// another, and only as often as the handshake policy says.
    pub(crate) fn retry_after(&self, attempt: u32) -> Option<Duration> {
        match self {
            ClientError::Protocol(_) => POLICY.retry_after(attempt),
            _ => None,
        }
    }
}

impl From<HandshakeFailure> for ClientError {
    fn from(failure: HandshakeFailure) -> Self {
        match failure {
            HandshakeFailure::Refused(refusal) => ClientError::Daemon(refusal),
            HandshakeFailure::Broken(why) => ClientError::Protocol(why),
            HandshakeFailure::TimedOut => ClientError::Timeout(failure.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use azbroker_proto::ErrorKind;

    /// What the user reads for each way an opening fails, and which are retried.
    #[test]
    fn each_handshake_failure_becomes_its_client_error() {
        let refusal = WireError::new(
            ErrorKind::Refused,
            "azbrokerd serves only its own user (uid 1000); connections from uid 1001 are refused",
        );
        let refused = ClientError::from(HandshakeFailure::Refused(refusal.clone()));
        assert!(matches!(&refused, ClientError::Daemon(e) if *e == refusal));
        assert_eq!(refused.to_string(), refusal.message);
        assert_eq!(refused.retry_after(1), None);

        let broken = ClientError::from(HandshakeFailure::Broken(
            "reading Welcome: early eof".into(),
        ));
        assert_eq!(
            broken.to_string(),
            "broker connection failed: reading Welcome: early eof"
        );
        assert_eq!(broken.retry_after(1), Some(Duration::from_millis(20)));
        assert_eq!(broken.retry_after(2), Some(Duration::from_millis(40)));
        assert_eq!(broken.retry_after(POLICY.connect_attempts), None);

        let timed_out = ClientError::from(HandshakeFailure::TimedOut);
        assert_eq!(
            timed_out.to_string(),
            "timed out: the daemon did not answer Hello"
        );
        assert_eq!(timed_out.retry_after(1), None);
    }
}
