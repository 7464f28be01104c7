//! What a tool credential (`az`, `azd`, `pwsh`) depends on in the environment
//! of the process that asks for a token.
//!
//! The daemon outlives its clients and was started by whichever came first, so
//! its own `PATH` and profile variables say nothing about the requester: an
//! editor with a minimal `PATH` would leave every shell without `az`, and a
//! shell with `AZURE_CONFIG_DIR=~/.azure-work` would be served the default
//! profile's account. So the client resolves the tool on its own `PATH`, names
//! the profile directory that holds the tool's login, and sends the variables
//! a tool may see; the daemon runs the tool with exactly those.
//!
//! The executable and the profile directory are part of the credential's
//! identity (two profiles are two credentials and never share tokens); the
//! other variables are not (a different `LANG` is the same login).

use serde::{Deserialize, Serialize};

/// Who and where the user is, locale, temporary files, proxies and extra
/// trusted roots: what any child of the daemon may see (a credential tool,
/// and the browser opener, which adds its display and desktop session).
pub const SESSION_VARIABLES: &[&str] = &[
    // Who and where the user is; locale; temporary files.
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_CTYPE",
    "LC_MESSAGES",
    "TZ",
    "TMPDIR",
    "TMP",
    "TEMP",
    "XDG_CONFIG_HOME",
    "XDG_CACHE_HOME",
    "XDG_DATA_HOME",
    "XDG_STATE_HOME",
    "XDG_RUNTIME_DIR",
    // Network: proxies and extra trusted roots (Python's requests and curl read their own names).
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "all_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
];

/// What the credential tools read besides [`SESSION_VARIABLES`]: their
/// profiles and the settings that change their output.
const TOOL_SETTINGS: &[&str] = &[
    // Azure CLI: profile, extensions, cloud, and the `[core]` settings that change its output.
    "AZURE_CONFIG_DIR",
    "AZURE_EXTENSION_DIR",
    "AZURE_CLOUD_NAME",
    "AZURE_CORE_COLLECT_TELEMETRY",
    "AZURE_CORE_OUTPUT",
    "AZURE_CORE_ONLY_SHOW_ERRORS",
    "AZURE_CORE_NO_COLOR",
    "AZURE_CORE_LOGIN_EXPERIENCE_V2",
    // Azure Developer CLI.
    "AZD_CONFIG_DIR",
    "AZURE_DEV_COLLECT_TELEMETRY",
    // PowerShell and the .NET runtime under it.
    "PSModulePath",
    "POWERSHELL_TELEMETRY_OPTOUT",
    "POWERSHELL_UPDATECHECK",
    "DOTNET_ROOT",
    "DOTNET_BUNDLE_EXTRACT_BASE_DIR",
];

/// The variables a credential tool may see, taken from the requester's
/// environment: [`SESSION_VARIABLES`] and the tools' own settings. Anything
/// else (secrets included) never reaches a tool. `PATH` is handled apart:
/// shim directories are removed from it first.
pub fn tool_variables() -> impl Iterator<Item = &'static str> {
    SESSION_VARIABLES.iter().chain(TOOL_SETTINGS).copied()
}

/// Whether a credential tool may see the variable `name` (see [`tool_variables`]).
pub fn is_tool_variable(name: &str) -> bool {
    tool_variables().any(|allowed| allowed == name)
}

/// At most this many bytes of variables (names and values) per tool: a `PATH`
/// and a few profile paths fit many times over, and a Hello stays small.
pub const MAX_TOOL_ENV_BYTES: usize = 8 * 1024;

/// Longest executable or profile path a client may name (Linux's `PATH_MAX`).
pub const MAX_PATH_BYTES: usize = 4096;

/// The three credential tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    AzureCli,
    AzureDeveloperCli,
    AzurePowerShell,
}

impl Tool {
    /// The executable's name as it is looked up on `PATH`.
    pub fn executable(self) -> &'static str {
        match self {
            Tool::AzureCli => "az",
            Tool::AzureDeveloperCli => "azd",
            Tool::AzurePowerShell => "pwsh",
        }
    }

    /// The directory that holds the tool's login, as the tool computes it.
    fn profile_dir(self, lookup: &dyn Fn(&str) -> Option<String>) -> Option<String> {
        let home = || lookup(HOME_VARIABLE).filter(|h| !h.is_empty());
        let under_home = |dir: &str| home().map(|h| join(&h, dir));
        match self {
            Tool::AzureCli => {
                non_empty(lookup("AZURE_CONFIG_DIR")).or_else(|| under_home(".azure"))
            }
            Tool::AzureDeveloperCli => {
                non_empty(lookup("AZD_CONFIG_DIR")).or_else(|| under_home(".azd"))
            }
            // Az.Accounts keeps its context (AzureRmContext.json) there.
            Tool::AzurePowerShell => under_home(".Azure"),
        }
    }
}

#[cfg(windows)]
const HOME_VARIABLE: &str = "USERPROFILE";
#[cfg(not(windows))]
const HOME_VARIABLE: &str = "HOME";

/// One tool credential as the requester's environment defines it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolSpec {
    /// The executable, as found on the requester's `PATH` with azbroker's
    /// shim directories skipped; `None` when it is not there.
    pub executable: Option<String>,
    /// Where the tool keeps its login (`AZURE_CONFIG_DIR` or `~/.azure` for
    /// `az`, `AZD_CONFIG_DIR` or `~/.azd` for `azd`, `~/.Azure` for
    /// PowerShell); `None` without a home directory.
    pub profile_dir: Option<String>,
    /// The requester's values of [`tool_variables`] and its `PATH` without
    /// shim directories: the whole environment the tool will run with.
    pub env: Vec<(String, String)>,
}

impl ToolSpec {
    /// The spec of `tool` from a variable lookup (`PATH` included).
    pub fn from_lookup(tool: Tool, lookup: &dyn Fn(&str) -> Option<String>) -> ToolSpec {
        let path = clean_path(lookup("PATH").as_deref());
        let executable = path
            .as_deref()
            .and_then(|path| find_executable(tool.executable(), path));
        let mut env: Vec<(String, String)> = tool_variables()
            .filter_map(|name| Some((name.to_string(), non_empty(lookup(name))?)))
            .collect();
        if let Some(path) = path {
            env.push(("PATH".into(), path));
        }
        ToolSpec {
            executable,
            profile_dir: tool.profile_dir(lookup),
            env,
        }
    }

    /// Why this spec cannot be used, if it cannot: the daemon checks what a
    /// client sent before running anything with it.
    pub fn check(&self, tool: Tool) -> Result<(), String> {
        if let Some(executable) = &self.executable {
            let path = std::path::Path::new(executable);
            let named = path
                .file_stem()
                .is_some_and(|stem| stem.eq_ignore_ascii_case(tool.executable()));
            if !path.is_absolute() || !named {
                return Err(format!(
                    "the {} executable must be an absolute path to '{}', not {executable:?}",
                    tool.executable(),
                    tool.executable()
                ));
            }
        }
        for (what, path) in [
            ("executable", &self.executable),
            ("profile", &self.profile_dir),
        ] {
            let path = path.as_deref().unwrap_or_default();
            if path.len() > MAX_PATH_BYTES || path.contains('\0') {
                return Err(format!(
                    "the {what} path is longer than {MAX_PATH_BYTES} bytes or holds a NUL byte"
                ));
            }
        }
        let mut bytes = 0;
        for (name, value) in &self.env {
            if name != "PATH" && !is_tool_variable(name) {
                return Err(format!("{name} is not a variable tools may see"));
            }
            if value.contains('\0') {
                return Err(format!("{name} holds a NUL byte"));
            }
            bytes += name.len() + value.len();
        }
        if bytes > MAX_TOOL_ENV_BYTES {
            return Err(format!(
                "the tool environment is {bytes} bytes, above the limit of {MAX_TOOL_ENV_BYTES}"
            ));
        }
        Ok(())
    }

    /// The value of `name` in [`env`](Self::env).
    pub fn var(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.is_empty())
}

fn join(dir: &str, name: &str) -> String {
    std::path::Path::new(dir)
        .join(name)
        .to_string_lossy()
        .into_owned()
}

/// `PATH` without azbroker's shim directories and relative entries.
#[cfg(unix)]
fn clean_path(path: Option<&str>) -> Option<String> {
    let (cleaned, _) = crate::shim::path_without_shims(path?.as_ref(), own_shim().as_deref());
    cleaned.into_string().ok()
}

#[cfg(not(unix))]
fn clean_path(path: Option<&str>) -> Option<String> {
    path.map(str::to_string)
}

/// The first executable `name` on `path`.
#[cfg(unix)]
fn find_executable(name: &str, path: &str) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    std::env::split_paths(path)
        .map(|dir| dir.join(name))
        .find(|candidate| {
            std::fs::metadata(candidate).is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0)
        })
        .and_then(|found| found.into_os_string().into_string().ok())
}

/// The first `name` with an executable extension (`PATHEXT`) on `path`.
#[cfg(not(unix))]
fn find_executable(name: &str, path: &str) -> Option<String> {
    let extensions = std::env::var("PATHEXT").unwrap_or_else(|_| ".COM;.EXE;.BAT;.CMD".into());
    std::env::split_paths(path)
        .flat_map(|dir| {
            extensions
                .split(';')
                .map(move |ext| dir.join(format!("{name}{}", ext.to_ascii_lowercase())))
        })
        .find(|candidate| candidate.is_file())
        .and_then(|found| found.into_os_string().into_string().ok())
}

/// azbroker's shim binary beside the running program (the CLI, the shim
/// itself, `azbrokerd`), whose links mark a shim directory without a marker.
#[cfg(unix)]
fn own_shim() -> Option<std::path::PathBuf> {
    let exe = std::env::current_exe().ok()?;
    Some(exe.parent()?.join(crate::shim::SHIM_BINARY)).filter(|p| p.is_file())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::os::unix::fs::PermissionsExt;

    fn spec(tool: Tool, vars: &[(&str, &str)]) -> ToolSpec {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ToolSpec::from_lookup(tool, &|name| vars.get(name).cloned())
    }

    #[test]
    fn the_tool_is_found_on_the_requesters_path_skipping_shims() {
        let dir = std::env::temp_dir().join(format!("azbroker-tool-{}", std::process::id()));
        let (shim, real) = (dir.join("shim"), dir.join("real"));
        for bin in [&shim, &real] {
            std::fs::create_dir_all(bin).unwrap();
            let az = bin.join("az");
            std::fs::write(&az, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(&az, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        std::fs::write(shim.join(crate::shim::MARKER_FILE), "").unwrap();
        let path = format!("{}:relative:{}", shim.display(), real.display());

        let az = spec(Tool::AzureCli, &[("PATH", &path), ("HOME", "/home/u")]);
        assert_eq!(
            az.executable.as_deref(),
            Some(real.join("az").to_str().unwrap())
        );
        assert_eq!(az.var("PATH"), Some(real.to_str().unwrap()));
        assert_eq!(az.profile_dir.as_deref(), Some("/home/u/.azure"));
        assert_eq!(az.check(Tool::AzureCli), Ok(()));
        assert_eq!(
            spec(Tool::AzureDeveloperCli, &[("PATH", &path)]).executable,
            None
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn profile_directories_follow_each_tools_rules() {
        let vars = [
            ("HOME", "/home/u"),
            ("AZURE_CONFIG_DIR", "/home/u/.azure-work"),
            ("AZD_CONFIG_DIR", "/home/u/.azd-work"),
        ];
        let dir = |tool| spec(tool, &vars).profile_dir;
        assert_eq!(dir(Tool::AzureCli).as_deref(), Some("/home/u/.azure-work"));
        assert_eq!(
            dir(Tool::AzureDeveloperCli).as_deref(),
            Some("/home/u/.azd-work")
        );
        assert_eq!(
            dir(Tool::AzurePowerShell).as_deref(),
            Some("/home/u/.Azure")
        );
        assert_eq!(spec(Tool::AzureCli, &[]).profile_dir, None);
    }

    #[test]
    fn only_tool_variables_travel() {
        let az = spec(
            Tool::AzureCli,
            &[
                ("HOME", "/home/u"),
                ("AZURE_CLIENT_SECRET", "s3cret"),
                ("LD_PRELOAD", "/tmp/evil.so"),
                ("https_proxy", "http://proxy:3128"),
            ],
        );
        let names: Vec<&str> = az.env.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["HOME", "https_proxy"]);
    }

    #[test]
    fn check_refuses_what_a_client_should_not_send() {
        let mut az = spec(Tool::AzureCli, &[("HOME", "/home/u")]);
        az.executable = Some("/usr/bin/python3".into());
        assert!(az.check(Tool::AzureCli).unwrap_err().contains("'az'"));
        az.executable = Some("bin/az".into());
        assert!(az.check(Tool::AzureCli).is_err());
        az.executable = Some("/usr/bin/az".into());
        az.env.push(("LD_PRELOAD".into(), "/tmp/evil.so".into()));
        assert!(az.check(Tool::AzureCli).unwrap_err().contains("LD_PRELOAD"));
        az.env.pop();
        az.env.push(("HOME".into(), "x".repeat(MAX_TOOL_ENV_BYTES)));
        assert!(az.check(Tool::AzureCli).unwrap_err().contains("limit"));
    }
}
