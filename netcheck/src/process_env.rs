//! What else in a process's environment decides what it sees, beyond its
//! network settings: which `az`, `azd` and `pwsh` its `PATH` finds, where
//! their profiles live, and the proxy and CA variables as set.
//!
//! azbrokerd reports its own in `Request::Diagnose`; `azbroker diagnose`
//! gathers the shell's with the same function and compares the two, so a
//! daemon started by a client with another environment (an editor's MCP
//! server with a minimal `PATH`, say) is visible.

use std::ffi::{OsStr, OsString};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use azbroker_proto::diagnose::{EnvironmentEntry, ProcessEnvironment, MAX_ENVIRONMENT_VALUE_LEN};
use azbroker_proto::shim;

use crate::settings::{mask_url_credentials, shorten_to};

/// The credential tools whose executables are looked up on `PATH`.
pub const TOOLS: [&str; 3] = ["az", "azd", "pwsh"];

/// Proxy variables (each spelling: tools read one or the other) and CA variables.
pub const VARIABLES: [&str; 12] = [
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
    "AZBROKER_CA_FILE",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
];

/// This process's environment. `shim_binary` is azbroker's `az` shim, whose
/// directories are skipped: the daemon never runs the shim as `az`.
pub fn of_this_process(shim_binary: Option<&Path>) -> ProcessEnvironment {
    gather(&|name| std::env::var_os(name), shim_binary)
}

/// The environment that `lookup` describes.
pub fn gather(
    lookup: &dyn Fn(&str) -> Option<OsString>,
    shim_binary: Option<&Path>,
) -> ProcessEnvironment {
    let set = |name: &str| lookup(name).filter(|v| !v.is_empty());
    let entry = |name: &str, value: Option<String>| EnvironmentEntry {
        name: name.to_string(),
        value: value.map(|v| shorten_to(v, MAX_ENVIRONMENT_VALUE_LEN)),
    };
    let path = set("PATH").unwrap_or_default();
    let tools = TOOLS
        .iter()
        .map(|tool| {
            let found = find_tool(tool, &path, shim_binary);
            entry(tool, found.map(|p| p.display().to_string()))
        })
        .collect();
    let home = set("HOME").map(PathBuf::from);
    let profile = |variable: &str, default: &str| {
        let dir = set(variable)
            .map(PathBuf::from)
            .or_else(|| home.as_ref().map(|home| home.join(default)));
        entry(variable, dir.map(|d| d.display().to_string()))
    };
    let profiles = vec![
        profile("AZURE_CONFIG_DIR", ".azure"),
        profile("AZD_CONFIG_DIR", ".azd"),
    ];
    let variables = VARIABLES
        .iter()
        .map(|name| {
            let value = set(name).map(|v| v.to_string_lossy().into_owned());
            // Proxy URLs may carry user:password.
            let proxy_url = name.to_ascii_uppercase().ends_with("_PROXY")
                && !name.eq_ignore_ascii_case("NO_PROXY");
            entry(
                name,
                if proxy_url {
                    value.map(|url| mask_url_credentials(&url))
                } else {
                    value
                },
            )
        })
        .collect();
    ProcessEnvironment {
        tools,
        profiles,
        variables,
    }
}

/// The first executable `name` on `path` outside azbroker's shim directories.
fn find_tool(name: &str, path: &OsStr, shim_binary: Option<&Path>) -> Option<PathBuf> {
    std::env::split_paths(path)
        .filter(|dir| dir.is_absolute() && !shim::is_shim_dir(dir, shim_binary))
        .map(|dir| dir.join(name))
        .find(|file| std::fs::metadata(file).is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::os::unix::fs::PermissionsExt as _;

    fn value<'a>(entries: &'a [EnvironmentEntry], name: &str) -> Option<&'a str> {
        entries
            .iter()
            .find(|e| e.name == name)
            .unwrap_or_else(|| panic!("{name} not listed"))
            .value
            .as_deref()
    }

    #[test]
    fn tools_profiles_and_variables_as_the_environment_says() {
        let dir = tempfile::tempdir().unwrap();
        let (shims, bin, empty) = (
            dir.path().join("shims"),
            dir.path().join("bin"),
            dir.path().join("empty"),
        );
        for d in [&shims, &bin, &empty] {
            std::fs::create_dir(d).unwrap();
        }
        let executable = |path: &Path| {
            std::fs::write(path, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
        };
        executable(&shims.join("az"));
        std::fs::write(shims.join(shim::MARKER_FILE), "").unwrap();
        executable(&bin.join("az"));
        executable(&bin.join("azd"));
        std::fs::write(empty.join("pwsh"), "not executable").unwrap();
        let path = std::env::join_paths([&shims, &empty, &bin]).unwrap();
        let vars: HashMap<&str, OsString> = HashMap::from([
            ("PATH", path),
            ("HOME", "/home/u".into()),
            ("AZD_CONFIG_DIR", "/work/azd".into()),
            ("https_proxy", "http://alice:pa55@proxy.corp:3128".into()),
            ("NO_PROXY", "localhost,.corp".into()),
            ("SSL_CERT_FILE", "".into()),
        ]);
        let env = gather(&|name| vars.get(name).cloned(), None);
        let az = bin.join("az").display().to_string();
        let azd = bin.join("azd").display().to_string();
        assert_eq!(
            value(&env.tools, "az"),
            Some(az.as_str()),
            "the shim is skipped"
        );
        assert_eq!(value(&env.tools, "azd"), Some(azd.as_str()));
        assert_eq!(value(&env.tools, "pwsh"), None, "not executable");
        assert_eq!(
            value(&env.profiles, "AZURE_CONFIG_DIR"),
            Some("/home/u/.azure")
        );
        assert_eq!(value(&env.profiles, "AZD_CONFIG_DIR"), Some("/work/azd"));
        assert_eq!(
            value(&env.variables, "https_proxy"),
            Some("http://alice:***@proxy.corp:3128")
        );
        assert_eq!(value(&env.variables, "HTTPS_PROXY"), None);
        assert_eq!(value(&env.variables, "NO_PROXY"), Some("localhost,.corp"));
        assert_eq!(
            value(&env.variables, "SSL_CERT_FILE"),
            None,
            "empty is unset"
        );
        assert_eq!(env.variables.len(), VARIABLES.len());

        let bare = gather(&|_| None, None);
        assert!(bare.tools.iter().all(|t| t.value.is_none()));
        assert!(bare.profiles.iter().all(|p| p.value.is_none()));
    }

    #[test]
    fn long_values_are_cut() {
        let long = "x".repeat(MAX_ENVIRONMENT_VALUE_LEN * 2);
        let env = gather(
            &|name| (name == "SSL_CERT_DIR").then(|| long.clone().into()),
            None,
        );
        let cut = value(&env.variables, "SSL_CERT_DIR").unwrap();
        assert_eq!(cut.len(), MAX_ENVIRONMENT_VALUE_LEN);
        assert!(cut.ends_with("..."));
    }
}
