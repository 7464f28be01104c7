//! The Azure clouds: each one's Entra ID authority, Resource Manager and Graph
//! hosts, and the DNS suffixes of the services the guide names.
//!
//! Part of the contract for the same reason as [`crate::paths`]: every client
//! must derive the same endpoints from the same `AZURE_CLOUD`.

use crate::env::{EnvError, Vars};

/// One sovereign cloud. Hosts are bare DNS names (no scheme, no port).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cloud {
    /// The canonical `AZURE_CLOUD` name, e.g. `AzureCloud`.
    pub name: &'static str,
    /// Other accepted spellings (compared case-insensitively).
    pub aliases: &'static [&'static str],
    /// Entra ID authority host.
    pub authority: &'static str,
    /// Older authority names some tools still call (the guide lists them for firewalls).
    pub legacy_authorities: &'static [&'static str],
    pub resource_manager: &'static str,
    /// The Azure CLI's default token resource host (`az account get-access-token`
    /// without `--resource`): the classic management endpoint.
    pub cli_default_resource: &'static str,
    pub graph: &'static str,
    /// `<account>.blob.<storage_suffix>`, `.table.`, `.queue.`, `.file.`, `.dfs.`
    pub storage_suffix: &'static str,
    pub key_vault_suffix: &'static str,
    pub cosmos_suffix: &'static str,
    pub service_bus_suffix: &'static str,
}

impl Cloud {
    /// The Resource Manager scope, e.g. `https://management.azure.com/.default`.
    pub fn resource_manager_scope(&self) -> String {
        format!("https://{}/.default", self.resource_manager)
    }

    /// The authority as a URL, e.g. `https://login.microsoftonline.com`.
    pub fn authority_url(&self) -> String {
        format!("https://{}", self.authority)
    }
}

pub const AZURE_PUBLIC: Cloud = Cloud {
    name: "AzureCloud",
    aliases: &["public", "azurepubliccloud"],
    authority: "login.microsoftonline.com",
    legacy_authorities: &["login.windows.net"],
    resource_manager: "management.azure.com",
    cli_default_resource: "management.core.windows.net",
    graph: "graph.microsoft.com",
    storage_suffix: "core.windows.net",
    key_vault_suffix: "vault.azure.net",
    cosmos_suffix: "documents.azure.com",
    service_bus_suffix: "servicebus.windows.net",
};

pub const AZURE_CHINA: Cloud = Cloud {
    name: "AzureChinaCloud",
    aliases: &["china"],
    authority: "login.chinacloudapi.cn",
    legacy_authorities: &[],
    resource_manager: "management.chinacloudapi.cn",
    cli_default_resource: "management.core.chinacloudapi.cn",
    graph: "microsoftgraph.chinacloudapi.cn",
    storage_suffix: "core.chinacloudapi.cn",
    key_vault_suffix: "vault.azure.cn",
    cosmos_suffix: "documents.azure.cn",
    service_bus_suffix: "servicebus.chinacloudapi.cn",
};

pub const AZURE_US_GOVERNMENT: Cloud = Cloud {
    name: "AzureUSGovernment",
    aliases: &["usgov", "azureusgovernmentcloud"],
    authority: "login.microsoftonline.us",
    legacy_authorities: &[],
    resource_manager: "management.usgovcloudapi.net",
    cli_default_resource: "management.core.usgovcloudapi.net",
    graph: "graph.microsoft.us",
    storage_suffix: "core.usgovcloudapi.net",
    key_vault_suffix: "vault.usgovcloudapi.net",
    cosmos_suffix: "documents.azure.us",
    service_bus_suffix: "servicebus.usgovcloudapi.net",
};

pub const CLOUDS: [Cloud; 3] = [AZURE_PUBLIC, AZURE_CHINA, AZURE_US_GOVERNMENT];

/// The cloud an `AZURE_CLOUD` value names (any case, canonical name or alias).
pub fn named(name: &str) -> Option<&'static Cloud> {
    let name = name.trim();
    CLOUDS.iter().find(|cloud| {
        cloud.name.eq_ignore_ascii_case(name)
            || cloud.aliases.iter().any(|a| a.eq_ignore_ascii_case(name))
    })
}

/// The cloud whose authority is `authority` (an `https://` URL as in a chain
/// spec, trailing slash or not); `None` for a custom authority host.
pub fn by_authority(authority: &str) -> Option<&'static Cloud> {
    let host = authority
        .strip_prefix("https://")?
        .trim_end_matches('/')
        .to_ascii_lowercase();
    CLOUDS
        .iter()
        .find(|cloud| cloud.authority == host || cloud.legacy_authorities.contains(&host.as_str()))
}

/// The cloud `AZURE_CLOUD` selects from a variable lookup; public when unset or empty.
pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<&'static Cloud, EnvError> {
    from_vars(&Vars::new(&lookup))
}

/// [`from_lookup`] for an existing [`Vars`].
pub fn from_vars(vars: &Vars<'_>) -> Result<&'static Cloud, EnvError> {
    match vars.text("AZURE_CLOUD") {
        None => Ok(&AZURE_PUBLIC),
        Some(value) => named(&value).ok_or_else(|| EnvError {
            variable: "AZURE_CLOUD",
            why: format!(
                "{value:?} is not a known cloud: use AzureCloud, AzureChinaCloud or AzureUSGovernment"
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::ChainSpec;

    #[test]
    fn the_chain_takes_its_authority_from_every_spelling() {
        for cloud in &CLOUDS {
            for name in std::iter::once(&cloud.name).chain(cloud.aliases) {
                let chain =
                    ChainSpec::from_lookup(|var| (var == "AZURE_CLOUD").then(|| name.to_string()))
                        .unwrap();
                assert_eq!(chain.authority_host, cloud.authority_url(), "{name}");
                assert_eq!(named(&name.to_uppercase()), Some(cloud));
            }
        }
        assert_eq!(named("Mars"), None);
    }

    #[test]
    fn authorities_name_their_cloud() {
        for cloud in &CLOUDS {
            assert_eq!(by_authority(&cloud.authority_url()), Some(cloud));
            assert_eq!(
                by_authority(&format!("{}/", cloud.authority_url())),
                Some(cloud)
            );
        }
        assert_eq!(
            by_authority("https://login.windows.net"),
            Some(&AZURE_PUBLIC)
        );
        assert_eq!(by_authority("https://127.0.0.1:8443"), None);
        assert_eq!(by_authority("login.microsoftonline.com"), None);
    }

    #[test]
    fn unset_means_public_and_unknown_is_an_error() {
        assert_eq!(from_lookup(|_| None).unwrap().name, "AzureCloud");
        assert_eq!(
            from_lookup(|_| Some("china".into()))
                .unwrap()
                .resource_manager,
            "management.chinacloudapi.cn"
        );
        let error = from_lookup(|_| Some("Mars".into()))
            .unwrap_err()
            .to_string();
        assert!(error.contains("AZURE_CLOUD=\"Mars\""), "{error}");
    }
}
