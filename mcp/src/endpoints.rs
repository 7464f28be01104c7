//! Where the Azure services are: the cloud's Resource Manager and storage
//! endpoints (`AZURE_CLOUD`), with `AZBROKER_ARM_ENDPOINT` overriding the
//! Resource Manager base URL (tests point it at a local double).

use azbroker_proto::cloud;
use azbroker_proto::env::Vars;
use reqwest::Url;

/// Token scope of the Blob service data plane: the same in every cloud.
pub const STORAGE_SCOPE: &str = "https://storage.azure.com/.default";

#[derive(Debug, Clone)]
pub struct Endpoints {
    /// Resource Manager base URL, e.g. `https://management.azure.com/`.
    pub arm: Url,
    /// Scope of Resource Manager tokens, e.g. `https://management.azure.com/.default`.
    /// It follows the cloud, not an `AZBROKER_ARM_ENDPOINT` override: a double
    /// of Resource Manager still expects Resource Manager's audience.
    pub arm_scope: String,
    /// DNS suffix of storage accounts, e.g. `core.windows.net`.
    pub storage_suffix: &'static str,
}

impl Endpoints {
    /// From `AZURE_CLOUD` and `AZBROKER_ARM_ENDPOINT`, read through `env`.
    pub fn from_lookup(env: impl Fn(&str) -> Option<String>) -> Result<Endpoints, String> {
        let vars = Vars::new(&env);
        let cloud = cloud::from_vars(&vars).map_err(|e| e.to_string())?;
        let cloud_arm =
            Url::parse(&format!("https://{}/", cloud.resource_manager)).expect("cloud URLs parse");
        let arm_scope = cloud.resource_manager_scope();
        let arm = match vars.text("AZBROKER_ARM_ENDPOINT") {
            None => cloud_arm,
            Some(text) => parse_https_base(text.trim())
                .map_err(|e| format!("AZBROKER_ARM_ENDPOINT={text:?}: {e}"))?,
        };
        Ok(Endpoints {
            arm,
            arm_scope,
            storage_suffix: cloud.storage_suffix,
        })
    }

    pub fn from_env() -> Result<Endpoints, String> {
        Endpoints::from_lookup(|name| std::env::var(name).ok())
    }
}

/// An https URL without query or fragment, ending in `/` so that relative
/// paths join under it.
pub fn parse_https_base(text: &str) -> Result<Url, String> {
    let mut url = Url::parse(text).map_err(|e| format!("not a URL: {e}"))?;
    if url.scheme() != "https" {
        return Err("must be an https URL (tokens never travel in clear text)".into());
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("has no host".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("must not have a query or fragment".into());
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints(vars: &[(&str, &str)]) -> Result<Endpoints, String> {
        Endpoints::from_lookup(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn clouds_pick_resource_manager_and_storage() {
        let public = endpoints(&[]).unwrap();
        assert_eq!(public.arm.as_str(), "https://management.azure.com/");
        assert_eq!(public.arm_scope, "https://management.azure.com/.default");
        assert_eq!(public.storage_suffix, "core.windows.net");

        let china = endpoints(&[("AZURE_CLOUD", "AzureChinaCloud")]).unwrap();
        assert_eq!(china.arm.as_str(), "https://management.chinacloudapi.cn/");
        assert_eq!(
            china.arm_scope,
            "https://management.chinacloudapi.cn/.default"
        );
        let usgov = endpoints(&[("AZURE_CLOUD", "usgov")]).unwrap();
        assert_eq!(usgov.storage_suffix, "core.usgovcloudapi.net");

        let error = endpoints(&[("AZURE_CLOUD", "Mars")]).unwrap_err();
        assert!(error.contains("not a known cloud"), "{error}");
    }

    #[test]
    fn the_override_must_be_https_and_keeps_the_cloud_scope() {
        let local = endpoints(&[("AZBROKER_ARM_ENDPOINT", "https://127.0.0.1:8443")]).unwrap();
        assert_eq!(local.arm.as_str(), "https://127.0.0.1:8443/");
        assert_eq!(local.arm_scope, "https://management.azure.com/.default");
        let nested = endpoints(&[("AZBROKER_ARM_ENDPOINT", "https://host/arm")]).unwrap();
        assert_eq!(
            nested.arm.join("subscriptions").unwrap().path(),
            "/arm/subscriptions"
        );

        for bad in [
            "http://127.0.0.1:8443",
            "127.0.0.1:8443",
            "https://user:pw@host/",
            "https://host/?x=1",
        ] {
            let error = endpoints(&[("AZBROKER_ARM_ENDPOINT", bad)]).unwrap_err();
            assert!(
                error.starts_with("AZBROKER_ARM_ENDPOINT="),
                "{bad}: {error}"
            );
        }
    }
}
