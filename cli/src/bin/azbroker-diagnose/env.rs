//! What this process's environment says: the variables that matter (secret
//! values never shown), the chain they select and why, the cloud and authority.

use azbroker_proto::cloud::{self, Cloud};
use azbroker_proto::ChainSpec;
use serde::Serialize;

use super::{Level, Problem};

/// Variables whose values are never shown, in any output.
pub const SECRET_VARIABLES: [&str; 5] = [
    "AZURE_CLIENT_SECRET",
    "AZURE_CLIENT_CERTIFICATE_PASSWORD",
    "IDENTITY_HEADER",
    "MSI_SECRET",
    "AZURE_PASSWORD",
];

/// Proxy URLs: shown with any password masked.
const PROXY_VARIABLES: [&str; 6] = [
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// Every variable the report lists when set, by group, in display order.
const VARIABLES: [(&str, &[&str]); 5] = [
    (
        "credential",
        &[
            "AZURE_TENANT_ID",
            "AZURE_CLIENT_ID",
            "AZURE_CLIENT_SECRET",
            "AZURE_CLIENT_CERTIFICATE_PATH",
            "AZURE_CLIENT_CERTIFICATE_PASSWORD",
            "AZURE_FEDERATED_TOKEN_FILE",
            "IDENTITY_ENDPOINT",
            "IDENTITY_HEADER",
            "MSI_SECRET",
            "AZURE_USERNAME",
            "AZURE_PASSWORD",
            "AZURE_MCP_CLIENT_ID",
        ],
    ),
    (
        "chain",
        &[
            "AZURE_TOKEN_CREDENTIALS",
            "AZURE_MCP_ONLY_USE_BROKER_CREDENTIAL",
            "AZURE_MCP_INCLUDE_PRODUCTION_CREDENTIALS",
            "AZURE_MCP_BROWSER_AUTH_TIMEOUT_SECONDS",
        ],
    ),
    ("cloud", &["AZURE_CLOUD", "AZURE_AUTHORITY_HOST"]),
    // The same list the daemon-environment report compares.
    ("network", &azbroker_netcheck::process_env::VARIABLES),
    (
        "broker",
        &[
            "AZBROKER_SOCKET",
            "AZBROKER_NO_AUTOSTART",
            "AZBROKER_DAEMON",
        ],
    ),
];

/// The environment, as the report shows it.
#[derive(Serialize)]
pub struct EnvReport {
    pub status: Level,
    pub variables: Vec<Variable>,
    pub chain: ChainReport,
    pub cloud: CloudReport,
}

#[derive(Serialize)]
pub struct Variable {
    pub name: &'static str,
    pub group: &'static str,
    /// The value, masked for secrets and proxy passwords.
    pub value: String,
    pub secret: bool,
    /// Something worth knowing about this setting.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Serialize)]
pub struct ChainReport {
    pub status: Level,
    /// Why this chain, e.g. `default order` or `AZURE_TOKEN_CREDENTIALS=dev`.
    pub selected_by: Option<String>,
    pub credentials: Vec<String>,
    pub authority: Option<String>,
    pub error: Option<String>,
}

#[derive(Serialize)]
pub struct CloudReport {
    pub status: Level,
    pub name: &'static str,
    pub authority: String,
    pub resource_manager: &'static str,
    pub graph: &'static str,
    pub error: Option<String>,
}

/// The environment, read once, with what the other checks need from it.
pub struct Environment {
    pub report: EnvReport,
    /// The chain, when the environment selects a valid one.
    pub chain: Option<ChainSpec>,
    pub cloud: &'static Cloud,
    /// The authority URL credentials use (`AZURE_AUTHORITY_HOST`, else the cloud's).
    pub authority_url: String,
    /// Values that must never appear in any output (see `render::Redactor`).
    pub secrets: Vec<String>,
}

pub fn gather(lookup: &dyn Fn(&str) -> Option<String>) -> Environment {
    let set = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
    let mut variables = Vec::new();
    for (group, names) in VARIABLES {
        for &name in names {
            if let Some(value) = set(name) {
                variables.push(show(name, group, &value));
            }
        }
    }

    let (cloud, cloud_error) = match cloud::from_lookup(lookup) {
        Ok(cloud) => (cloud, None),
        Err(e) => (&cloud::CLOUDS[0], Some(e.to_string())),
    };
    let chain = ChainSpec::from_lookup(lookup);
    // As the chain computes it, but also when another variable breaks the chain.
    let authority_url = match set("AZURE_AUTHORITY_HOST") {
        Some(host) if host.starts_with("https://") => host.trim_end_matches('/').to_string(),
        _ => cloud.authority_url(),
    };
    let chain_report = match &chain {
        Ok(chain) => ChainReport {
            status: Level::Ok,
            selected_by: Some(chain.selected_by.clone()),
            credentials: chain.kinds().map(|k| k.name().to_string()).collect(),
            authority: Some(chain.authority_host.clone()),
            error: None,
        },
        Err(e) => ChainReport {
            status: Level::Fail,
            selected_by: None,
            credentials: Vec::new(),
            authority: None,
            error: Some(e.to_string()),
        },
    };
    let cloud_report = CloudReport {
        status: if cloud_error.is_some() {
            Level::Fail
        } else {
            Level::Ok
        },
        name: cloud.name,
        authority: authority_url.clone(),
        resource_manager: cloud.resource_manager,
        graph: cloud.graph,
        error: cloud_error,
    };

    let mut secrets: Vec<String> = SECRET_VARIABLES.iter().filter_map(|n| set(n)).collect();
    for name in PROXY_VARIABLES {
        if let Some(url) = set(name) {
            secrets.extend(proxy_password(&url));
        }
    }
    Environment {
        report: EnvReport {
            status: chain_report.status.max(cloud_report.status),
            variables,
            chain: chain_report,
            cloud: cloud_report,
        },
        chain: chain.ok(),
        cloud,
        authority_url,
        secrets,
    }
}

/// One variable, masked as needed.
fn show(name: &'static str, group: &'static str, value: &str) -> Variable {
    let secret = SECRET_VARIABLES.contains(&name);
    let value = if secret {
        "(set, hidden)".to_string()
    } else if PROXY_VARIABLES.contains(&name) {
        azbroker_netcheck::mask_url_credentials(value)
    } else {
        shorten(value)
    };
    let note = match name {
        "SSL_CERT_FILE" | "SSL_CERT_DIR" => Some(
            "replaces the system's trusted roots in azbrokerd (as in most tools): it must hold the public roots too; a file with only your corporate CA belongs in AZBROKER_CA_FILE".to_string(),
        ),
        _ => None,
    };
    Variable {
        name,
        group,
        value,
        secret,
        note,
    }
}

fn shorten(value: &str) -> String {
    const MAX: usize = 200;
    match value.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}...", &value[..cut]),
        None => value.to_string(),
    }
}

/// The password (or bare user token) in a proxy URL, raw and percent-decoded.
fn proxy_password(url: &str) -> Vec<String> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let Some((userinfo, _)) = authority.rsplit_once('@') else {
        return Vec::new();
    };
    let secret = userinfo.split_once(':').map_or(userinfo, |(_, pass)| pass);
    let mut found = vec![secret.to_string()];
    let decoded = percent_decode(secret);
    if decoded != secret {
        found.push(decoded);
    }
    found
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The environment's problems, for the summary.
pub fn problems(env: &Environment, out: &mut Vec<Problem>) {
    if let Some(error) = &env.report.chain.error {
        out.push(Problem::fail(
            "environment",
            "credential chain",
            format!("This environment selects no usable credential chain: {error}."),
            "Fix or unset the variable named above; `azbroker diagnose` lists the variables it read.",
        ));
    }
    if let Some(error) = &env.report.cloud.error {
        out.push(Problem::fail(
            "environment",
            "cloud",
            format!("{error}."),
            "Set AZURE_CLOUD to AzureCloud, AzureChinaCloud or AzureUSGovernment, or unset it.",
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gather_from(vars: &[(&str, &str)]) -> Environment {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        gather(&move |name: &str| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
    }

    #[test]
    fn secrets_and_proxy_passwords_are_masked_and_remembered() {
        let env = gather_from(&[
            ("AZURE_CLIENT_SECRET", "s3cret-value"),
            ("IDENTITY_HEADER", "header-value"),
            ("HTTPS_PROXY", "http://alice:p%40ss@proxy:3128"),
            ("AZURE_CLIENT_ID", "client-1"),
        ]);
        let shown = |name: &str| {
            env.report
                .variables
                .iter()
                .find(|v| v.name == name)
                .map(|v| v.value.clone())
        };
        assert_eq!(
            shown("AZURE_CLIENT_SECRET").as_deref(),
            Some("(set, hidden)")
        );
        assert_eq!(shown("IDENTITY_HEADER").as_deref(), Some("(set, hidden)"));
        assert_eq!(
            shown("HTTPS_PROXY").as_deref(),
            Some("http://alice:***@proxy:3128")
        );
        assert_eq!(shown("AZURE_CLIENT_ID").as_deref(), Some("client-1"));
        for secret in ["s3cret-value", "header-value", "p%40ss", "p@ss"] {
            assert!(
                env.secrets.iter().any(|s| s == secret),
                "{secret} not remembered"
            );
        }
    }

    #[test]
    fn a_bad_switch_is_a_failure_that_names_the_variable() {
        let env = gather_from(&[
            ("AZURE_TOKEN_CREDENTIALS", "AzureCLI2"),
            ("AZURE_AUTHORITY_HOST", "https://127.0.0.1:9"),
        ]);
        assert!(env.chain.is_none());
        assert_eq!(env.report.status, Level::Fail);
        let error = env.report.chain.error.as_deref().unwrap();
        assert!(error.contains("AZURE_TOKEN_CREDENTIALS"), "{error}");
        // The network checks still know where to go.
        assert_eq!(env.authority_url, "https://127.0.0.1:9");
    }

    #[test]
    fn the_cloud_picks_the_endpoints() {
        let env = gather_from(&[("AZURE_CLOUD", "AzureUSGovernment")]);
        assert_eq!(env.cloud.resource_manager, "management.usgovcloudapi.net");
        assert_eq!(env.authority_url, "https://login.microsoftonline.us");
        let env = gather_from(&[("AZURE_AUTHORITY_HOST", "https://127.0.0.1:8443/")]);
        assert_eq!(env.authority_url, "https://127.0.0.1:8443");
        assert_eq!(
            env.report.chain.selected_by.as_deref(),
            Some("default order")
        );
    }
}
