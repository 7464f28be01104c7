//! What else in a process's environment decides what it sees, beyond its
//! network settings: which `az`, `azd` and `pwsh` its `PATH` finds, where
//! their profiles live, and the proxy and CA variables as set.
//!
//! azbrokerd reports its own in `Request::Diagnose`; `azbroker diagnose`
//! gathers the shell's with the same function and compares the two, so a
//! daemon started by a client with another environment (an editor's MCP
//! server with a minimal `PATH`, say) is visible.

use std::ffi::OsString;

use azbroker_proto::diagnose::{EnvironmentEntry, ProcessEnvironment, MAX_ENVIRONMENT_VALUE_LEN};
use azbroker_proto::{Tool, ToolSpec};

use crate::settings::{mask_url_credentials, shorten_to};

/// The credential tools whose executables are looked up on `PATH`.
pub const TOOLS: [(&str, Tool); 3] = [
    ("az", Tool::AzureCli),
    ("azd", Tool::AzureDeveloperCli),
    ("pwsh", Tool::AzurePowerShell),
];

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

/// This process's environment.
pub fn of_this_process() -> ProcessEnvironment {
    gather(&|name| std::env::var_os(name))
}

/// The environment that `lookup` describes. Tools are looked up as a client
/// of that environment sends them (`azbroker_proto::tool`): azbroker's shim
/// directories skipped, since the daemon never runs the shim as `az`.
pub fn gather(lookup: &dyn Fn(&str) -> Option<OsString>) -> ProcessEnvironment {
    let set = |name: &str| lookup(name).filter(|v| !v.is_empty());
    let entry = |name: &str, value: Option<String>| EnvironmentEntry {
        name: name.to_string(),
        value: value.map(|v| shorten_to(v, MAX_ENVIRONMENT_VALUE_LEN)),
    };
    // The tools and profiles exactly as a client of this environment would
    // send them to the daemon (proto's rules: shim directories skipped).
    let text = |name: &str| lookup(name).and_then(|v| v.into_string().ok());
    let spec = |tool| ToolSpec::from_lookup(tool, &text);
    let tools = TOOLS
        .iter()
        .map(|(name, tool)| entry(name, spec(*tool).executable))
        .collect();
    let profiles = vec![
        entry("AZURE_CONFIG_DIR", spec(Tool::AzureCli).profile_dir),
        entry("AZD_CONFIG_DIR", spec(Tool::AzureDeveloperCli).profile_dir),
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

#[cfg(test)]
mod tests {
    use super::*;
    use azbroker_proto::shim;
    use std::collections::HashMap;
    use std::os::unix::fs::PermissionsExt as _;
    use std::path::Path;

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
            ("AZD_CONFIG_DIR", "/home/me/.azd-work".into()),
            ("https_proxy", "http://alice:pa55@proxy.corp:3128".into()),
            ("NO_PROXY", "localhost,.corp".into()),
            ("SSL_CERT_FILE", "".into()),
        ]);
        let env = gather(&|name| vars.get(name).cloned());
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
        assert_eq!(
            value(&env.profiles, "AZD_CONFIG_DIR"),
            Some("/home/me/.azd-work")
        );
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

        let bare = gather(&|_| None);
        assert!(bare.tools.iter().all(|t| t.value.is_none()));
        assert!(bare.profiles.iter().all(|p| p.value.is_none()));
    }

    #[test]
    fn long_values_are_cut() {
        let long = "x".repeat(MAX_ENVIRONMENT_VALUE_LEN * 2);
        let env = gather(&|name| (name == "SSL_CERT_DIR").then(|| long.clone().into()));
        let cut = value(&env.variables, "SSL_CERT_DIR").unwrap();
        assert_eq!(cut.len(), MAX_ENVIRONMENT_VALUE_LEN);
        assert!(cut.ends_with("..."));
    }
}
