//! Runs credential child processes (`az`, `azd`, `pwsh`) with bounded output
//! and no leftovers.
//!
//! `azure_identity` runs tools through `/bin/sh -c "cd /bin && az ..."` via an
//! [`Executor`]; this one puts the child in its own process group and kills the
//! whole group (the shell *and* the tool it forked) when the acquisition is
//! abandoned, e.g. by the caller's timeout. Output beyond a limit is an error,
//! not an allocation.
//!
//! Every child gets an explicit minimal environment ([`crate::child_env`]),
//! never the daemon's inherited one: a `PATH` without azbroker's `az` shim
//! directories and the marker `AZBROKER_DAEMON_CHILD=1` (see
//! `azbroker_proto::shim`), so the daemon's AzureCli credential reaches the
//! real Azure CLI, never the shim that would ask this very daemon.

use std::ffi::{OsStr, OsString};
use std::io;
use std::process::{Output, Stdio};

use azbroker_proto::ToolSpec;
use azure_identity::Executor;

use crate::child_env;
use tokio::io::{AsyncRead, AsyncReadExt};

/// A tool's JSON answer is well under 16 KiB; anything bigger is not a token.
pub const MAX_OUTPUT: usize = 256 * 1024;

/// Runs a tool with the environment of the requester that defined its
/// credential ([`child_env::tool_env`]), and nothing else.
#[derive(Debug)]
pub struct BoundedExecutor {
    env: Vec<(OsString, OsString)>,
}

impl BoundedExecutor {
    pub fn new(spec: &ToolSpec) -> BoundedExecutor {
        BoundedExecutor {
            env: child_env::tool_env(spec),
        }
    }
}

#[async_trait::async_trait]
impl Executor for BoundedExecutor {
    async fn run(&self, program: &OsStr, args: &[&OsStr]) -> io::Result<Output> {
        let mut command = tokio::process::Command::new(program);
        command
            .args(args)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        #[cfg(unix)]
        command.process_group(0);
        let mut child = command.spawn()?;
        let _group = GroupGuard(child.id());
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let (stdout, stderr) = tokio::try_join!(read_bounded(stdout), read_bounded(stderr))?;
        let status = child.wait().await?;
        Ok(Output {
            status,
            stdout,
            stderr,
        })
    }
}

async fn read_bounded(stream: impl AsyncRead + Unpin) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    stream
        .take(MAX_OUTPUT as u64 + 1)
        .read_to_end(&mut buf)
        .await?;
    if buf.len() > MAX_OUTPUT {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the tool wrote more than {MAX_OUTPUT} bytes"),
        ));
    }
    Ok(buf)
}

/// Kills the child's process group when dropped: on success it is already
/// gone and the kill is a no-op; on timeout or error it reaps grandchildren.
struct GroupGuard(Option<u32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        #[cfg(unix)]
        if let Some(pid) = self.0 {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Why a tool credential cannot run: the requester's `PATH` has no such tool.
/// Said plainly, because the daemon's own `PATH` is not the one searched.
pub fn not_on_requesters_path(tool: &ToolNames) -> super::SourceError {
    super::SourceError::Unavailable(format!(
        "{} ({}) not found on PATH (the PATH of the process that asked for the token: install it there, or start that process with {} on its PATH)",
        tool.product, tool.executable, tool.executable
    ))
}

/// How a developer tool (az, azd) names itself, for [`classify_tool_error`].
pub struct ToolNames {
    /// e.g. "Azure CLI".
    pub product: &'static str,
    /// The executable, e.g. "az".
    pub executable: &'static str,
    /// The command that signs in, e.g. "az login".
    pub login: &'static str,
    /// The command that was run, e.g. "az account get-access-token".
    pub command: &'static str,
}

/// The tools' own messages are clear: keep them, minus `azure_identity`'s
/// boilerplate, and decide whether the chain should treat the failure as "not
/// set up here". The tool's not-logged-in marker names its login command; an
/// AADSTS error (expired session, MFA) is a real failure even though its advice
/// also names the login command.
pub fn classify_tool_error(message: &str, tool: &ToolNames) -> super::SourceError {
    use super::SourceError;
    let text = crate::error_chain::tidy(message);
    if text.contains("not found on PATH") || text.contains("wasn't found on PATH") {
        return SourceError::Unavailable(format!(
            "{} ({}) not found on PATH",
            tool.product, tool.executable
        ));
    }
    if text.contains(tool.login) && !text.contains("AADSTS") {
        return SourceError::Unavailable(format!(
            "{} is not logged in: run '{}' ({text})",
            tool.product, tool.login
        ));
    }
    SourceError::failed(if text.is_empty() {
        format!("{} failed without a message", tool.command)
    } else {
        text
    })
}
