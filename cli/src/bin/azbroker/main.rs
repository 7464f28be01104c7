//! `azbroker`: the command line of the token broker.
//!
//! `azbroker token`, the hot path of scripts, parses only its own arguments
//! (not the whole command tree) and asks through the blocking client with no
//! async runtime; the other commands run on a current-thread runtime (no
//! worker threads they would not use).

mod audit;
mod exec;
mod mcp_config;
mod mi_env;
mod output;
mod service;
mod shim;

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use azbroker_cli::advice;
use azbroker_client::{blocking, Client, ClientError, ClientOptions};
use azbroker_proto::{CredentialKind, GetToken, Login, LoginMethod, Logout, RegisterExec};
use clap::{Parser, Subcommand};

/// Entra ID tokens for every tool of this user session, from one shared broker.
#[derive(Parser, Debug)]
#[command(name = "azbroker", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

const TOKEN_ABOUT: &str = "Print an access token (JSON, or only the token with --raw)";

// `azbroker token` on its own: what `main` parses when that is the command.
// Building clap's tree of every command and option was a third of this
// command's start-up, which scripts pay once per token.
#[derive(Parser, Debug)]
#[command(name = "token", bin_name = "azbroker token", about = TOKEN_ABOUT)]
struct TokenCli {
    #[command(flatten)]
    args: TokenArgs,
}

/// The arguments of `azbroker token`.
#[derive(clap::Args, Debug)]
struct TokenArgs {
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
}

#[derive(Subcommand, Debug)]
enum Command {
    #[command(about = TOKEN_ABOUT)]
    Token(TokenArgs),
    /// Show the daemon's health, cached tokens (never the tokens themselves) and counters.
    Status {
        #[arg(long)]
        json: bool,
        /// Show at most N cached tokens; 0 shows all [default: 100, all with --json].
        #[arg(long, value_name = "N")]
        limit: Option<u64>,
    },
    /// Show recorded token requests: when, who asked (exec NAME, executable and
    /// pid, client), for which scopes, and what came of it (hit, acquired,
    /// refreshed, denied, failed). Never a token.
    Audit {
        /// Keep printing requests as they come, until interrupted.
        #[arg(long)]
        follow: bool,
        /// One JSON object per line: time, name, client, pid, exe, scopes,
        /// tenant, credential, outcome.
        #[arg(long)]
        json: bool,
        /// Only requests of the last DURATION, e.g. 90s, 15m, 2h, 1d.
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        since: Option<std::time::Duration>,
        /// Only requests under this exec NAME.
        #[arg(long)]
        name: Option<String>,
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
    /// Drop cached tokens, so the next request fetches new ones (the daemon
    /// also does this by itself when an `az`, `azd` or PowerShell login changes).
    Invalidate {
        /// Drop every cached token.
        #[arg(long, conflicts_with_all = ["credential", "scope"])]
        all: bool,
        /// Only tokens minted by this credential, e.g. AzureCliCredential or AzureCli (repeatable).
        #[arg(long, value_name = "KIND", value_parser = parse_credential_kind)]
        credential: Vec<CredentialKind>,
        /// Only tokens of exactly this scope (repeatable: a multi-scope token).
        #[arg(long)]
        scope: Vec<String>,
    },
    /// Forget the logged-in account (refresh token) and drop every cached token.
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
    /// Print the JSON that registers an MCP server with an MCP client: azbroker-mcp,
    /// or with `--name NAME -- COMMAND...` any server, started through `azbroker exec`.
    McpConfig {
        /// The client whose configuration format to print.
        #[arg(long, value_enum, default_value = "generic")]
        client: mcp_config::McpClient,
        /// The server's name in the configuration and its exec NAME (needed with a COMMAND).
        #[arg(long, requires = "command")]
        name: Option<String>,
        /// Passed to `azbroker exec --allow-scope` (repeatable).
        #[arg(long, value_name = "PATTERN", requires = "command")]
        allow_scope: Vec<String>,
        /// Passed to `azbroker exec --deny-scope` (repeatable).
        #[arg(long, value_name = "PATTERN", requires = "command")]
        deny_scope: Vec<String>,
        /// Wrap COMMAND (implied by giving one; accepted for clarity).
        #[arg(long, requires = "command")]
        wrap: bool,
        /// The wrapped server also gets the managed-identity variables.
        #[arg(long, requires = "command")]
        managed_identity: bool,
        /// The MCP server to wrap, after `--`, e.g. `-- npx -y @azure/mcp@latest server start`.
        #[arg(last = true, value_name = "COMMAND", requires = "name")]
        command: Vec<OsString>,
    },
    /// Run COMMAND with the broker's doors wired in: the az shim first on its PATH
    /// (installed on demand), and with --managed-identity IDENTITY_ENDPOINT and
    /// IDENTITY_HEADER of the running daemon. COMMAND replaces this process:
    /// its stdio, signals and exit status are its own.
    Exec {
        /// The name COMMAND and everything it starts ask for tokens under (audit,
        /// policy). Registered with the daemon before COMMAND starts.
        #[arg(long)]
        name: Option<String>,
        /// Only scopes matching this pattern, e.g. https://storage.azure.com/* or an
        /// exact scope (repeatable; needs --name).
        #[arg(long, value_name = "PATTERN", requires = "name")]
        allow_scope: Vec<String>,
        /// Never scopes matching this pattern, e.g. https://vault.azure.net/*
        /// (repeatable; needs --name).
        #[arg(long, value_name = "PATTERN", requires = "name")]
        deny_scope: Vec<String>,
        /// Also set IDENTITY_ENDPOINT and IDENTITY_HEADER (starts a daemon serving them).
        #[arg(long)]
        managed_identity: bool,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true, value_name = "COMMAND")]
        command: Vec<OsString>,
    },
    /// Check the environment, daemon, network and credentials, and say what to fix
    /// (`azbroker diagnose --help` lists its options).
    #[command(disable_help_flag = true)]
    Diagnose {
        /// Passed to azbroker-diagnose.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// The `az` token shim: existing tools get the broker's tokens through `az`.
    Shim {
        #[command(subcommand)]
        command: ShimCommand,
    },
    /// Print variables for `eval`, e.g. the managed-identity endpoint. Values are
    /// checked and quoted; on failure the output is `false`, so the eval fails.
    Env {
        /// IDENTITY_ENDPOINT and IDENTITY_HEADER of the daemon's managed-identity
        /// endpoint (a daemon started by this command serves one).
        #[arg(long, required = true)]
        managed_identity: bool,
        /// NAME=value lines (for .env files and configs) instead of `export` lines.
        #[arg(long)]
        plain: bool,
    },
    /// Run azbrokerd under the user's service manager (systemd user units with
    /// socket activation), so it starts with the session's environment rather
    /// than the first client's.
    Service {
        #[command(subcommand)]
        command: service::ServiceCommand,
    },
    /// Print a shell completion script, e.g. `azbroker completions bash > ~/.local/share/bash-completion/completions/azbroker`.
    Completions {
        /// The shell to complete in.
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand, Debug)]
enum ShimCommand {
    /// Create DIR/az (a link to azbroker-az-shim) and print the line that puts DIR first on PATH.
    Install {
        /// Directory for `az` [default: $XDG_DATA_HOME/azbroker/shim, else ~/.local/share/azbroker/shim].
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Copy the shim instead of linking to it.
        #[arg(long)]
        copy: bool,
    },
    /// Print the line that puts the shim directory first on PATH.
    Env {
        /// The directory given to `shim install`.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

/// Exit codes: 0 success, 1 the broker answered with an error, 2 usage
/// (clap), 3 the broker could not be reached.
fn main() -> ExitCode {
    let mut args = std::env::args_os();
    if args.nth(1).is_some_and(|command| command == "token") {
        // The same arguments and errors as through `Cli`, without the rest of the tree.
        let cli = TokenCli::try_parse_from(std::iter::once(OsString::from("token")).chain(args))
            .unwrap_or_else(|e| e.exit());
        return token(cli.args);
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // `eval "$(azbroker env ...)"` must fail on a usage error too.
            if e.use_stderr() && std::env::args_os().nth(1).is_some_and(|a| a == "env") {
                println!("{}", mi_env::EVAL_FAILS);
            }
            e.exit()
        }
    };
    // One arm per command; each command owns its set-up (a runtime only where
    // it talks to the daemon asynchronously).
    match cli.command {
        Command::Token(args) => token(args),
        Command::Status { json, limit } => with_runtime(status(json, limit)),
        Command::Audit {
            follow,
            json,
            since,
            name,
        } => with_runtime(async move {
            match daemon_client(false) {
                Ok(client) => audit::run(client, audit::Filter { since, name }, json, follow).await,
                Err(code) => code,
            }
        }),
        Command::Login {
            device_code,
            tenant,
            scope,
        } => with_runtime(login(device_code, tenant, scope)),
        Command::Invalidate {
            all,
            credential,
            scope,
        } => {
            if !all && credential.is_empty() && scope.is_empty() {
                return fail(
                    "say which tokens to drop: --all, --credential KIND or --scope SCOPE",
                    2,
                );
            }
            with_runtime(invalidate(credential, scope))
        }
        Command::Logout { all, tenant } => with_runtime(logout(all, tenant)),
        Command::Stop => with_runtime(stop()),
        Command::McpConfig {
            client,
            name,
            allow_scope,
            deny_scope,
            managed_identity,
            command,
            ..
        } => mcp_config(
            client,
            name,
            mcp_config::Limits {
                allow: allow_scope,
                deny: deny_scope,
                managed_identity,
            },
            &command,
        ),
        Command::Exec {
            name,
            allow_scope,
            deny_scope,
            managed_identity,
            command,
        } => {
            let register = name.map(|name| RegisterExec {
                name,
                allow_scopes: allow_scope,
                deny_scopes: deny_scope,
            });
            exec_command(&command, register, managed_identity)
        }
        // Diagnose reads the environment itself: a broken one is what it reports on.
        Command::Diagnose { args } => diagnose(args),
        Command::Shim { command } => shim_command(&command),
        Command::Env { plain, .. } => env_command(plain),
        Command::Completions { shell } => completions(shell),
        Command::Service { command } => service::run(command),
    }
}

/// Runs a command's future on a current-thread runtime.
fn with_runtime(command: impl std::future::Future<Output = ExitCode>) -> ExitCode {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(command),
        Err(e) => fail(&format!("cannot start the runtime: {e}"), 3),
    }
}

/// The client's options from the environment; a bad one is a usage error.
fn client_options() -> Result<ClientOptions, ExitCode> {
    ClientOptions::from_env("azbroker-cli").map_err(|e| fail(&e.to_string(), 2))
}

/// A client from the environment. `autostart: false` for commands that have
/// nothing to do with a daemon they would start (status, stop).
fn daemon_client(autostart: bool) -> Result<Client, ExitCode> {
    let options = client_options()?;
    Ok(Client::new(ClientOptions {
        autostart: options.autostart && autostart,
        ..options
    }))
}

fn completions(shell: clap_complete::Shell) -> ExitCode {
    use clap::CommandFactory;
    clap_complete::generate(
        shell,
        &mut Cli::command(),
        "azbroker",
        &mut std::io::stdout(),
    );
    ExitCode::SUCCESS
}

/// Needs no daemon and no credential chain.
fn mcp_config(
    client: mcp_config::McpClient,
    name: Option<String>,
    limits: mcp_config::Limits,
    command: &[OsString],
) -> ExitCode {
    let snippet = match name {
        Some(name) => match mcp_config::wrapped_snippet(client, &name, command, &limits) {
            Ok(snippet) => snippet,
            Err(e) => return fail(&e, 2),
        },
        None => mcp_config::snippet(client),
    };
    println!("{}", serde_json::to_string_pretty(&snippet).expect("JSON"));
    ExitCode::SUCCESS
}

/// The program behind `azbroker diagnose`.
const DIAGNOSE_BINARY: &str = "azbroker-diagnose";

/// A companion program installed beside this `azbroker`.
pub fn beside_this_program(name: &str) -> Result<PathBuf, String> {
    let exe = std::env::current_exe()
        .and_then(std::fs::canonicalize)
        .map_err(|e| format!("cannot find this program's location: {e}"))?;
    let binary = exe.with_file_name(name);
    if binary.is_file() {
        Ok(binary)
    } else {
        Err(format!(
            "{} is missing: install it beside {} (cargo build/install builds all of azbroker's programs)",
            binary.display(),
            exe.display()
        ))
    }
}

/// Runs `azbroker-diagnose` (beside this program) in this process's place.
fn diagnose(args: Vec<OsString>) -> ExitCode {
    let binary = match beside_this_program(DIAGNOSE_BINARY) {
        Ok(binary) => binary,
        Err(e) => return fail(&e, 3),
    };
    let e = std::process::Command::new(&binary).args(args).exec();
    fail(&format!("cannot run {}: {e}", binary.display()), 3)
}

/// The hot path of scripts: one blocking exchange (Hello and request in one
/// write), no async runtime to start.
fn token(args: TokenArgs) -> ExitCode {
    let TokenArgs {
        scope,
        tenant,
        raw,
        min_validity,
        claims,
    } = args;
    let request = GetToken {
        scopes: scope,
        tenant,
        claims,
        min_validity_secs: min_validity.unwrap_or(0),
    };
    let options = match client_options() {
        Ok(options) => options,
        Err(code) => return code,
    };
    match blocking::get_token(&options, request) {
        Ok(token) => {
            output::token(&token, raw);
            ExitCode::SUCCESS
        }
        Err(e) => client_error(&e),
    }
}

async fn status(json: bool, limit: Option<u64>) -> ExitCode {
    let client = match daemon_client(false) {
        Ok(client) => client,
        Err(code) => return code,
    };
    let limit = match (limit, json) {
        (Some(0), _) | (None, true) => None,
        (Some(n), _) => Some(n),
        (None, false) => Some(output::STATUS_ENTRIES_SHOWN),
    };
    match client.status_with_limit(limit).await {
        Ok(status) => {
            output::status(&status, json);
            ExitCode::SUCCESS
        }
        Err(e) => client_error(&e),
    }
}

async fn login(device_code: bool, tenant: Option<String>, scopes: Vec<String>) -> ExitCode {
    let client = match daemon_client(true) {
        Ok(client) => client,
        Err(code) => return code,
    };
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
        scopes,
        timeout_secs,
    };
    if !device_code {
        eprintln!(
            "azbroker: opening a browser to sign in (azbroker login --device-code shows a code instead)"
        );
    }
    match client.login(login, |message| eprintln!("{message}")).await {
        Ok(done) => {
            output::logged_in(&done);
            ExitCode::SUCCESS
        }
        Err(e) => client_error(&e),
    }
}

async fn logout(all: bool, tenant: Option<String>) -> ExitCode {
    let client = match daemon_client(true) {
        Ok(client) => client,
        Err(code) => return code,
    };
    let logout = Logout {
        all,
        tenant: tenant.or_else(|| env_text("AZURE_TENANT_ID")),
        client_id: env_text("AZURE_MCP_CLIENT_ID"),
    };
    match client.logout(logout).await {
        Ok((accounts, tokens)) => {
            println!("azbroker: forgot {accounts} account(s) and dropped {tokens} cached token(s)");
            ExitCode::SUCCESS
        }
        Err(e) => client_error(&e),
    }
}

async fn invalidate(credentials: Vec<CredentialKind>, scopes: Vec<String>) -> ExitCode {
    let client = match daemon_client(false) {
        Ok(client) => client,
        Err(code) => return code,
    };
    match client.invalidate(scopes, credentials).await {
        Ok(removed) => {
            println!("azbroker: dropped {removed} cached token(s)");
            ExitCode::SUCCESS
        }
        Err(ClientError::Connect(_)) => {
            println!("azbroker: no daemon running, so nothing is cached");
            ExitCode::SUCCESS
        }
        Err(e) => client_error(&e),
    }
}

/// A credential kind as `AZURE_TOKEN_CREDENTIALS` spells it, with or without
/// the `Credential` suffix, in any case.
fn parse_credential_kind(name: &str) -> Result<CredentialKind, String> {
    CredentialKind::ALL
        .into_iter()
        .find(|kind| {
            let full = kind.name();
            full.eq_ignore_ascii_case(name)
                || full
                    .strip_suffix("Credential")
                    .is_some_and(|short| short.eq_ignore_ascii_case(name))
        })
        .ok_or_else(|| {
            let names: Vec<&str> = CredentialKind::ALL.iter().map(|k| k.name()).collect();
            format!("not a credential: use one of {}", names.join(", "))
        })
}

async fn stop() -> ExitCode {
    let client = match daemon_client(false) {
        Ok(client) => client,
        Err(code) => return code,
    };
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

fn shim_command(command: &ShimCommand) -> ExitCode {
    let dir = match command {
        ShimCommand::Install { dir, .. } | ShimCommand::Env { dir } => dir.clone(),
    };
    let dir = match dir.map(Ok).unwrap_or_else(shim::default_dir) {
        Ok(dir) => dir,
        Err(e) => return fail(&e, 2),
    };
    match command {
        ShimCommand::Install { copy, .. } => match shim::install(&dir, *copy) {
            Ok((dir, binary)) => {
                eprintln!(
                    "azbroker: {} now answers 'az account get-access-token' from the broker \
                     ({} {}); put this line in your shell profile:",
                    dir.join("az").display(),
                    if *copy { "a copy of" } else { "a link to" },
                    binary.display()
                );
                println!("{}", shim::path_line(&dir));
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e, 1),
        },
        ShimCommand::Env { .. } => {
            let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
            if !shim::is_installed(&dir) {
                eprintln!(
                    "azbroker: warning: no shim in {} yet; run 'azbroker shim install'",
                    dir.display()
                );
            }
            println!("{}", shim::path_line(&dir));
            ExitCode::SUCCESS
        }
    }
}

/// The endpoint's secret, from the daemon's 0600 file; refuses a file that
/// another user owns or others may read.
/// `azbroker env --managed-identity`. On any failure stdout carries
/// `mi_env::EVAL_FAILS`: `eval "$(...)"` ignores the exit status.
fn env_command(plain: bool) -> ExitCode {
    match managed_identity_vars(plain) {
        Ok(lines) => {
            print!("{lines}");
            ExitCode::SUCCESS
        }
        Err(code) => {
            println!("{}", mi_env::EVAL_FAILS);
            code
        }
    }
}

/// `azbroker exec`: wires the doors in, then becomes COMMAND.
fn exec_command(
    command: &[OsString],
    register: Option<RegisterExec>,
    managed_identity: bool,
) -> ExitCode {
    let shim_dir = match exec::shim_dir() {
        Ok(dir) => dir,
        Err(e) => return fail(&format!("cannot install the az shim: {e}"), 1),
    };
    let pinned_chain = register.as_ref().map(|_| {
        exec::pinned_chain(
            std::env::var_os(exec::CHAIN_VARIABLE).as_deref(),
            managed_identity,
        )
    });
    if let Some(register) = register {
        // Before COMMAND runs, under this very pid (exec keeps it): a NAME
        // that could not be registered would run unlimited, so it does not run.
        let name = register.name.clone();
        let registered = with_runtime(async move {
            let client = match daemon_client(true) {
                Ok(client) => client,
                Err(code) => return code,
            };
            match client.register_exec(register).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!(
                        "azbroker exec: cannot register --name {name}; not running the command"
                    );
                    client_error(&e)
                }
            }
        });
        if registered != ExitCode::SUCCESS {
            return registered;
        }
    }
    let managed_identity = if managed_identity {
        match managed_identity_endpoint() {
            Ok(pair) => Some(pair),
            Err(code) => return code,
        }
    } else {
        None
    };
    exec::exec(
        command,
        exec::Wiring {
            shim_dir,
            managed_identity,
            pinned_chain,
        },
    )
}

/// The checked variable lines, or the exit code after the error was printed.
fn managed_identity_vars(plain: bool) -> Result<String, ExitCode> {
    let (endpoint, header) = managed_identity_endpoint()?;
    Ok(mi_env::render(&endpoint, &header, plain))
}

/// The daemon's checked `IDENTITY_ENDPOINT` and `IDENTITY_HEADER`, or the exit
/// code after the error was printed.
fn managed_identity_endpoint() -> Result<(String, String), ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(&format!("cannot start the runtime: {e}"), 3))?;
    // A daemon this command has to start must serve the endpoint it asks for.
    let client = Client::new(ClientOptions {
        start_with_managed_identity: true,
        ..client_options()?
    });
    let endpoint = match runtime.block_on(client.managed_identity()) {
        Ok(Some(endpoint)) => endpoint,
        Ok(None) => {
            return Err(fail(
                "the running azbrokerd serves no managed-identity endpoint: it was started \
                 without --managed-identity-endpoint (or AZBROKER_MANAGED_IDENTITY=1). \
                 Restart it with the endpoint: azbroker stop && azbroker env --managed-identity \
                 (under the service: azbroker service install --managed-identity-endpoint)",
                1,
            ))
        }
        Err(e) => return Err(client_error(&e)),
    };
    mi_env::check_endpoint(&endpoint.endpoint).map_err(|e| fail(&e, 1))?;
    let header =
        mi_env::read_identity_header(Path::new(&endpoint.header_file)).map_err(|e| fail(&e, 1))?;
    Ok((endpoint.endpoint, header))
}

/// One line for the error, one per credential reason, then what to do about
/// the network or Entra ID causes among them.
fn client_error(e: &ClientError) -> ExitCode {
    match e {
        ClientError::Daemon(wire) => {
            eprintln!("azbroker: error: {} ({})", wire.message, wire.kind.as_str());
            for reason in &wire.reasons {
                eprintln!("  - {}: {}", reason.credential, reason.reason);
            }
            let advice = advice::explain_error(e);
            for advice in &advice {
                let whose = advice.credential.as_deref().unwrap_or("hint");
                eprintln!("  {whose}: {} {}", advice.summary, advice.remedy);
            }
            if !advice.is_empty() {
                eprintln!("  {}", advice::RUN_DIAGNOSE);
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
    azbroker_proto::env::seconds("AZURE_MCP_BROWSER_AUTH_TIMEOUT_SECONDS")
        .map(Option::unwrap_or_default)
        .map_err(|e| e.to_string())
}

fn fail(message: &str, code: u8) -> ExitCode {
    eprintln!("azbroker: error: {message}");
    ExitCode::from(code)
}
