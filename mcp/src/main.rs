//! `azbroker-mcp`: an MCP server (stdio) with Azure tools whose tokens come
//! from the per-user azbroker daemon, so every MCP client of the session
//! shares one sign-in and one token cache.
//!
//! - `server.rs`: the server object and what tools share (broker client,
//!   endpoints, HTTP client), all created lazily on the first tool call.
//! - `tools.rs`: tool names, descriptions, input schemas, result envelopes.
//! - `status.rs`, `arm.rs`, `storage.rs`: what each tool does.
//! - `http.rs`: the HTTP client (trusted roots like the daemon's), bounded
//!   bodies, the claims-challenge retry.
//! - `errors.rs`: the Azure MCP Server's result and error shape.
//! - `endpoints.rs`: clouds and the Resource Manager override.
//!
//! stdout carries only MCP messages; logs go to stderr (`AZBROKER_MCP_LOG`,
//! e.g. `info` or `azbroker_mcp=debug`; `warn` by default). This binary holds
//! no credential code: every token comes from the daemon.

mod arm;
mod endpoints;
mod errors;
mod http;
mod server;
mod status;
mod storage;
mod tools;

use std::process::ExitCode;

use rmcp::ServiceExt as _;
use tracing_subscriber::EnvFilter;

const USAGE: &str = "\
azbroker-mcp: an MCP server (stdio) with Azure tools that share the azbroker daemon's tokens.

Usage: azbroker-mcp [--version | --help]

Started by an MCP client, which talks to it over stdin/stdout. Print the
configuration snippet for a client with: azbroker mcp-config --client vscode|claude|generic

Environment: the credential chain variables of azbroker (AZURE_TOKEN_CREDENTIALS, ...),
AZURE_CLOUD, AZBROKER_ARM_ENDPOINT (https Resource Manager base URL), AZBROKER_SOCKET,
AZBROKER_CA_FILE, AZBROKER_MCP_LOG (log filter for stderr).";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [] => {}
        ["--version" | "-V"] => {
            println!("azbroker-mcp {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        ["--help" | "-h"] => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => {
            eprintln!("azbroker-mcp: unexpected arguments {args:?}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("AZBROKER_MCP_LOG").unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    // One thread: the work is waiting on the daemon, Azure and stdio, and a
    // server that starts per editor window should start fast and stay small.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("azbroker-mcp: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(serve()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("azbroker-mcp: {e}");
            ExitCode::from(1)
        }
    }
}

async fn serve() -> Result<(), String> {
    let server = server::AzbrokerMcp::new(server::Context::from_env());
    let running = server
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| format!("MCP session failed to start: {e}"))?;
    let reason = running
        .waiting()
        .await
        .map_err(|e| format!("MCP session ended abnormally: {e}"))?;
    tracing::info!(?reason, "MCP session ended");
    Ok(())
}
