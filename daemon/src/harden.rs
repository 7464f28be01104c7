//! What the daemon does to itself before anything else, like ssh-agent: it
//! holds every token and refresh token of its user, so
//! - no core dumps and no same-user ptrace (a core dump held three copies of a
//!   cached token; a debugger or `/proc/<pid>/mem` reads them all), and
//! - no secret of the environment it was started from stays in it: those are
//!   the starter's (an editor's `AZURE_CLIENT_SECRET`), and anything the daemon
//!   runs or links could read or pass them on.
//!
//! [`at_start`] must run first in `main`, while the process has one thread:
//! changing the environment is unsound once another thread may read it.

use std::ffi::{CString, OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::sync::OnceLock;

use azbroker_proto::Secret;
use zeroize::Zeroizing;

/// Exact names of variables whose value is a secret (Azure SDKs, App Service,
/// CI systems), beyond what [`is_secret_name`]'s word rule catches.
const SECRET_NAMES: &[&str] = &[
    // App Service's managed-identity header (and its pre-2019 name).
    "IDENTITY_HEADER",
    "MSI_SECRET",
    // Azure Pipelines' job token.
    "SYSTEM_ACCESSTOKEN",
];

/// Last words (after the last `_`) that mark a secret value, e.g.
/// `AZURE_CLIENT_SECRET`, `AZURE_CLIENT_CERTIFICATE_PASSWORD`, `GITHUB_TOKEN`,
/// `AZURE_DEVOPS_EXT_PAT`, `AZURE_STORAGE_KEY`. Only the last word counts: a
/// variable that names where a secret is (`AZURE_FEDERATED_TOKEN_FILE`) or
/// configures something (`AZURE_TOKEN_CREDENTIALS`) is not one.
const SECRET_WORDS: &[&str] = &[
    "SECRET",
    "SECRETS",
    "PASSWORD",
    "PASSWD",
    "PASSPHRASE",
    "TOKEN",
    "PAT",
    "APIKEY",
    "KEY",
];

/// Whether the variable `name` holds a secret value.
pub fn is_secret_name(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    SECRET_NAMES.contains(&upper.as_str())
        || upper
            .rsplit('_')
            .next()
            .is_some_and(|last| SECRET_WORDS.contains(&last))
        // e.g. AZURE_STORAGE_CONNECTION_STRING, which holds the account key.
        || upper.ends_with("_CONNECTION_STRING")
}

/// What [`at_start`] did, for [`Hardening::finish`] to log once logging runs.
#[must_use = "call finish() once logging is set up"]
pub struct Hardening {
    /// The scrubbed variables and their values.
    scrubbed: Vec<(String, Secret)>,
    /// Steps that failed (the daemon runs anyway, as ssh-agent does).
    warnings: Vec<String>,
}

/// Forbids core dumps and tracing, then removes secret variables from the
/// process's environment, wiping their values in place. Call first in `main`.
pub fn at_start() -> Hardening {
    let mut warnings = Vec::new();
    forbid_dumps_and_tracing(&mut warnings);
    let scrubbed = scrub_secret_variables();
    Hardening { scrubbed, warnings }
}

/// The secret variables the daemon's own chain reads (the managed-identity
/// endpoint serves that chain), kept out of the environment but not lost.
static OWN_SECRETS: OnceLock<Vec<(String, Secret)>> = OnceLock::new();

impl Hardening {
    /// Logs what was done. `keep_for_own_chain`: the daemon serves its own
    /// chain (the managed-identity endpoint), which reads the scrubbed values
    /// through [`own_var`]; otherwise they are wiped now.
    pub fn finish(self, keep_for_own_chain: bool) {
        for warning in &self.warnings {
            tracing::warn!("{warning}");
        }
        if !self.scrubbed.is_empty() {
            let names: Vec<&str> = self.scrubbed.iter().map(|(n, _)| n.as_str()).collect();
            tracing::info!(
                variables = ?names,
                "removed secret variables from the daemon's environment; no child process sees them"
            );
        }
        if keep_for_own_chain {
            let _ = OWN_SECRETS.set(self.scrubbed);
        }
    }
}

/// A variable of the daemon's own environment as it was started, scrubbed
/// secrets included (for selecting the daemon's own chain).
pub fn own_var(name: &str) -> Option<String> {
    let kept = OWN_SECRETS
        .get()
        .and_then(|kept| kept.iter().find(|(n, _)| n == name));
    match kept {
        Some((_, value)) => Some(value.expose().to_string()),
        None => std::env::var(name).ok(),
    }
}

#[cfg(target_os = "linux")]
fn forbid_dumps_and_tracing(warnings: &mut Vec<String>) {
    // Not dumpable: no core file, no ptrace or /proc/<pid>/mem by the same
    // user, /proc/<pid>/environ and friends owned by root. Reset by execve,
    // so the tools the daemon runs are unaffected.
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        warnings.push(format!("cannot make the daemon non-dumpable: {e}"));
    }
    forbid_core_files(warnings);
}

#[cfg(target_os = "macos")]
fn forbid_dumps_and_tracing(warnings: &mut Vec<String>) {
    // As OpenSSH's ssh-agent does on macOS: no debugger may attach.
    // SAFETY: PT_DENY_ATTACH takes no address or data and only sets a flag on
    // this process.
    let denied =
        unsafe { nix::libc::ptrace(nix::libc::PT_DENY_ATTACH, 0, std::ptr::null_mut(), 0) };
    if denied == -1 {
        warnings.push(format!(
            "cannot deny debugger attachment: {}",
            std::io::Error::last_os_error()
        ));
    }
    forbid_core_files(warnings);
}

#[cfg(not(any(target_os = "linux", target_os = "macos")))]
fn forbid_dumps_and_tracing(warnings: &mut Vec<String>) {
    forbid_core_files(warnings);
}

fn forbid_core_files(warnings: &mut Vec<String>) {
    use nix::sys::resource::{setrlimit, Resource};
    if let Err(e) = setrlimit(Resource::RLIMIT_CORE, 0, 0) {
        warnings.push(format!("cannot set the core file limit to 0: {e}"));
    }
}

/// Removes every secret variable (see [`is_secret_name`]) and returns them.
fn scrub_secret_variables() -> Vec<(String, Secret)> {
    let names: Vec<OsString> = std::env::vars_os()
        .map(|(name, _)| name)
        .filter(|name| name.to_str().is_some_and(is_secret_name))
        .collect();
    let mut scrubbed = Vec::with_capacity(names.len());
    for name in names {
        let bytes = Zeroizing::new(std::env::var_os(&name).unwrap_or_default().into_vec());
        // Only valid text reaches a chain; any value is wiped all the same.
        let value = Secret::new(String::from_utf8_lossy(&bytes).into_owned());
        wipe_in_place(&name);
        // SAFETY (in the 2024 edition's sense): at_start runs before any
        // thread exists, so nothing reads the environment concurrently.
        std::env::remove_var(&name);
        scrubbed.push((name.to_string_lossy().into_owned(), value));
    }
    scrubbed
}

/// Overwrites the value of `name` where the C library keeps it: for the
/// starting environment that is the block the kernel copied in at exec, which
/// `/proc/<pid>/environ` (and macOS's `ps -E`) show even after `remove_var`
/// unlinks the entry.
fn wipe_in_place(name: &OsStr) {
    let Ok(name) = CString::new(name.as_bytes()) else {
        return;
    };
    // SAFETY: single-threaded (see at_start); getenv returns a pointer into
    // the process's writable environment block (the exec stack, or a copy
    // setenv allocated), NUL-terminated, which we overwrite within its length
    // and then unlink with remove_var. A second entry of the same name (only
    // a hand-made execve makes one) is unlinked, not wiped.
    unsafe {
        let value = nix::libc::getenv(name.as_ptr());
        if !value.is_null() {
            let len = nix::libc::strlen(value);
            std::ptr::write_bytes(value, 0, len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_values_are_recognised_by_name() {
        for name in [
            "AZURE_CLIENT_SECRET",
            "AZURE_CLIENT_CERTIFICATE_PASSWORD",
            "AZURE_PASSWORD",
            "IDENTITY_HEADER",
            "MSI_SECRET",
            "AZURE_FEDERATED_TOKEN",
            "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
            "ARM_CLIENT_SECRET",
            "ARM_OIDC_TOKEN",
            "AZURE_DEVOPS_EXT_PAT",
            "SYSTEM_ACCESSTOKEN",
            "GITHUB_TOKEN",
            "AZURE_STORAGE_KEY",
            "AZURE_STORAGE_CONNECTION_STRING",
            "github_token",
        ] {
            assert!(is_secret_name(name), "{name}");
        }
    }

    #[test]
    fn locations_and_settings_are_kept() {
        for name in [
            "AZURE_FEDERATED_TOKEN_FILE",
            "AZURE_CLIENT_CERTIFICATE_PATH",
            "ACTIONS_ID_TOKEN_REQUEST_URL",
            "IDENTITY_ENDPOINT",
            "AZURE_CLIENT_ID",
            "AZURE_TENANT_ID",
            "AZURE_CONFIG_DIR",
            "HTTPS_PROXY",
            "SSL_CERT_FILE",
            "TOKENIZERS_PARALLELISM",
            "AZURE_KEY_VAULT_NAME",
            "AZURE_TOKEN_CREDENTIALS",
            "AZBROKER_MANAGED_IDENTITY",
            "PATH",
            "HOME",
            "_",
            "",
        ] {
            assert!(!is_secret_name(name), "{name}");
        }
    }
}
