//! `azbroker-bench`: holds azbroker against the physical limit and against
//! what users run today, in one run, each figure beside its baseline.
//!
//! It starts its own `azbrokerd` on private sockets in a temporary directory,
//! with a fake `az` and an HTTPS Entra ID double as credentials, and a bare
//! Unix-socket server (`bench-bare-server`) and one-shot client
//! (`bench-oneshot`) as baselines. See docs/PERFORMANCE.md for what each
//! figure means.
//!
//! Exit status: 0, or 1 when a hard invariant breaks (more than one upstream
//! acquisition in the cold storm, more than one `az` run per failure window
//! in the storm against a failing credential, a request that waited in the
//! refresh run), or 2 when the benchmark could not run. Timings never fail a run.

mod bare;
mod binaries;
mod idle_states;
mod measure;
mod report;
mod sandbox;
mod scenarios;

use std::path::PathBuf;
use std::process::ExitCode;

use azbroker_proto::{frame, ClientFrame, DaemonFrame, Reply, Request};
use clap::Parser;

use crate::binaries::Binaries;
use crate::idle_states::IdleStates;
use crate::report::{Machine, Results};
use crate::sandbox::Sandbox;
use crate::scenarios::{token_request, Ctx, ARM};

/// Benchmark of azbroker against a bare Unix-socket round trip and a minimal process.
#[derive(Parser, Debug)]
#[command(name = "azbroker-bench", version, about)]
struct Args {
    /// Fewer samples: under a minute, for CI. Fails only on broken invariants.
    #[arg(long)]
    quick: bool,
    /// Also write the results as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(results) => {
            println!("{}", results.table());
            if let Some(path) = &args.json {
                let text = serde_json::to_string_pretty(&results.json()).expect("JSON");
                if let Err(e) = std::fs::write(path, text + "\n") {
                    eprintln!("azbroker-bench: cannot write {}: {e}", path.display());
                    return ExitCode::from(2);
                }
            }
            let broken: Vec<_> = results
                .targets()
                .into_iter()
                .filter(|t| t.hard && !t.met())
                .collect();
            for target in &broken {
                eprintln!("azbroker-bench: invariant broken: {}", target.name);
            }
            if broken.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("azbroker-bench: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &Args) -> Result<Results, String> {
    let bins = Binaries::locate()?;
    if !bins.release {
        eprintln!(
            "azbroker-bench: warning: not a release build; run with --release for real figures"
        );
    }
    let idle_connections = raise_open_file_limit()?;
    let machine = machine(args.quick);
    let sandbox = Sandbox::new(bins)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;

    let main = sandbox.start_daemon("main")?;
    let chain = sandbox.cli_chain();
    // Warm the key every cached figure asks for, and size the baseline after it.
    let (token, request_bytes, reply_bytes) = runtime.block_on(async {
        let client = main.client(&chain);
        let token = client
            .get_token(token_request(ARM))
            .await
            .map_err(|e| format!("first token: {e} {}", main.log_tail()))?;
        let request = ClientFrame {
            id: 2,
            request: Request::GetToken(token_request(ARM)),
        };
        let reply = DaemonFrame {
            id: 2,
            reply: Reply::Token(token.clone()),
        };
        let size =
            |r: Result<Vec<u8>, frame::FrameError>| r.map(|b| b.len()).map_err(|e| e.to_string());
        Ok::<_, String>((
            token,
            size(frame::encode(&request))?,
            size(frame::encode(&reply))?,
        ))
    })?;
    let bare = sandbox.start_bare(reply_bytes)?;
    let ctx = Ctx {
        sandbox,
        quick: args.quick,
        main,
        chain,
        bare,
        request_bytes,
        idle_connections,
    };

    let step = |name: &str| eprintln!("azbroker-bench: {name}...");
    let idle = IdleStates::hold();
    if !idle.held() {
        eprintln!("azbroker-bench: warning: {}", idle.describe());
    }
    step("1. cached token, in-process");
    let cached = runtime.block_on(scenarios::cached::run(&ctx))?;
    step("2. concurrency");
    let concurrency = runtime.block_on(scenarios::concurrency::run(&ctx))?;
    step("3. whole-process CLI");
    let cli = scenarios::cli::run(&ctx, token.access_token.expose())?;
    step("11. azbroker exec");
    let exec = scenarios::exec::run(&ctx)?;
    step("10. policy and audit");
    let policed = runtime.block_on(scenarios::policed::run(&ctx))?;
    step("7. many clients");
    let many = runtime.block_on(scenarios::many_clients::run(&ctx))?;
    step("4. cold storm");
    let storm = runtime.block_on(scenarios::storm::run(&ctx))?;
    step("9. storm against a failing credential");
    let failing_storm = runtime.block_on(scenarios::failing_storm::run(&ctx))?;
    step("6. memory");
    let memory = runtime.block_on(scenarios::memory::run(&ctx))?;
    step("8. many identities, then idle");
    let identities = runtime.block_on(scenarios::identities::run(&ctx))?;
    step("5. refresh");
    let refresh = runtime.block_on(scenarios::refresh::run(&ctx))?;
    // Figure 1 once more with the CPUs free to idle, to show what the hold removes.
    let idle_states = idle.describe();
    let cached_idling = if idle.held() {
        drop(idle);
        step("1b. cached token, in-process, CPUs free to idle");
        Some(runtime.block_on(scenarios::cached::run(&ctx))?)
    } else {
        None
    };
    Ok(Results {
        machine,
        idle_states,
        request_bytes,
        reply_bytes,
        cached,
        cached_idling,
        concurrency,
        cli,
        many,
        storm,
        failing_storm,
        policed,
        exec,
        refresh,
        memory,
        identities,
    })
}

/// The many-clients figure needs more than a thousand sockets here too: lifts
/// the soft open-file limit to the hard one, and returns how many idle
/// connections fit under it (1,000 unless the hard limit is unusually low).
fn raise_open_file_limit() -> Result<usize, String> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(|e| format!("getrlimit: {e}"))?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map_err(|e| format!("setrlimit: {e}"))?;
    }
    // Room for the other figures' connections, the doubles and the runtime.
    const OTHER_FILES: u64 = 400;
    let wanted = scenarios::many_clients::IDLE_CONNECTIONS;
    let fits = hard.saturating_sub(OTHER_FILES).min(wanted as u64) as usize;
    if fits < wanted {
        eprintln!(
            "azbroker-bench: warning: the hard open-file limit is {hard}; holding {fits} idle connections instead of {wanted}"
        );
    }
    Ok(fits)
}

fn machine(quick: bool) -> Machine {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, model)| model.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let date = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    Machine {
        date,
        cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu,
        commit: commit(),
        quick,
    }
}

/// `git rev-parse HEAD` of the workspace, `-dirty` when it has changes; else "unknown".
fn commit() -> String {
    let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .current_dir(&workspace)
            .args(args)
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    match git(&["rev-parse", "HEAD"]) {
        Some(hash) if !hash.is_empty() => {
            let dirty = git(&["status", "--porcelain"]).is_some_and(|s| !s.is_empty());
            if dirty {
                format!("{hash}-dirty")
            } else {
                hash
            }
        }
        _ => "unknown".into(),
    }
}
