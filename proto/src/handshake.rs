//! A client's side of a connection's opening, without I/O: the Hello it
//! sends, how long it waits and how often it tries, and what the daemon's
//! first reply means. The async and the blocking client drive their sockets
//! with it, so both open connections the same way.
//!
//! A daemon that refuses a client (another user, another protocol version,
//! too many connections) answers and closes at once, possibly before the
//! Hello is written. Its refusal is still waiting to be read, and it is what
//! to report: a failed write alone would be retried in vain. So a client
//! writes, then reads whatever the write did, and hands both results to
//! [`first_reply`].

use std::fmt::Display;
use std::time::Duration;

use crate::chain::ChainSpec;
use crate::error::WireError;
use crate::message::{ClientFrame, DaemonFrame, Hello, Reply, Request, RequestId, Welcome};
use crate::PROTOCOL_VERSION;

/// The Hello's request id: it is the first frame of a connection.
pub const HELLO_ID: RequestId = 0;

/// How long a client waits during the opening, and how often it reconnects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandshakePolicy {
    /// How long the daemon may take to answer Hello.
    pub hello_timeout: Duration,
    /// Connections tried in all when the opening breaks (a daemon that is
    /// dying or losing a start race may accept and then reset).
    pub connect_attempts: u32,
    /// The pause after the first broken attempt; it grows by this much per attempt.
    pub retry_pause: Duration,
}

/// What both clients use.
pub const POLICY: HandshakePolicy = HandshakePolicy {
    hello_timeout: Duration::from_secs(10),
    connect_attempts: 3,
    retry_pause: Duration::from_millis(20),
};

impl HandshakePolicy {
    /// The pause before connecting again after attempt `attempt` (counted
    /// from 1) broke; `None` when it was the last.
    pub fn retry_after(&self, attempt: u32) -> Option<Duration> {
        (attempt < self.connect_attempts).then(|| self.retry_pause * attempt)
    }
}

/// The first frame of a connection from this process: the protocol version,
/// who asks, and the chain its environment selects (secrets included: the
/// caller encodes it into a buffer that is wiped).
pub fn hello(client_name: &str, chain: &ChainSpec) -> ClientFrame {
    ClientFrame {
        id: HELLO_ID,
        request: Request::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            client_name: client_name.to_string(),
            pid: std::process::id(),
            chain: chain.clone(),
        }),
    }
}

/// What reading the daemon's first frame came to.
#[derive(Debug)]
pub enum FirstRead<E> {
    Frame(DaemonFrame),
    /// Nothing came within [`HandshakePolicy::hello_timeout`].
    TimedOut,
    /// The read failed (reset, closed, or not a valid frame).
    Failed(E),
}

/// Why a connection's opening did not end in a Welcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// The daemon refused this client (another user, another protocol
    /// version, too many connections, a bad Hello or chain): final. Its
    /// message says why and what to do.
    Refused(WireError),
    /// The connection broke, or the daemon answered something else than
    /// Welcome: worth a fresh connection (see [`HandshakePolicy::retry_after`]).
    Broken(String),
    /// No answer within [`HandshakePolicy::hello_timeout`]: final.
    TimedOut,
}

impl HandshakeFailure {
    /// Whether a fresh connection may succeed where this one failed.
    pub fn worth_retrying(&self) -> bool {
        matches!(self, HandshakeFailure::Broken(_))
    }
}

impl Display for HandshakeFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandshakeFailure::Refused(e) => write!(f, "{e}"),
            HandshakeFailure::Broken(why) => write!(f, "{why}"),
            HandshakeFailure::TimedOut => write!(f, "the daemon did not answer Hello"),
        }
    }
}

impl std::error::Error for HandshakeFailure {}

/// Interprets a connection's opening: how writing the Hello went (`sent`)
/// and what reading the first reply gave (`read`). A reply wins over a
/// failed write, so a refusal that arrived before the write is reported.
pub fn first_reply<S: Display, R: Display>(
    sent: Result<(), S>,
    read: FirstRead<R>,
) -> Result<Welcome, HandshakeFailure> {
    match read {
        FirstRead::Frame(frame) => match frame.reply {
            Reply::Welcome(welcome) => Ok(welcome),
            Reply::Error(refusal) => Err(HandshakeFailure::Refused(refusal)),
            other => Err(HandshakeFailure::Broken(format!(
                "unexpected {} reply",
                other.name()
            ))),
        },
        FirstRead::TimedOut => Err(HandshakeFailure::TimedOut),
        FirstRead::Failed(read) => Err(HandshakeFailure::Broken(match sent {
            Err(sent) => format!("sending Hello: {sent}"),
            Ok(()) => format!("reading Welcome: {read}"),
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn chain() -> ChainSpec {
        ChainSpec {
            authority_host: "https://login.microsoftonline.com".into(),
            credentials: Vec::new(),
            selected_by: "test".into(),
            interactive: true,
        }
    }

    fn welcome() -> Welcome {
        Welcome {
            protocol_version: PROTOCOL_VERSION,
            daemon_version: "0.1.0".into(),
            daemon_pid: 42,
        }
    }

    fn reply(reply: Reply) -> FirstRead<&'static str> {
        FirstRead::Frame(DaemonFrame {
            id: HELLO_ID,
            reply,
        })
    }

    const SENT: Result<(), &str> = Ok(());
    const RESET: Result<(), &str> = Err("connection reset by peer");

    #[test]
    fn the_hello_carries_this_version_process_name_and_chain() {
        let frame = hello("azbroker-cli", &chain());
        assert_eq!(frame.id, HELLO_ID);
        let Request::Hello(hello) = frame.request else {
            panic!("not a Hello: {frame:?}");
        };
        assert_eq!(hello.protocol_version, PROTOCOL_VERSION);
        assert_eq!(hello.client_name, "azbroker-cli");
        assert_eq!(hello.pid, std::process::id());
        assert_eq!(hello.chain, chain());
    }

    #[test]
    fn the_policy_retries_twice_with_growing_pauses() {
        assert_eq!(POLICY.hello_timeout, Duration::from_secs(10));
        assert_eq!(POLICY.retry_after(1), Some(Duration::from_millis(20)));
        assert_eq!(POLICY.retry_after(2), Some(Duration::from_millis(40)));
        assert_eq!(POLICY.retry_after(3), None);
    }

    #[test]
    fn a_welcome_proceeds_even_when_the_write_reported_an_error() {
        assert_eq!(
            first_reply(SENT, reply(Reply::Welcome(welcome()))),
            Ok(welcome())
        );
        assert_eq!(
            first_reply(RESET, reply(Reply::Welcome(welcome()))),
            Ok(welcome())
        );
    }

    /// Each refusal the daemon sends reaches the user with the daemon's own
    /// message, is final, and wins over a write that failed because the
    /// daemon had already closed.
    #[test]
    fn each_refusal_is_final_and_keeps_the_daemons_message() {
        let refusals = [
            WireError::new(
                ErrorKind::Refused,
                "azbrokerd serves only its own user (uid 1000); connections from uid 1001 are refused",
            ),
            WireError::new(
                ErrorKind::Refused,
                "protocol version 1 is not supported: this azbrokerd 0.1.0 speaks version 2; restart it with 'azbroker stop' so a matching daemon starts",
            ),
            WireError::new(
                ErrorKind::Refused,
                "azbrokerd holds 1024 connections (its cap), each with a request in flight",
            ),
            WireError::new(ErrorKind::InvalidRequest, "bad Hello: malformed message"),
            WireError::new(
                ErrorKind::InvalidRequest,
                "the authority host must be an https:// URL",
            ),
        ];
        for refusal in refusals {
            for sent in [SENT, RESET] {
                let failure = first_reply(sent, reply(Reply::Error(refusal.clone()))).unwrap_err();
                assert_eq!(failure, HandshakeFailure::Refused(refusal.clone()));
                assert!(!failure.worth_retrying());
                assert_eq!(failure.to_string(), refusal.message);
            }
        }
    }

    #[test]
    fn another_reply_than_welcome_is_a_broken_opening() {
        let failure = first_reply(SENT, reply(Reply::ShuttingDown)).unwrap_err();
        assert_eq!(
            failure,
            HandshakeFailure::Broken("unexpected ShuttingDown reply".into())
        );
        assert!(failure.worth_retrying());
    }

    #[test]
    fn a_failed_read_blames_the_write_when_the_write_failed_first() {
        let read = || FirstRead::Failed("early eof");
        assert_eq!(
            first_reply(RESET, read()),
            Err(HandshakeFailure::Broken(
                "sending Hello: connection reset by peer".into()
            ))
        );
        assert_eq!(
            first_reply(SENT, read()),
            Err(HandshakeFailure::Broken(
                "reading Welcome: early eof".into()
            ))
        );
        assert!(first_reply(SENT, read()).unwrap_err().worth_retrying());
    }

    #[test]
    fn no_answer_in_time_is_final() {
        for sent in [SENT, RESET] {
            let failure = first_reply(sent, FirstRead::<&str>::TimedOut).unwrap_err();
            assert_eq!(failure, HandshakeFailure::TimedOut);
            assert!(!failure.worth_retrying());
            assert_eq!(failure.to_string(), "the daemon did not answer Hello");
        }
    }
}
