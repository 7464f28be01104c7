//! `azbrokerd`: one long-running token broker per user session.
//!
//! Map of the crate (request path, top to bottom):
//! - [`server`] binds the local socket, or takes the one socket activation passed
//!   (`server/activation.rs`), reports readiness (`server/notify.rs`), checks each peer's
//!   uid and spawns a task per connection.
//! - [`connection`] turns frames into requests, answers cache hits inline and runs misses as tasks.
//! - [`session`] checks a client's Hello (its chain) and holds what it establishes.
//! - [`connection_table`] admits connections (per-process cap, the longest-quiet one gives
//!   way when full) and closes idle ones.
//! - [`broker`] owns the shared state: the [`cache`] (hit path), counters, and the chain walk
//!   (miss path); status and login/logout requests read it from its submodules.
//! - [`actors`] holds the ractor tree: a supervisor and one credential actor per credential
//!   identity, which acquires tokens through a [`sources`] adapter and refreshes what it minted.
//! - [`sources`] adapts each credential kind (mostly thin wrappers over `azure_identity`).
//! - [`login`] runs browser and device-code logins and persists their accounts'
//!   refresh tokens; one account actor per account owns each refresh token.
//! - [`diagnose`] answers `azbroker diagnose`: endpoint checks with the daemon's own network settings.
//! - [`paths`] decides where the socket, lock and log files live and keeps them private.
//! - [`bounded_file`] reads the small files a client names (certificate, federated token)
//!   without blocking on a FIFO or device, bounded in size and time.
//! - [`mi_endpoint`] (optional) serves the App Service managed-identity protocol on
//!   127.0.0.1 from the daemon's own chain; [`tcp_owner`] finds who owns a loopback peer.

// Unix sockets, peer credentials, process groups and file modes are used
// directly; Windows (named pipes, SID checks) is not implemented yet.
#[cfg(not(unix))]
compile_error!(
    "azbrokerd supports Unix (Linux, macOS) only for now; Windows support is future work"
);

pub mod actors;
pub mod audit;
pub mod bounded_file;
pub mod broker;
pub mod cache;
pub mod child_env;
pub mod clock;
pub mod connection;
pub mod connection_table;
pub mod diagnose;
pub mod error_chain;
pub mod harden;
pub mod http;
pub mod identity;
pub mod log_escape;
pub mod login;
pub mod memory;
pub mod mi_endpoint;
pub mod paths;
pub mod policy;
pub mod refresh;
pub mod scopes;
pub mod server;
pub mod session;
pub mod sources;
pub mod stats;
pub mod status_page;
pub mod tcp_owner;
pub mod token_source;
pub mod tool_logins;

/// The daemon's version, reported in Welcome and status.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
