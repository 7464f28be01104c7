//! The policy file, `~/.config/azbroker/policy.toml` (`$XDG_CONFIG_HOME`):
//! scope rules per exec NAME and for processes under no exec.
//!
//! ```toml
//! [default]                      # processes under no `azbroker exec`
//! deny = ["https://vault.azure.net/*"]
//!
//! [names.storage-agent]          # `azbroker exec --name storage-agent`
//! allow = ["https://storage.azure.com/*"]
//! ```
//!
//! The whole file is checked before any of it applies: one bad pattern keeps
//! the previous policy in force, and the error is logged and shown in status.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::rules::Rules;

/// Largest policy file read.
pub const MAX_POLICY_BYTES: u64 = 64 * 1024;

/// Where the policy file lives, when there is a home or config directory.
pub fn default_path() -> Option<PathBuf> {
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|home| PathBuf::from(home).join(".config"))
        })?;
    Some(config.join("azbroker").join("policy.toml"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyToml {
    default: Option<Section>,
    #[serde(default)]
    names: HashMap<String, Section>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Section {
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    deny: Vec<String>,
}

/// A checked policy file.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PolicyFile {
    /// For processes under no exec.
    pub default: Rules,
    pub names: HashMap<String, Rules>,
}

impl PolicyFile {
    pub fn parse(text: &str, path: &Path) -> Result<PolicyFile, String> {
        let shown = path.display();
        let parsed: PolicyToml =
            toml::from_str(text).map_err(|e| format!("{shown}: {}", e.message()))?;
        let default = match parsed.default {
            Some(section) => {
                Rules::parse(&section.allow, &section.deny, format!("{shown} [default]"))?
            }
            None => Rules::default(),
        };
        let mut names = HashMap::new();
        for (name, section) in parsed.names {
            let origin = format!("{shown} [names.{name}]");
            names.insert(name, Rules::parse(&section.allow, &section.deny, origin)?);
        }
        Ok(PolicyFile { default, names })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_whole_file_parses_or_nothing_does() {
        let path = Path::new("/home/u/.config/azbroker/policy.toml");
        let file = PolicyFile::parse(
            r#"
            [default]
            deny = ["https://vault.azure.net/*"]
            [names.storage-agent]
            allow = ["https://storage.azure.com/*"]
            "#,
            path,
        )
        .unwrap();
        assert!(file
            .default
            .refuses("https://vault.azure.net/.default")
            .unwrap()
            .contains("policy.toml [default]"));
        let agent = &file.names["storage-agent"];
        assert!(agent
            .refuses("https://management.azure.com/.default")
            .is_some());
        assert!(agent
            .refuses("https://storage.azure.com/.default")
            .is_none());

        for bad in [
            "[names.a]\nallow = [\"storage\"]",
            "[names.a]\nalow = []",
            "[default]\ndeny = \"https://vault.azure.net/*\"",
            "not toml at all [",
        ] {
            let error = PolicyFile::parse(bad, path).unwrap_err();
            assert!(
                error.starts_with("/home/u/.config/azbroker/policy.toml"),
                "{error}"
            );
        }
    }
}
