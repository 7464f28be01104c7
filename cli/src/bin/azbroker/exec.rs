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
//!
//! Under a NAME, SDK credential chains are also pinned to the broker's door
//! ([`pinned_chain`]): `DefaultAzureCredential` would otherwise move on from a
//! refused `az` to `azd` or Azure PowerShell and mint the refused token
//! itself, past the policy and the audit.

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
    /// The value for [`CHAIN_VARIABLE`], when COMMAND's chain is pinned.
    pub pinned_chain: Option<&'static str>,
}

/// What the Azure SDKs' `DefaultAzureCredential` (Python, JavaScript, .NET,
/// Go, Java) and the Azure MCP Server read to narrow their chain.
pub const CHAIN_VARIABLE: &str = "AZURE_TOKEN_CREDENTIALS";

/// The credential a NAME's COMMAND is pinned to: the broker's own door (the
/// managed-identity endpoint with `--managed-identity`, else the `az` shim),
/// so every token its SDKs get passes the scope policy and the audit. This
/// replaces whatever chain the environment chose (`dev` would let a refused
/// request fall through to `azd` or PowerShell), saying so on stderr when it
/// replaces a credential the user named (not for `dev` or `prod`, the usual
/// pins of MCP configurations).
pub fn pinned_chain(current: Option<&OsStr>, managed_identity: bool) -> &'static str {
    let pinned = if managed_identity {
        "ManagedIdentityCredential"
    } else {
        "AzureCliCredential"
    };
    if let Some(current) = current.filter(|value| !value.is_empty()) {
        let named = !["dev", "prod", pinned]
            .iter()
            .any(|usual| current.eq_ignore_ascii_case(usual));
        if named {
            eprintln!(
                "azbroker exec: {CHAIN_VARIABLE}={} replaced by {pinned} for this named command, \
                 so every token it gets passes the broker's scope policy and audit",
                current.to_string_lossy()
            );
        }
    }
    pinned
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
    if let Some(credential) = wiring.pinned_chain {
        child.env(CHAIN_VARIABLE, credential);
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
    fn a_named_command_is_pinned_to_the_brokers_door() {
        assert_eq!(pinned_chain(None, false), "AzureCliCredential");
        assert_eq!(
            pinned_chain(Some(OsStr::new("")), true),
            "ManagedIdentityCredential"
        );
        // `dev` would fall through to azd and PowerShell: replaced.
        assert_eq!(
            pinned_chain(Some(OsStr::new("dev")), false),
            "AzureCliCredential"
        );
    }

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
