//! `azbroker`: the command line of the token broker.
//!
//! Runs on a current-thread runtime: a CLI on the hot path of scripts should
//! not pay for starting worker threads it does not need.

mod output;

use std::process::ExitCode;

use azbroker_client::{Client, ClientError, ClientOptions};
use azbroker_proto::{GetToken, Login, LoginMethod, Logout};
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
    /// Log in inside the daemon, once for every client: opens a browser, or
    /// prints a code to enter on another device with --device-code.
    Login {
        /// Show a URL and a code instead of opening a browser (SSH, WSL, containers).
        #[arg(long)]
        device_code: bool,
        /// Tenant to log in to [default: $AZURE_TENANT_ID, else organizations].
        #[arg(long)]
        tenant: Option<String>,
        /// Scope of the first token [default: Resource Manager of the cloud] (repeatable).
        #[arg(long)]
        scope: Vec<String>,
    },
    /// Forget the logged-in account (refresh token) and drop its cached tokens.
    Logout {
        /// Forget every logged-in account.
        #[arg(long)]
        all: bool,
        /// Tenant of the account to forget [default: $AZURE_TENANT_ID, else organizations].
        #[arg(long, conflicts_with = "all")]
        tenant: Option<String>,
    },
    /// Stop the daemon.
    Stop,
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
        Command::Login {
            device_code,
            tenant,
            scope,
        } => {
            let timeout_secs = match browser_timeout() {
                Ok(secs) => secs,
                Err(e) => return fail(&e, 2),
            };
            let login = Login {
                method: if device_code {
                    LoginMethod::DeviceCode
                } else {
                    LoginMethod::Browser
                },
                tenant: tenant.or_else(|| env_text("AZURE_TENANT_ID")),
                client_id: env_text("AZURE_MCP_CLIENT_ID"),
                scopes: scope,
                timeout_secs,
            };
            if !device_code {
                eprintln!("azbroker: opening a browser to sign in (azbroker login --device-code shows a code instead)");
            }
            let client = Client::new(options);
            match client.login(login, |message| eprintln!("{message}")).await {
                Ok(done) => {
                    output::logged_in(&done);
                    ExitCode::SUCCESS
                }
                Err(e) => client_error(&e),
            }
        }
        Command::Logout { all, tenant } => {
            let client = Client::new(options);
            let logout = Logout {
                all,
                tenant: tenant.or_else(|| env_text("AZURE_TENANT_ID")),
                client_id: env_text("AZURE_MCP_CLIENT_ID"),
            };
            match client.logout(logout).await {
                Ok((accounts, tokens)) => {
                    println!(
                        "azbroker: forgot {accounts} account(s) and dropped {tokens} cached token(s)"
                    );
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

/// A non-empty environment variable.
fn env_text(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// `AZURE_MCP_BROWSER_AUTH_TIMEOUT_SECONDS`, 0 when unset (the daemon's default).
fn browser_timeout() -> Result<u32, String> {
    match env_text("AZURE_MCP_BROWSER_AUTH_TIMEOUT_SECONDS") {
        None => Ok(0),
        Some(raw) => raw.trim().parse::<u32>().ok().filter(|s| *s > 0).ok_or_else(|| {
            format!("AZURE_MCP_BROWSER_AUTH_TIMEOUT_SECONDS: {raw:?} is not a positive number of seconds")
        }),
    }
}

fn fail(message: &str, code: u8) -> ExitCode {
    eprintln!("azbroker: error: {message}");
    ExitCode::from(code)
}
