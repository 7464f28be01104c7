//! `azbroker`: the command line of the token broker.
//!
//! Runs on a current-thread runtime: a CLI on the hot path of scripts should
//! not pay for starting worker threads it does not need.

mod mcp_config;
mod output;

use std::process::ExitCode;

use azbroker_client::{Client, ClientError, ClientOptions};
use azbroker_proto::GetToken;
use clap::{Parser, Subcommand};

/// Entra ID tokens for every tool of this user session, from one shared broker.
#[derive(Parser, Debug)]
#[command(name = "azbroker", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print an access token (JSON, or only the token with --raw).
    Token {
        /// Scope to request, e.g. https://management.azure.com/.default (repeatable).
        #[arg(long, required = true)]
        scope: Vec<String>,
        /// Tenant to authenticate in.
        #[arg(long)]
        tenant: Option<String>,
        /// Print only the access token.
        #[arg(long)]
        raw: bool,
        /// The token must stay valid at least this many seconds [default: 300].
        #[arg(long, value_name = "SECS")]
        min_validity: Option<u32>,
        /// A claims challenge from a resource (bypasses the cache).
        #[arg(long)]
        claims: Option<String>,
    },
    /// Show the daemon's health, cached tokens (never the tokens themselves) and counters.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Stop the daemon.
    Stop,
    /// Print the JSON that registers azbroker-mcp with an MCP client.
    McpConfig {
        /// The client whose configuration format to print.
        #[arg(long, value_enum, default_value = "generic")]
        client: mcp_config::McpClient,
    },
}

/// Exit codes: 0 success, 1 the broker answered with an error, 2 usage
/// (clap), 3 the broker could not be reached.
fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return fail(&format!("cannot start the runtime: {e}"), 3),
    };
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> ExitCode {
    if let Command::McpConfig { client } = cli.command {
        // Needs no daemon and no credential chain.
        let snippet = mcp_config::snippet(client);
        println!("{}", serde_json::to_string_pretty(&snippet).expect("JSON"));
        return ExitCode::SUCCESS;
    }
    let options = match ClientOptions::from_env("azbroker-cli") {
        Ok(options) => options,
        Err(e) => return fail(&e.to_string(), 2),
    };
    match cli.command {
        Command::Token {
            scope,
            tenant,
            raw,
            min_validity,
            claims,
        } => {
            let client = Client::new(options);
            let request = GetToken {
                scopes: scope,
                tenant,
                claims,
                min_validity_secs: min_validity.unwrap_or(0),
            };
            match client.get_token(request).await {
                Ok(token) => {
                    output::token(&token, raw);
                    ExitCode::SUCCESS
                }
                Err(e) => client_error(&e),
            }
        }
        Command::Status { json } => {
            let client = Client::new(ClientOptions {
                autostart: false,
                ..options
            });
            match client.status().await {
                Ok(status) => {
                    output::status(&status, json);
                    ExitCode::SUCCESS
                }
                Err(e) => client_error(&e),
            }
        }
        Command::Stop => {
            let client = Client::new(ClientOptions {
                autostart: false,
                ..options
            });
            match client.shutdown().await {
                Ok(()) => {
                    eprintln!("azbroker: daemon stopping");
                    ExitCode::SUCCESS
                }
                Err(ClientError::Connect(_)) => {
                    eprintln!("azbroker: no daemon running");
                    ExitCode::SUCCESS
                }
                Err(e) => client_error(&e),
            }
        }
        Command::McpConfig { .. } => unreachable!("handled before the broker options"),
    }
}

/// One line for the error, then one per credential reason.
fn client_error(e: &ClientError) -> ExitCode {
    match e {
        ClientError::Daemon(wire) => {
            eprintln!("azbroker: error: {} ({})", wire.message, wire.kind.as_str());
            for reason in &wire.reasons {
                eprintln!("  - {}: {}", reason.credential, reason.reason);
            }
            ExitCode::from(1)
        }
        ClientError::Config(m) => fail(m, 2),
        other => fail(&other.to_string(), 3),
    }
}

fn fail(message: &str, code: u8) -> ExitCode {
    eprintln!("azbroker: error: {message}");
    ExitCode::from(code)
}
