//! The azbroker client library: what every program that wants a token links.
//!
//! - [`Client`] talks to `azbrokerd`: connects (starting the daemon when none
//!   runs), sends the chain this process's environment selects, and pipelines
//!   requests over one connection, reconnecting once if the daemon went away.
//! - [`connect`] finds the socket, and starts `azbrokerd` race-free when needed;
//!   [`trust`] checks the socket's directory, file and peer before a byte is sent.
//! - [`BrokerCredential`] (feature `credential`) is an `azure_core`
//!   `TokenCredential`, so any Azure SDK for Rust client can use the broker.
//! - [`blocking`] asks one thing without an async runtime (the `az` shim's path).
//! - `azure_cli_profile` (feature `azure-cli-profile`) reads the Azure CLI's
//!   subscriptions and default subscription (for the az shim and `azbroker-mcp`).
//!
//! The library is light on purpose: the programs (`cli/`, `mcp/`) are packages
//! of their own, so a program that only wants tokens compiles no clap, no MCP
//! and no HTTP client; without default features it skips `azure_core` too.

// Unix sockets, peer credentials, process groups and file modes are used
// directly; Windows (named pipes, SID checks) is not implemented yet.
#[cfg(not(unix))]
compile_error!(
    "the azbroker client supports Unix (Linux, macOS) only for now; Windows support is future work"
);

#[cfg(feature = "azure-cli-profile")]
pub mod azure_cli_profile;
pub mod blocking;
mod client;
pub mod connect;
#[cfg(feature = "credential")]
mod credential;
mod error;
mod reply_reader;
pub mod trust;

/// Options for tests that talk to a fake daemon over a socket pair.
#[cfg(test)]
fn test_options(client_name: &str, request_timeout: std::time::Duration) -> ClientOptions {
    ClientOptions {
        socket: "/nonexistent/azbroker.sock".into(),
        chain: proto::ChainSpec {
            authority_host: "https://login.microsoftonline.com".into(),
            credentials: Vec::new(),
            selected_by: "test".into(),
            interactive: true,
        },
        client_name: client_name.into(),
        autostart: false,
        start_with_managed_identity: false,
        request_timeout,
    }
}

pub use azbroker_proto as proto;
pub use client::{Client, ClientOptions};
#[cfg(feature = "credential")]
pub use credential::BrokerCredential;
pub use error::ClientError;
