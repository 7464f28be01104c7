//! `azbroker exec -- COMMAND [ARGS...]`: COMMAND with the broker's doors
//! wired in, for programs that authenticate like the Azure SDKs (MCP servers
//! in any language, scripts) and are started from a static configuration.
//!
//! The shim directory goes first on COMMAND's `PATH` (the shim is installed
//! on demand), and with `--managed-identity` COMMAND also gets
//! `IDENTITY_ENDPOINT`/`IDENTITY_HEADER` of the running daemon. Then this
//! process *becomes* COMMAND (`execvp`): stdin, stdout and stderr are
//! COMMAND's untouched, signals reach it directly, its exit status is the
//! status, and the process id stays the same, so whatever the daemon learns
//! about this process holds for COMMAND.

use std::ffi::{OsStr, OsString};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::shim;

/// What COMMAND gets besides the environment it inherits.
pub struct Wiring {
    /// The directory holding the `az` shim, put first on `PATH`.
    pub shim_dir: PathBuf,
    /// `IDENTITY_ENDPOINT` and `IDENTITY_HEADER`, already checked.
    pub managed_identity: Option<(String, String)>,
}

/// The default shim directory, installing the shim there when it is missing
/// (a link to the `azbroker-az-shim` beside this program).
pub fn shim_dir() -> Result<PathBuf, String> {
    let dir = shim::default_dir()?;
    if shim::is_installed(&dir) {
        return std::fs::canonicalize(&dir).map_err(|e| format!("{}: {e}", dir.display()));
    }
    let (dir, _) = shim::install(&dir, false)?;
    Ok(dir)
}

/// `dir` first, then `inherited` without any other copy of `dir` (so a
/// nested `azbroker exec` does not grow `PATH`).
pub fn path_with_shim_first(dir: &Path, inherited: Option<&OsStr>) -> OsString {
    let rest = inherited
        .map(|path| {
            std::env::split_paths(path)
                .filter(|entry| entry != dir)
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    std::env::join_paths(std::iter::once(dir.to_path_buf()).chain(rest))
        .unwrap_or_else(|_| dir.as_os_str().to_owned())
}

/// Replaces this process with `command`; returns only when that failed, with
/// the shell's codes: 127 not found, 126 found but not runnable.
pub fn exec(command: &[OsString], wiring: Wiring) -> ExitCode {
    let Some((program, args)) = command.split_first() else {
        eprintln!("azbroker exec: no command given (azbroker exec -- COMMAND [ARGS...])");
        return ExitCode::from(2);
    };
    let path = path_with_shim_first(&wiring.shim_dir, std::env::var_os("PATH").as_deref());
    let mut child = std::process::Command::new(program);
    child.args(args).env("PATH", path);
    if let Some((endpoint, header)) = &wiring.managed_identity {
        child
            .env("IDENTITY_ENDPOINT", endpoint)
            .env("IDENTITY_HEADER", header);
    }
    // `Command` resolves a bare name on the PATH set above, like a shell would.
    let error = child.exec();
    let code = match error.kind() {
        std::io::ErrorKind::NotFound => 127,
        _ => 126,
    };
    eprintln!(
        "azbroker exec: cannot run {}: {error}",
        Path::new(program).display()
    );
    ExitCode::from(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shim_comes_first_once() {
        let dir = Path::new("/home/me/.local/share/azbroker/shim");
        let inherited = OsString::from("/usr/bin:/home/me/.local/share/azbroker/shim:/bin");
        assert_eq!(
            path_with_shim_first(dir, Some(&inherited)),
            OsString::from("/home/me/.local/share/azbroker/shim:/usr/bin:/bin")
        );
        assert_eq!(
            path_with_shim_first(dir, None),
            OsString::from("/home/me/.local/share/azbroker/shim")
        );
    }
}
