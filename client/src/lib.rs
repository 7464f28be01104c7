//! The azbroker client library: what every program that wants a token links.
//!
//! - [`Client`] talks to `azbrokerd`: connects (starting the daemon when none
//!   runs), sends the chain this process's environment selects, and pipelines
//!   requests over one connection, reconnecting once if the daemon went away.
//! - [`connect`] finds the socket, and starts `azbrokerd` race-free when needed;
//!   [`trust`] checks the socket's directory, file and peer before a byte is sent.
//! - [`advice`] explains a failure (network: dns, certificate, timeout,
//!   refused, proxy; Entra ID: MFA, conditional access, bad secret...) with the
//!   remedy, for every client's error messages and for `azbroker diagnose`.
//! - [`BrokerCredential`] (feature `credential`) is an `azure_core`
//!   `TokenCredential`, so any Azure SDK for Rust client can use the broker.
//! - [`blocking`] asks one thing without an async runtime (the `az` shim's path).
//! - `azure_cli_profile` (features `shim`, `mcp`) reads the Azure CLI's
//!   subscriptions and default subscription.
//!
//! The library is light on purpose: no clap, no MCP; those live in the
//! binaries, behind the default features `cli` (`azbroker`) and `mcp`
//! (`azbroker-mcp`: rmcp and an HTTP client). A program that only wants
//! tokens depends on this crate with `default-features = false, features =
//! ["credential"]` and compiles none of them.

// Unix sockets, peer credentials, process groups and file modes are used
// directly; Windows (named pipes, SID checks) is not implemented yet.
#[cfg(not(unix))]
compile_error!(
    "the azbroker client supports Unix (Linux, macOS) only for now; Windows support is future work"
);

pub mod advice;
#[cfg(any(feature = "shim", feature = "mcp"))]
pub mod azure_cli_profile;
pub mod blocking;
mod client;
pub mod connect;
#[cfg(feature = "credential")]
mod credential;
mod error;
mod reply_reader;
pub mod trust;

pub use azbroker_proto as proto;
pub use client::{Client, ClientOptions};
#[cfg(feature = "credential")]
pub use credential::BrokerCredential;
pub use error::ClientError;
