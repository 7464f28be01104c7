//! The azbroker client library: what every program that wants a token links.
//!
//! - [`Client`] talks to `azbrokerd`: connects (starting the daemon when none
//!   runs), sends the chain this process's environment selects, and pipelines
//!   requests over one connection, reconnecting once if the daemon went away.
//! - [`connect`] finds the socket, and starts `azbrokerd` race-free when needed.
//! - [`BrokerCredential`] (feature `credential`) is an `azure_core`
//!   `TokenCredential`, so any Azure SDK for Rust client can use the broker.
//!
//! The library is light on purpose: no clap, no MCP; those live in the
//! binaries, behind the default features `cli` (`azbroker`) and `mcp`
//! (`azbroker-mcp`: rmcp and an HTTP client). A program that only wants
//! tokens depends on this crate with `default-features = false, features =
//! ["credential"]` and compiles none of them.

mod client;
pub mod connect;
#[cfg(feature = "credential")]
mod credential;
mod error;

pub use azbroker_proto as proto;
pub use client::{Client, ClientOptions};
#[cfg(feature = "credential")]
pub use credential::BrokerCredential;
pub use error::ClientError;
