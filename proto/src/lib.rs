//! The azbroker wire contract, and nothing else.
//!
//! A client and `azbrokerd` talk over a local socket in length-prefixed frames
//! ([`frame`]) whose bodies are postcard-encoded [`message`]s. A connection
//! opens with [`message::Hello`], which carries the protocol version and the
//! client's [`chain::ChainSpec`] (the credential chain its environment selects);
//! after that, requests may be pipelined and replies carry the request's id.
//! [`handshake`] is a client's side of that opening and [`buffered`] decodes
//! frames straight out of a read buffer; both without I/O, for every reader.
//!
//! This crate knows nothing about sockets, runtimes or Azure SDK types, so the
//! contract can be read, tested and fuzzed on its own. The optional `tokio`
//! feature adds frame read/write helpers over `AsyncRead`/`AsyncWrite`.
//!
//! Compatibility rule: enum variants and struct fields are only ever appended;
//! anything else needs a new [`PROTOCOL_VERSION`].

pub mod audit;
pub mod buffered;
pub mod chain;
pub mod cloud;
pub mod diagnose;
pub mod env;
pub mod error;
pub mod frame;
pub mod handshake;
#[cfg(feature = "tokio")]
pub mod io;
pub mod jwt;
pub mod message;
pub mod paths;
pub mod resource;
pub mod secret;
#[cfg(unix)]
pub mod shim;
pub mod tool;

pub use audit::{AuditJson, AuditOutcome, AuditPage, AuditQuery, AuditRecord, AuditWho};
pub use chain::{ChainError, ChainSpec, CredentialKind, CredentialSpec};
pub use diagnose::{DiagnoseRequest, Diagnosis, Endpoint, NetworkProblem};
pub use error::{CredentialReason, ErrorKind, WireError};
pub use frame::{FrameError, MAX_FRAME_LEN};
pub use message::*;
pub use secret::Secret;
pub use tool::{Tool, ToolSpec};

/// Version of this wire contract. A daemon refuses a client that speaks another.
/// 2: `TokenReply.stale`, status pages (`Request::StatusPage`).
/// 3: tool credentials carry the requester's tool, profile and environment
/// (`tool::ToolSpec`); `ChainSpec.interactive`.
/// 4: `AuditRecord.count` (repeated hits of a connection are one record).
pub const PROTOCOL_VERSION: u32 = 4;
