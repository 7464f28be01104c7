//! The endpoints a token (and an MCP tool) needs, checked step by step.
//!
//! The daemon runs the checks (`Request::Diagnose`): it is the process that
//! talks to Entra ID, with the proxy and CA settings of the environment it was
//! started in. Only when no daemon answers (or it is too old to know the
//! request) does this process run them itself, with its own settings, and the
//! report says so.

use std::sync::Arc;
use std::time::Duration;

use azbroker_cli::advice::{self, Process, Target};
use azbroker_netcheck::NetworkSettings;
use azbroker_proto::diagnose::{
    AddressScope, DiagnoseRequest, EndpointCheck, NetworkSettingsReport, ProcessEnvironment,
    StepOutcome, MAX_ENDPOINTS,
};
use azbroker_proto::{CredentialKind, Endpoint, NetworkProblem};
use serde::Serialize;

use super::daemon::Daemon;
use super::env::Environment;
use super::{Level, Problem};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Entra ID: every credential that talks HTTP needs it.
    Authority,
    ResourceManager,
    Graph,
    /// Given with --resource-endpoint.
    Resource,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Authority => "authority",
            Role::ResourceManager => "resource manager",
            Role::Graph => "graph",
            Role::Resource => "resource",
        }
    }
}

pub struct Planned {
    pub endpoint: Endpoint,
    pub role: Role,
}

/// The authority, the cloud's Resource Manager and Graph (unless skipped) and
/// the given resource endpoints, without duplicates.
pub fn plan(
    env: &Environment,
    resources: &[String],
    skip_cloud: bool,
) -> Result<Vec<Planned>, String> {
    let mut planned: Vec<Planned> = Vec::new();
    let mut add = |endpoint: Endpoint, role: Role| {
        if !planned.iter().any(|p| p.endpoint == endpoint) {
            planned.push(Planned { endpoint, role });
        }
    };
    add(parse_endpoint(&env.authority_url)?, Role::Authority);
    if !skip_cloud {
        for (host, role) in [
            (env.cloud.resource_manager, Role::ResourceManager),
            (env.cloud.graph, Role::Graph),
        ] {
            add(
                Endpoint {
                    host: host.into(),
                    port: 443,
                },
                role,
            );
        }
    }
    for resource in resources {
        let endpoint = parse_endpoint(resource)
            .map_err(|e| format!("--resource-endpoint {resource:?}: {e}"))?;
        add(endpoint, Role::Resource);
    }
    if planned.len() > MAX_ENDPOINTS {
        return Err(format!(
            "at most {MAX_ENDPOINTS} endpoints can be checked at once"
        ));
    }
    Ok(planned)
}

/// `host`, `host:port`, `[v6]:port` or `https://host[:port][/path]`; the port defaults to 443.
pub fn parse_endpoint(text: &str) -> Result<Endpoint, String> {
    let text = text.trim();
    let rest = match text.split_once("://") {
        Some(("https", rest)) => rest,
        Some((scheme, _)) => {
            return Err(format!("only https endpoints are checked, not {scheme}://"))
        }
        None => text,
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or("unclosed [ in the address")?;
        (host, after.strip_prefix(':'))
    } else if authority.matches(':').count() > 1 {
        (authority, None) // a bare IPv6 address
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let port = match port {
        None => 443,
        Some(port) => port
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("{port:?} is not a port"))?,
    };
    let valid_name = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    if !valid_name && host.parse::<std::net::IpAddr>().is_err() {
        return Err(format!("{host:?} is not a host name or IP address"));
    }
    Ok(Endpoint {
        host: host.to_ascii_lowercase(),
        port,
    })
}

#[derive(Serialize)]
pub struct NetworkReport {
    pub status: Level,
    /// `azbrokerd`, or `azbroker` when this process had to check by itself.
    pub checked_by: &'static str,
    /// Why the checks ran here instead of in the daemon.
    pub note: Option<String>,
    /// The proxy and CA settings the checks used.
    pub settings: SettingsReport,
    /// Where the daemon's settings differ from this shell's.
    pub differences: Vec<String>,
    pub endpoints: Vec<EndpointReport>,
}

#[derive(Serialize, Default)]
pub struct SettingsReport {
    pub https_proxy: Option<String>,
    pub http_proxy: Option<String>,
    pub no_proxy: Option<String>,
    pub extra_roots: Vec<String>,
}

impl From<&NetworkSettingsReport> for SettingsReport {
    fn from(s: &NetworkSettingsReport) -> Self {
        SettingsReport {
            https_proxy: s.https_proxy.clone(),
            http_proxy: s.http_proxy.clone(),
            no_proxy: s.no_proxy.clone(),
            extra_roots: s.extra_roots.clone(),
        }
    }
}

#[derive(Serialize)]
pub struct EndpointReport {
    pub endpoint: String,
    pub host: String,
    pub port: u16,
    pub role: Role,
    pub status: Level,
    /// The proxy the connection went through, or none for direct.
    pub proxy: Option<String>,
    pub addresses: Vec<AddressReport>,
    /// The name resolves to a private address: a private endpoint serves it.
    pub private_endpoint: bool,
    pub steps: Vec<StepReport>,
    /// `dns`, `certificate`, `timeout`, `refused`, `unreachable`, `proxy` or `other`.
    pub problem: Option<&'static str>,
    pub summary: Option<String>,
    pub remedy: Option<String>,
}

#[derive(Serialize)]
pub struct AddressReport {
    pub address: String,
    pub scope: &'static str,
}

#[derive(Serialize)]
pub struct StepReport {
    /// `dns`, `tcp`, `proxy` or `tls`.
    pub step: &'static str,
    pub target: String,
    pub passed: bool,
    pub problem: Option<&'static str>,
    pub millis: u32,
    pub detail: String,
}

pub struct NetworkResult {
    pub report: NetworkReport,
    /// Credential kinds the daemon can use (known only when it ran the checks).
    pub implemented: Option<Vec<CredentialKind>>,
    /// The daemon's tools, profile directories and variables (likewise).
    pub daemon_environment: Option<ProcessEnvironment>,
}

pub async fn check(
    daemon: &Daemon,
    planned: Vec<Planned>,
    step_timeout: Duration,
) -> NetworkResult {
    let endpoints: Vec<Endpoint> = planned.iter().map(|p| p.endpoint.clone()).collect();
    let local = NetworkSettings::from_env();
    // At most five steps per endpoint (proxy name, proxy, TLS to an https
    // proxy, tunnel, TLS), endpoints in parallel; then some slack.
    let limit = step_timeout * 5 + Duration::from_secs(5);
    let asked = match daemon.plain_client(limit) {
        Some(client) => client
            .diagnose(DiagnoseRequest {
                endpoints: endpoints.clone(),
                timeout_ms: u32::try_from(step_timeout.as_millis()).unwrap_or(u32::MAX),
            })
            .await
            .map_err(|e| format!("azbrokerd could not run the checks ({e})")),
        None => Err("azbrokerd is not reachable".to_string()),
    };
    let mut daemon_environment = None;
    let (checked_by, note, settings, checks, implemented, mut differences) = match asked {
        Ok(diagnosis) => {
            let differences = match &local {
                Ok(local) => compare(&diagnosis.settings, local.report()),
                Err(e) => vec![format!(
                    "this shell's CA settings are unusable ({e}): an azbrokerd started from here would not start"
                )],
            };
            daemon_environment = Some(diagnosis.environment);
            (
                "azbrokerd",
                None,
                SettingsReport::from(&diagnosis.settings),
                diagnosis.endpoints,
                Some(diagnosis.implemented),
                differences,
            )
        }
        Err(why) => match local {
            Ok(local) => {
                let settings = SettingsReport::from(local.report());
                let checks =
                    azbroker_netcheck::check_all(Arc::new(local), endpoints, step_timeout).await;
                let note = format!(
                    "{why}: checked from this process, with this shell's proxy and CA settings (an azbrokerd started from here would use the same)"
                );
                ("azbroker", Some(note), settings, checks, None, Vec::new())
            }
            Err(e) => (
                "azbroker",
                Some(format!(
                    "{why}, and this shell's CA settings are unusable: {e}"
                )),
                SettingsReport::default(),
                Vec::new(),
                None,
                vec![format!("this shell's CA settings are unusable: {e}")],
            ),
        },
    };
    let reports: Vec<EndpointReport> = planned
        .iter()
        .zip(checks)
        .map(|(planned, check)| endpoint_report(planned.role, check))
        .collect();
    let unusable_settings = checked_by == "azbroker" && reports.is_empty();
    differences.dedup();
    let status = if unusable_settings || reports.iter().any(|r| r.status == Level::Fail) {
        Level::Fail
    } else if !differences.is_empty() {
        Level::Warn
    } else {
        Level::Ok
    };
    NetworkResult {
        report: NetworkReport {
            status,
            checked_by,
            note,
            settings,
            differences,
            endpoints: reports,
        },
        implemented,
        daemon_environment,
    }
}

/// The settings that decide reachability, daemon vs. this shell.
fn compare(daemon: &NetworkSettingsReport, shell: &NetworkSettingsReport) -> Vec<String> {
    let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "unset".into());
    let mut differences = Vec::new();
    for (name, d, s) in [
        ("HTTPS_PROXY", &daemon.https_proxy, &shell.https_proxy),
        ("NO_PROXY", &daemon.no_proxy, &shell.no_proxy),
    ] {
        if d != s {
            differences.push(format!(
                "{name}: azbrokerd has {}, this shell has {}",
                show(d),
                show(s)
            ));
        }
    }
    if daemon.extra_roots != shell.extra_roots {
        let list = |roots: &[String]| {
            if roots.is_empty() {
                "none".to_string()
            } else {
                roots.join(", ")
            }
        };
        differences.push(format!(
            "extra CA certificates: azbrokerd has {}, this shell has {}",
            list(&daemon.extra_roots),
            list(&shell.extra_roots)
        ));
    }
    differences
}

fn endpoint_report(role: Role, check: EndpointCheck) -> EndpointReport {
    let endpoint = check.endpoint.clone();
    let failure = check.failure().cloned();
    let addresses: Vec<AddressReport> = check
        .addresses
        .iter()
        .map(|a| AddressReport {
            address: a.address.clone(),
            scope: a.scope.as_str(),
        })
        .collect();
    let private_endpoint = role != Role::Authority
        && check
            .addresses
            .iter()
            .any(|a| a.scope == AddressScope::Private);
    let target = Target {
        host: Some(&endpoint.host),
        port: endpoint.port,
        https: true,
        via_proxy: check.proxy.is_some(),
        process: Process::Daemon,
    };
    let (problem, summary, remedy) = match &failure {
        None => (None, None, None),
        Some(step) => {
            let StepOutcome::Failed(problem) = step.outcome else {
                unreachable!("failure() returns a failed step");
            };
            let mut remedy = advice::network_remedy(problem, &target);
            let publicly_resolved = check
                .addresses
                .iter()
                .all(|a| a.scope == AddressScope::Public);
            if role == Role::Resource
                && publicly_resolved
                && matches!(problem, NetworkProblem::Timeout | NetworkProblem::Refused)
            {
                if let Some(zone) = advice::private_dns_zone(&endpoint.host) {
                    remedy.push_str(&format!(
                        " If {} accepts only private endpoint traffic, it must resolve to a private address here: link the private DNS zone {zone} to your network's DNS, or connect the VPN.",
                        endpoint.host
                    ));
                }
            }
            // The step's words matter where the kind alone is vague (which
            // certificate error, what the proxy answered).
            let summary = match problem {
                NetworkProblem::Certificate => format!(
                    "Certificate trust failed for {}: {}",
                    endpoint.host, step.detail
                ),
                NetworkProblem::Proxy => format!("Proxy failure for {endpoint}: {}", step.detail),
                NetworkProblem::Other => format!("{endpoint} failed: {}", step.detail),
                _ => advice::network_summary(problem, &target),
            };
            (Some(problem.as_str()), Some(summary), Some(remedy))
        }
    };
    EndpointReport {
        endpoint: endpoint.to_string(),
        host: endpoint.host.clone(),
        port: endpoint.port,
        role,
        status: if failure.is_some() {
            Level::Fail
        } else {
            Level::Ok
        },
        proxy: check.proxy.clone(),
        addresses,
        private_endpoint,
        steps: check
            .steps
            .iter()
            .map(|step| {
                let problem = match step.outcome {
                    StepOutcome::Passed => None,
                    StepOutcome::Failed(problem) => Some(problem.as_str()),
                };
                StepReport {
                    step: step.kind.as_str(),
                    target: step.target.clone(),
                    passed: problem.is_none(),
                    problem,
                    millis: step.millis,
                    detail: step.detail.clone(),
                }
            })
            .collect(),
        problem,
        summary,
        remedy,
    }
}

pub fn problems(report: &NetworkReport, out: &mut Vec<Problem>) {
    for endpoint in &report.endpoints {
        if let (Some(summary), Some(remedy)) = (&endpoint.summary, &endpoint.remedy) {
            out.push(Problem::fail(
                "network",
                endpoint.endpoint.clone(),
                format!("{}.", summary.trim_end_matches('.')),
                remedy.clone(),
            ));
        }
    }
    if report.checked_by == "azbroker" && report.endpoints.is_empty() {
        if let Some(note) = &report.note {
            out.push(Problem::fail(
                "network",
                "CA settings",
                format!("{note}."),
                "Fix or unset the CA variable named above (AZBROKER_CA_FILE, SSL_CERT_FILE, SSL_CERT_DIR).",
            ));
        }
    }
    // Differences from this shell's settings: see `daemon_env::problems`.
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> (String, u16) {
        let e = parse_endpoint(text).unwrap();
        (e.host, e.port)
    }

    #[test]
    fn endpoints_parse_in_every_usual_spelling() {
        assert_eq!(
            parsed("Acct.blob.core.windows.net"),
            ("acct.blob.core.windows.net".into(), 443)
        );
        assert_eq!(
            parsed("acct.blob.core.windows.net:8443"),
            ("acct.blob.core.windows.net".into(), 8443)
        );
        assert_eq!(
            parsed("https://kv.vault.azure.net/secrets/x?y=1"),
            ("kv.vault.azure.net".into(), 443)
        );
        assert_eq!(parsed("https://127.0.0.1:9443"), ("127.0.0.1".into(), 9443));
        assert_eq!(parsed("[::1]:9443"), ("::1".into(), 9443));
        assert_eq!(parsed("::1"), ("::1".into(), 443));
        assert!(parse_endpoint("http://example.com").is_err());
        assert!(parse_endpoint("example.com:0").is_err());
        assert!(parse_endpoint("example.com:https").is_err());
        assert!(parse_endpoint("exa mple.com").is_err());
        assert!(parse_endpoint("").is_err());
    }
}
