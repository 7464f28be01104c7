//! Figure 3: `azbroker token --raw` for a cached token as a whole process,
//! beside `bench-oneshot`, the smallest process that connects, asks, and
//! prints; and the `az` shim answering `az account get-access-token` (what
//! the Azure SDKs' AzureCliCredential runs) from the same cache. Runs
//! alternate; each figure is the median wall time.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::measure::median_ms;

use super::{Ctx, ARM};

pub struct Cli {
    pub runs: usize,
    pub azbroker_ms: f64,
    pub az_shim_ms: f64,
    pub oneshot_ms: f64,
}

pub fn run(ctx: &Ctx, expected_token: &str) -> Result<Cli, String> {
    let runs = ctx.pick(100, 300);
    let mut azbroker = ctx.sandbox.command(&ctx.sandbox.bins.azbroker);
    azbroker
        .env("AZBROKER_SOCKET", &ctx.main.socket)
        .env("AZURE_TOKEN_CREDENTIALS", "AzureCliCredential")
        .args(["token", "--raw", "--scope", ARM]);
    let mut az_shim = ctx.sandbox.command(&ctx.sandbox.bins.az_shim);
    az_shim
        .env("AZBROKER_SOCKET", &ctx.main.socket)
        .env("AZURE_TOKEN_CREDENTIALS", "AzureCliCredential")
        .args([
            "account",
            "get-access-token",
            "--output",
            "json",
            "--resource",
            ARM.trim_end_matches("/.default"),
        ]);
    let mut oneshot = ctx.sandbox.command(&ctx.sandbox.bins.oneshot);
    oneshot
        .arg(&ctx.bare.socket)
        .arg(ctx.request_bytes.to_string());

    let first = output(&mut azbroker)?;
    if first.trim_end() != expected_token {
        return Err("azbroker token --raw printed something else than the cached token".into());
    }
    if !output(&mut az_shim)?.contains(expected_token) {
        return Err("the az shim printed something else than the cached token".into());
    }
    output(&mut oneshot)?;
    let (mut broker_times, mut shim_times, mut oneshot_times) =
        (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        broker_times.push(timed(&mut azbroker)?);
        shim_times.push(timed(&mut az_shim)?);
        oneshot_times.push(timed(&mut oneshot)?);
    }
    Ok(Cli {
        runs,
        azbroker_ms: median_ms(&broker_times),
        az_shim_ms: median_ms(&shim_times),
        oneshot_ms: median_ms(&oneshot_times),
    })
}

/// Runs the command to completion, stdout captured like a script's `$(...)` would.
fn timed(command: &mut Command) -> Result<Duration, String> {
    let started = Instant::now();
    let out = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("running {:?}: {e}", command.get_program()))?;
    let elapsed = started.elapsed();
    if !out.status.success() || out.stdout.len() < 100 {
        return Err(format!(
            "{:?} failed ({}): {}",
            command.get_program(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(elapsed)
}

fn output(command: &mut Command) -> Result<String, String> {
    let out = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("running {:?}: {e}", command.get_program()))?;
    if !out.status.success() {
        return Err(format!(
            "{:?} failed ({}): {}",
            command.get_program(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
