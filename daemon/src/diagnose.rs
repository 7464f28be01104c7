//! `Request::Diagnose`: checks endpoints with this daemon's own proxy and trust
//! settings (those its HTTP client was built from), so `azbroker diagnose`
//! sees what a token request sees, whatever the calling shell's environment.

use std::sync::Arc;
use std::time::Duration;

use azbroker_netcheck::NetworkSettings;
use azbroker_proto::diagnose::{
    DiagnoseRequest, Diagnosis, ProcessEnvironment, DEFAULT_STEP_TIMEOUT_MS, MAX_ENDPOINTS,
    MAX_STEP_TIMEOUT_MS,
};
use azbroker_proto::{CredentialKind, Endpoint, ErrorKind, WireError};

use crate::sources;

/// Shortest per-step limit honoured: anything less only produces false timeouts.
const MIN_STEP_TIMEOUT_MS: u32 = 100;

pub async fn run(
    network: Arc<NetworkSettings>,
    request: DiagnoseRequest,
) -> Result<Diagnosis, WireError> {
    let invalid = |why: String| WireError::new(ErrorKind::InvalidRequest, why);
    if request.endpoints.len() > MAX_ENDPOINTS {
        return Err(invalid(format!(
            "at most {MAX_ENDPOINTS} endpoints per diagnosis"
        )));
    }
    for endpoint in &request.endpoints {
        validate(endpoint).map_err(invalid)?;
    }
    let timeout_ms = match request.timeout_ms {
        0 => DEFAULT_STEP_TIMEOUT_MS,
        ms => ms.clamp(MIN_STEP_TIMEOUT_MS, MAX_STEP_TIMEOUT_MS),
    };
    let endpoints = azbroker_netcheck::check_all(
        network.clone(),
        request.endpoints,
        Duration::from_millis(timeout_ms.into()),
    )
    .await;
    Ok(Diagnosis {
        settings: network.report().clone(),
        endpoints,
        implemented: CredentialKind::ALL
            .into_iter()
            .filter(|kind| sources::is_implemented(*kind))
            .collect(),
        environment: own_environment(),
    })
}

/// The daemon's tools, profile directories and proxy and CA variables: what
/// its own requests (the managed-identity endpoint's) use; clients' tool
/// requests bring their own.
fn own_environment() -> ProcessEnvironment {
    azbroker_netcheck::process_env::of_this_process()
}

/// A host is a DNS name or an IP address; the port is not 0.
fn validate(endpoint: &Endpoint) -> Result<(), String> {
    let host = endpoint.host.as_str();
    let is_ip = host.parse::<std::net::IpAddr>().is_ok();
    let is_name = !host.is_empty()
        && host.len() <= 253
        && host
            .split('.')
            .all(|label| !label.is_empty() && label.len() <= 63)
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
    if !(is_ip || is_name) {
        return Err(format!("{host:?} is not a host name or IP address"));
    }
    if endpoint.port == 0 {
        return Err(format!("{host}: port 0 is not a port"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(host: &str, port: u16) -> Endpoint {
        Endpoint {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn accepts_names_and_addresses_only() {
        assert!(validate(&endpoint("login.microsoftonline.com", 443)).is_ok());
        assert!(validate(&endpoint("127.0.0.1", 8443)).is_ok());
        assert!(validate(&endpoint("::1", 8443)).is_ok());
        assert!(validate(&endpoint("a b", 443)).is_err());
        assert!(validate(&endpoint("host/../x", 443)).is_err());
        assert!(validate(&endpoint("", 443)).is_err());
        assert!(validate(&endpoint("a..b", 443)).is_err());
        assert!(validate(&endpoint(&"a".repeat(300), 443)).is_err());
        assert!(validate(&endpoint("example.com", 0)).is_err());
    }

    #[test]
    fn the_largest_diagnosis_fits_in_one_frame() {
        use azbroker_proto::diagnose::*;
        use azbroker_proto::{frame, DaemonFrame, NetworkProblem, Reply};
        let long = |n: usize| "x".repeat(n);
        let host = format!("{}.example", "a".repeat(240));
        let step = |kind| Step {
            kind,
            target: format!("proxy {host}:65535"),
            outcome: StepOutcome::Failed(NetworkProblem::Proxy),
            millis: u32::MAX,
            detail: long(MAX_DETAIL_LEN),
        };
        let check = EndpointCheck {
            endpoint: endpoint(&host, 65535),
            proxy: Some(long(azbroker_netcheck::settings::MAX_SETTING_LEN)),
            addresses: vec![
                ResolvedAddress {
                    address: "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff".into(),
                    scope: AddressScope::Public,
                };
                MAX_ADDRESSES
            ],
            steps: vec![
                step(StepKind::Resolve),
                step(StepKind::Connect),
                step(StepKind::Tls),
                step(StepKind::ProxyTunnel),
                step(StepKind::Tls),
            ],
        };
        let setting = || Some(long(azbroker_netcheck::settings::MAX_SETTING_LEN));
        let reply = DaemonFrame {
            id: u64::MAX,
            reply: Reply::Diagnosis(Box::new(Diagnosis {
                settings: NetworkSettingsReport {
                    https_proxy: setting(),
                    http_proxy: setting(),
                    no_proxy: setting(),
                    extra_roots: vec![long(azbroker_netcheck::settings::MAX_SETTING_LEN); 3],
                },
                endpoints: vec![check; MAX_ENDPOINTS],
                implemented: CredentialKind::ALL.to_vec(),
                environment: {
                    use azbroker_netcheck::process_env::{TOOLS, VARIABLES};
                    let entries = |n: usize| {
                        vec![
                            EnvironmentEntry {
                                name: long(20),
                                value: Some(long(MAX_ENVIRONMENT_VALUE_LEN)),
                            };
                            n
                        ]
                    };
                    ProcessEnvironment {
                        tools: entries(TOOLS.len()),
                        profiles: entries(2),
                        variables: entries(VARIABLES.len()),
                    }
                },
            })),
        };
        let encoded = frame::encode(&reply).expect("fits in one frame");
        assert!(encoded.len() < frame::MAX_FRAME_LEN, "{}", encoded.len());
    }

    #[test]
    fn the_daemon_reports_every_tool_profile_and_variable() {
        use azbroker_netcheck::process_env::{TOOLS, VARIABLES};
        let environment = own_environment();
        let names = |entries: &[azbroker_proto::diagnose::EnvironmentEntry]| -> Vec<String> {
            entries.iter().map(|e| e.name.clone()).collect()
        };
        assert_eq!(names(&environment.tools), TOOLS.map(|(name, _)| name));
        assert_eq!(
            names(&environment.profiles),
            ["AZURE_CONFIG_DIR", "AZD_CONFIG_DIR"]
        );
        assert_eq!(names(&environment.variables), VARIABLES);
    }

    #[tokio::test]
    async fn refuses_too_many_endpoints() {
        let network = Arc::new(NetworkSettings::from_env().unwrap());
        let request = DiagnoseRequest {
            endpoints: vec![endpoint("127.0.0.1", 1); MAX_ENDPOINTS + 1],
            timeout_ms: 0,
        };
        let error = run(network, request).await.unwrap_err();
        assert_eq!(error.kind, ErrorKind::InvalidRequest);
    }
}
