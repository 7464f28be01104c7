//! `azbroker diagnose`: the troubleshooting half of the Azure MCP Server's
//! authentication guide, run by the tool instead of by hand.
//!
//! A binary of its own, which `azbroker diagnose` executes: it carries a
//! network and TLS stack (the in-process checks when no daemon answers) that
//! the `azbroker` on the hot path of scripts should not have to load.
//!
//! One job per file:
//! - [`env`]: this process's variables (secrets masked), the chain they select, the cloud;
//! - [`daemon`]: is azbrokerd reachable, its version, socket and store;
//! - [`daemon_env`]: azbrokerd's environment (tools on `PATH`, profile
//!   directories, proxy and CA variables) beside this shell's;
//! - [`network`]: DNS, TCP, proxy and TLS to each endpoint, run *by the daemon*
//!   with its own proxy and CA settings (in this process only when no daemon answers);
//! - [`credentials`]: each credential of the chain, alone, asked for a token;
//! - [`admin`]: the request to hand an administrator (`--admin-request`);
//! - [`render`]: aligned, colored text for people, JSON for scripts, and the
//!   redactor that keeps every secret value out of both.
//!
//! The checks run concurrently, each with a short limit; the exit code is 0
//! when everything needed for a token works, 1 otherwise.

mod admin;
mod credentials;
mod daemon;
mod daemon_env;
mod env;
mod network;
mod render;

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use serde::Serialize;

/// Check the environment, the daemon, the network and each credential, and say what to fix.
#[derive(Parser, Debug)]
#[command(name = "azbroker diagnose", bin_name = "azbroker diagnose", version)]
pub struct DiagnoseArgs {
    /// Print JSON (for scripts) instead of text.
    #[arg(long, conflicts_with = "admin_request")]
    json: bool,
    /// Scope to get a token for [default: the cloud's Resource Manager scope].
    #[arg(long)]
    scope: Option<String>,
    /// Also check this resource endpoint: a host, host:port or URL, e.g.
    /// mystorage.blob.core.windows.net (repeatable).
    #[arg(long = "resource-endpoint", value_name = "HOST")]
    resource_endpoints: Vec<String>,
    /// Skip the cloud's Resource Manager and Graph endpoints (the authority is always checked).
    #[arg(long)]
    no_cloud_endpoints: bool,
    /// Time limit of each network step (DNS, TCP, proxy, TLS), in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=30))]
    timeout: u32,
    /// Print the request to hand your network and identity administrators.
    #[arg(long)]
    admin_request: bool,
}

/// How a check came out. Ordered from good to bad.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Ok,
    Info,
    Warn,
    Fail,
}

/// Something to fix (`Fail`) or to look at (`Warn`), with the remedy.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    pub level: Level,
    /// `environment`, `daemon`, `network` or `credentials`.
    pub area: &'static str,
    /// What it concerns, e.g. `login.microsoftonline.com:443` or `AzureCliCredential`.
    pub subject: String,
    pub summary: String,
    pub remedy: String,
}

impl Problem {
    pub fn fail(
        area: &'static str,
        subject: impl Into<String>,
        summary: impl Into<String>,
        remedy: impl Into<String>,
    ) -> Problem {
        Problem {
            level: Level::Fail,
            area,
            subject: subject.into(),
            summary: summary.into(),
            remedy: remedy.into(),
        }
    }

    pub fn warn(
        area: &'static str,
        subject: impl Into<String>,
        summary: impl Into<String>,
        remedy: impl Into<String>,
    ) -> Problem {
        Problem {
            level: Level::Warn,
            ..Problem::fail(area, subject, summary, remedy)
        }
    }
}

/// Everything `azbroker diagnose` found.
#[derive(Serialize)]
pub struct Report {
    /// Whether everything needed for a token works (the exit code is 0 exactly then).
    pub ok: bool,
    pub cli_version: &'static str,
    pub environment: env::EnvReport,
    pub daemon: daemon::DaemonReport,
    /// Where azbrokerd's environment differs from this shell's.
    pub daemon_environment: daemon_env::DaemonEnvReport,
    pub network: network::NetworkReport,
    pub credentials: credentials::CredentialsReport,
    /// Failures first, then warnings, each with its remedy.
    pub problems: Vec<Problem>,
}

fn main() -> ExitCode {
    let args = DiagnoseArgs::parse();
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(run(args)),
        Err(e) => {
            eprintln!("azbroker diagnose: cannot start the runtime: {e}");
            ExitCode::from(3)
        }
    }
}

async fn run(args: DiagnoseArgs) -> ExitCode {
    let env = env::gather(&|name: &str| std::env::var(name).ok());
    let planned = match network::plan(&env, &args.resource_endpoints, args.no_cloud_endpoints) {
        Ok(planned) => planned,
        Err(e) => {
            eprintln!("azbroker: error: {e}");
            return ExitCode::from(2);
        }
    };
    let scope = args
        .scope
        .clone()
        .unwrap_or_else(|| env.cloud.resource_manager_scope());
    let step_timeout = Duration::from_secs(args.timeout.into());

    let mut daemon = daemon::connect(&env).await;
    let (status, network, tried) = tokio::join!(
        daemon.status(),
        network::check(&daemon, planned, step_timeout),
        credentials::check(&env, &daemon, &scope),
    );
    daemon.apply_status(status.as_ref());
    let credentials = credentials::finish(
        &env,
        &daemon,
        tried,
        network.implemented.as_deref(),
        status.as_ref(),
        &scope,
    );

    let daemon_environment = daemon_env::compare(
        network.daemon_environment.as_ref(),
        &azbroker_netcheck::process_env::of_this_process(),
    );

    let mut problems = Vec::new();
    env::problems(&env, &mut problems);
    daemon::problems(&daemon.report, &mut problems);
    daemon_env::problems(&daemon_environment, &network.report, &mut problems);
    network::problems(&network.report, &mut problems);
    credentials::problems(&credentials, &mut problems);
    // Stable: failures first, each area in check order.
    problems.sort_by_key(|p| std::cmp::Reverse(p.level));
    let report = Report {
        ok: !problems.iter().any(|p| p.level == Level::Fail),
        cli_version: env!("CARGO_PKG_VERSION"),
        environment: env.report,
        daemon: daemon.report,
        daemon_environment,
        network: network.report,
        credentials,
        problems,
    };

    let redactor = render::Redactor::new(&env.secrets);
    let text = if args.admin_request {
        admin::request(&report, env.cloud)
    } else if args.json {
        render::json(&report)
    } else {
        render::text(&report, render::use_color())
    };
    print!("{}", redactor.apply(&text));
    if report.ok || args.admin_request {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
