//! `azbrokerd`: one long-running token broker per user session.
//!
//! Map of the crate (request path, top to bottom):
//! - [`server`] binds the local socket, checks each peer's uid and spawns a task per connection.
//! - [`connection`] turns frames into requests, answers cache hits inline and runs misses as tasks.
//! - [`broker`] owns the shared state: the [`cache`] (fast path), counters, and the chain walk.
//! - [`actors`] holds the ractor tree: a supervisor and one credential actor per credential
//!   identity, which acquires tokens through a [`sources`] adapter and refreshes what it minted.
//! - [`sources`] adapts each credential kind (mostly thin wrappers over `azure_identity`).
//! - [`diagnose`] answers `azbroker diagnose`: endpoint checks with the daemon's own network settings.
//! - [`paths`] decides where the socket, lock and log files live and keeps them private.

pub mod actors;
pub mod broker;
pub mod cache;
pub mod clock;
pub mod connection;
pub mod diagnose;
pub mod identity;
pub mod paths;
pub mod refresh;
pub mod scopes;
pub mod server;
pub mod sources;
pub mod stats;

/// The daemon's version, reported in Welcome and status.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
