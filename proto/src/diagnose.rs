//! `azbroker diagnose` over the wire: the client names endpoints, the daemon
//! checks them with its own proxy and trust settings and says what it found.
//!
//! Why the daemon and not the client: the daemon makes every call to Entra ID,
//! with the proxy and CA settings of the environment *it* was started in, which
//! need not be the shell's. A check that used the shell's settings could pass
//! while every token request fails.

use serde::{Deserialize, Serialize};

use crate::chain::CredentialKind;

/// Most endpoints one request may name. With [`MAX_DETAIL_LEN`] and
/// [`MAX_ADDRESSES`] this keeps the largest diagnosis well inside one frame.
pub const MAX_ENDPOINTS: usize = 16;
/// Longest step detail, in bytes.
pub const MAX_DETAIL_LEN: usize = 200;
/// Most addresses reported per endpoint.
pub const MAX_ADDRESSES: usize = 8;
/// Per-step limit used when a request asks for none (`timeout_ms == 0`).
pub const DEFAULT_STEP_TIMEOUT_MS: u32 = 5_000;
/// Per-step limit a request may ask for at most.
pub const MAX_STEP_TIMEOUT_MS: u32 = 30_000;

/// Asks the daemon to check reachability of `endpoints`. Answered by [`crate::Reply::Diagnosis`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiagnoseRequest {
    pub endpoints: Vec<Endpoint>,
    /// Limit for each step (name resolution, connect, proxy tunnel, TLS); 0 = the default.
    pub timeout_ms: u32,
}

/// A host and TCP port, e.g. `login.microsoftonline.com:443`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Endpoint {
    /// A DNS name or an IP address (IPv6 without brackets).
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// The daemon's answer: its network settings and one check per endpoint, in request order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnosis {
    pub settings: NetworkSettingsReport,
    pub endpoints: Vec<EndpointCheck>,
    /// Credential kinds this daemon can use; the others are always unavailable.
    pub implemented: Vec<CredentialKind>,
    /// What else in the daemon's environment decides what it sees.
    pub environment: ProcessEnvironment,
}

/// Longest value of a [`ProcessEnvironment`] entry, in bytes (longer ones are cut).
pub const MAX_ENVIRONMENT_VALUE_LEN: usize = 256;

/// What in a process's environment decides what its credentials and
/// connections see, beyond its network settings: the credential tools its
/// `PATH` finds, their profile directories, and the proxy and CA variables as
/// set. Paths and URLs only (passwords in proxy URLs masked): never a secret.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessEnvironment {
    /// `az`, `azd`, `pwsh`: the file `PATH` finds for each (azbroker's `az`
    /// shim skipped), `None` when none is found.
    pub tools: Vec<EnvironmentEntry>,
    /// `AZURE_CONFIG_DIR`, `AZD_CONFIG_DIR`: the directory in use (the tool's
    /// default under `HOME` when unset).
    pub profiles: Vec<EnvironmentEntry>,
    /// Proxy and CA variables, each spelling, `None` when unset.
    pub variables: Vec<EnvironmentEntry>,
}

/// One name and its value in a [`ProcessEnvironment`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvironmentEntry {
    pub name: String,
    pub value: Option<String>,
}

/// The proxy and trust settings a process uses (passwords in proxy URLs masked).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkSettingsReport {
    /// Proxy for https URLs (`HTTPS_PROXY`, else `ALL_PROXY`).
    pub https_proxy: Option<String>,
    /// Proxy for http URLs (`HTTP_PROXY`, else `ALL_PROXY`).
    pub http_proxy: Option<String>,
    /// Hosts that bypass the proxy (`NO_PROXY`).
    pub no_proxy: Option<String>,
    /// Where extra trusted roots came from, e.g. `AZBROKER_CA_FILE=/etc/ca.pem (1 certificates)`.
    pub extra_roots: Vec<String>,
}

/// How one endpoint fared, step by step. Steps after a failed one are not run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointCheck {
    pub endpoint: Endpoint,
    /// The proxy used for it (masked), or `None` for a direct connection.
    pub proxy: Option<String>,
    /// What the host resolved to (direct connections only: through a proxy, the proxy resolves).
    pub addresses: Vec<ResolvedAddress>,
    pub steps: Vec<Step>,
}

impl EndpointCheck {
    /// The first failed step, if any.
    pub fn failure(&self) -> Option<&Step> {
        self.steps
            .iter()
            .find(|step| matches!(step.outcome, StepOutcome::Failed(_)))
    }

    pub fn passed(&self) -> bool {
        self.failure().is_none()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolvedAddress {
    pub address: String,
    pub scope: AddressScope,
}

/// Where an address lives. A public service name resolving to a private
/// address is the private-endpoint case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AddressScope {
    Public,
    /// RFC 1918, shared (100.64/10) or IPv6 unique local: a private endpoint or an internal host.
    Private,
    Loopback,
    LinkLocal,
    /// Unspecified, multicast, documentation ranges and the like.
    Other,
}

impl AddressScope {
    pub fn as_str(self) -> &'static str {
        match self {
            AddressScope::Public => "public",
            AddressScope::Private => "private",
            AddressScope::Loopback => "loopback",
            AddressScope::LinkLocal => "link-local",
            AddressScope::Other => "special",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub kind: StepKind,
    /// What the step talked to, e.g. `login.microsoftonline.com` or `proxy 10.0.0.1:3128`.
    pub target: String,
    pub outcome: StepOutcome,
    pub millis: u32,
    /// One line: what was found (addresses, TLS version) or the error's cause.
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StepKind {
    /// Name resolution (of the endpoint, or of the proxy).
    Resolve,
    /// TCP connect (to the endpoint, or to the proxy).
    Connect,
    /// HTTP CONNECT through the proxy.
    ProxyTunnel,
    /// TLS handshake with the endpoint, verified with the process's trusted roots.
    Tls,
}

impl StepKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StepKind::Resolve => "dns",
            StepKind::Connect => "tcp",
            StepKind::ProxyTunnel => "proxy",
            StepKind::Tls => "tls",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StepOutcome {
    Passed,
    Failed(NetworkProblem),
}

/// Why a network step failed, coarse enough to pick a remedy. Append-only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum NetworkProblem {
    /// The name does not resolve (private endpoint DNS zone, VPN, or a proxy-only network).
    NameResolution,
    /// Nothing listens there, or something actively rejected the connection.
    Refused,
    /// No answer in time (typically a firewall dropping packets).
    Timeout,
    /// No route to the network (VPN not connected).
    Unreachable,
    /// The server's certificate is not trusted (corporate TLS inspection: a CA to install).
    Certificate,
    /// The proxy cannot be reached, wants credentials, or refuses the destination.
    Proxy,
    /// Anything else (e.g. the peer does not speak TLS).
    Other,
}

impl NetworkProblem {
    /// A stable lower-case name, used in JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkProblem::NameResolution => "dns",
            NetworkProblem::Refused => "refused",
            NetworkProblem::Timeout => "timeout",
            NetworkProblem::Unreachable => "unreachable",
            NetworkProblem::Certificate => "certificate",
            NetworkProblem::Proxy => "proxy",
            NetworkProblem::Other => "other",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame;
    use crate::{DaemonFrame, Reply};

    #[test]
    fn a_diagnosis_round_trips() {
        let check = EndpointCheck {
            endpoint: Endpoint {
                host: "login.microsoftonline.com".into(),
                port: 443,
            },
            proxy: Some("http://user:***@proxy:3128".into()),
            addresses: vec![ResolvedAddress {
                address: "10.1.2.3".into(),
                scope: AddressScope::Private,
            }],
            steps: vec![
                Step {
                    kind: StepKind::Connect,
                    target: "proxy proxy:3128".into(),
                    outcome: StepOutcome::Passed,
                    millis: 3,
                    detail: String::new(),
                },
                Step {
                    kind: StepKind::Tls,
                    target: "login.microsoftonline.com".into(),
                    outcome: StepOutcome::Failed(NetworkProblem::Certificate),
                    millis: 9,
                    detail: "UnknownIssuer".into(),
                },
            ],
        };
        assert_eq!(check.failure().unwrap().kind, StepKind::Tls);
        let reply = DaemonFrame {
            id: 9,
            reply: Reply::Diagnosis(Box::new(Diagnosis {
                settings: NetworkSettingsReport::default(),
                endpoints: vec![check],
                implemented: vec![CredentialKind::AzureCli],
                environment: ProcessEnvironment {
                    tools: vec![EnvironmentEntry {
                        name: "az".into(),
                        value: Some("/usr/bin/az".into()),
                    }],
                    profiles: Vec::new(),
                    variables: vec![EnvironmentEntry {
                        name: "HTTPS_PROXY".into(),
                        value: None,
                    }],
                },
            })),
        };
        let bytes = frame::encode(&reply).unwrap();
        let body = frame::split(&bytes).unwrap()[0];
        assert_eq!(frame::decode::<DaemonFrame>(body).unwrap(), reply);
    }

    #[test]
    fn ipv6_endpoints_are_bracketed() {
        let endpoint = Endpoint {
            host: "::1".into(),
            port: 8443,
        };
        assert_eq!(endpoint.to_string(), "[::1]:8443");
    }
}
