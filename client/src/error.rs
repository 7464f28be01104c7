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
