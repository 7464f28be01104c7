//! Figure 11: what `azbroker exec` adds to starting a command. The same
//! COMMAND (`true`) runs directly, through `azbroker exec --`, and through
//! `azbroker exec --name NAME --allow-scope P --` (which registers with the
//! daemon before it becomes COMMAND); runs alternate, each figure is the
//! median wall time, and the overhead is the difference of medians.

use std::process::{Command, Stdio};
use std::time::Instant;

use crate::measure::median_ms;

use super::Ctx;

pub struct Exec {
    pub runs: usize,
    pub direct_ms: f64,
    pub exec_ms: f64,
    pub named_ms: f64,
}

impl Exec {
    /// The larger overhead of the two ways through `azbroker exec`.
    pub fn overhead_ms(&self) -> f64 {
        (self.exec_ms.max(self.named_ms) - self.direct_ms).max(0.0)
    }
}

pub fn run(ctx: &Ctx) -> Result<Exec, String> {
    let runs = ctx.pick(40, 300);
    let command = which("true")?;
    let mut direct = ctx.sandbox.command(&command);
    let mut exec = ctx.sandbox.command(&ctx.sandbox.bins.azbroker);
    exec.env("AZBROKER_SOCKET", &ctx.main.socket)
        .arg("exec")
        .arg("--")
        .arg(&command);
    let mut named = ctx.sandbox.command(&ctx.sandbox.bins.azbroker);
    named
        .env("AZBROKER_SOCKET", &ctx.main.socket)
        .args([
            "exec",
            "--name",
            "bench-exec",
            "--allow-scope",
            "https://storage.azure.com/*",
            "--",
        ])
        .arg(&command);
    // The first exec installs the shim; not timed.
    for command in [&mut direct, &mut exec, &mut named] {
        timed(command)?;
    }
    let (mut direct_times, mut exec_times, mut named_times) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        direct_times.push(timed(&mut direct)?);
        exec_times.push(timed(&mut exec)?);
        named_times.push(timed(&mut named)?);
    }
    Ok(Exec {
        runs,
        direct_ms: median_ms(&direct_times),
        exec_ms: median_ms(&exec_times),
        named_ms: median_ms(&named_times),
    })
}

/// `name` on the usual system directories (the sandbox's `PATH` is its own).
fn which(name: &str) -> Result<std::path::PathBuf, String> {
    ["/usr/bin", "/bin"]
        .iter()
        .map(|dir| std::path::Path::new(dir).join(name))
        .find(|path| path.is_file())
        .ok_or_else(|| format!("no {name} in /usr/bin or /bin"))
}

fn timed(command: &mut Command) -> Result<std::time::Duration, String> {
    let started = Instant::now();
    let status = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("running {:?}: {e}", command.get_program()))?;
    let elapsed = started.elapsed();
    if !status.status.success() {
        return Err(format!(
            "{:?} failed: {}",
            command.get_program(),
            String::from_utf8_lossy(&status.stderr).trim()
        ));
    }
    Ok(elapsed)
}
