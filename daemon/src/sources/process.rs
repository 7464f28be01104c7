//! Runs credential child processes (`az`, `azd`, `pwsh`) with bounded output
//! and no leftovers.
//!
//! `azure_identity` runs tools through `/bin/sh -c "cd /bin && az ..."` via an
//! [`Executor`]; this one puts the child in its own process group and kills the
//! whole group (the shell *and* the tool it forked) when the acquisition is
//! abandoned, e.g. by the caller's timeout. Output beyond a limit is an error,
//! not an allocation.

use std::ffi::OsStr;
use std::io;
use std::process::{Output, Stdio};

use azure_identity::Executor;
use tokio::io::{AsyncRead, AsyncReadExt};

/// A tool's JSON answer is well under 16 KiB; anything bigger is not a token.
pub const MAX_OUTPUT: usize = 256 * 1024;

#[derive(Debug, Default)]
pub struct BoundedExecutor;

#[async_trait::async_trait]
impl Executor for BoundedExecutor {
    async fn run(&self, program: &OsStr, args: &[&OsStr]) -> io::Result<Output> {
        let mut command = tokio::process::Command::new(program);
        command
            .args(args)
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
