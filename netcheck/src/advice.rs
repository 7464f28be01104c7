//! Network failures in words a user can act on: which kind of problem an
//! error text describes (name resolution, certificate, timeout, refused,
//! unreachable, proxy) and the remedy the Azure MCP Server's authentication
//! guide gives for it, made concrete for the endpoint.
//!
//! `azbroker diagnose` uses it for what its checks find, the CLI (through
//! `azbroker_cli::advice`) and `azbroker-mcp` for the errors they see.
//! Recognition works on error *text* on purpose: the reasons that reach a
//! client come from reqwest, rustls, the OS resolver, or the output of `az`,
//! `azd` and `pwsh` (Python, Go and .NET error messages), and text is all they
//! have in common.

use azbroker_proto::NetworkProblem;

/// Appended to every remedy a client shows: the full check is one command away.
pub const RUN_DIAGNOSE: &str = "Run `azbroker diagnose` for a full check.";

/// A network failure, explained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkAdvice {
    pub problem: NetworkProblem,
    /// One sentence: what is wrong.
    pub summary: String,
    /// What to do about it.
    pub remedy: String,
}

/// Explains an error text that describes a network failure, for the endpoint
/// it names (the first URL, or Python's `host='...', port=N`); `None` when the
/// text is not about the network.
pub fn explain(text: &str, process: Process) -> Option<NetworkAdvice> {
    let problem = classify_network(text)?;
    let endpoint = endpoint_in(text);
    let target = Target {
        host: endpoint.as_ref().map(|e| e.host.as_str()),
        port: endpoint.as_ref().map_or(443, |e| e.port),
        https: endpoint.as_ref().is_none_or(|e| e.https),
        via_proxy: false,
        process,
    };
    Some(NetworkAdvice {
        problem,
        summary: network_summary(problem, &target),
        remedy: network_remedy(problem, &target),
    })
}

/// Whether an error says that the VM metadata endpoint (IMDS) does not
/// answer at all: off Azure nothing listens at its link-local address, so the
/// connection times out, is refused or has no route. That means "no managed
/// identity here", not a network to fix: a firewall rule would not help.
pub fn metadata_endpoint_silent(text: &str, problem: NetworkProblem) -> bool {
    let imds = text.contains("(IMDS)") || text.contains("169.254.169.254");
    let silent = matches!(
        problem,
        NetworkProblem::Timeout | NetworkProblem::Refused | NetworkProblem::Unreachable
    );
    imds && silent
}

/// Which network problem an error text describes, if any.
pub fn classify_network(text: &str) -> Option<NetworkProblem> {
    let text = text.to_ascii_lowercase();
    let has = |needles: &[&str]| needles.iter().any(|n| text.contains(n));
    // Order matters: a proxy or certificate failure often mentions a connection too.
    if has(&[
        "tunnel error",
        "unsuccessful tunnel",
        "proxyerror",
        "proxy authentication required",
        "proxy authorization required",
        "proxy requires authentication",
        "connect to proxy",
        "the proxy ",
    ]) {
        return Some(NetworkProblem::Proxy);
    }
    if has(&[
        "invalid peer certificate",
        "unknownissuer",
        "certificate verify failed",
        "certificate_verify_failed",
        "unable_to_verify_leaf_signature",
        "unable to get local issuer certificate",
        "self signed certificate",
        "self-signed certificate",
        "certificate signed by unknown authority",
        "failed to verify certificate",
        "certificate has expired",
        "notvalidforname",
        "invalid certificate",
        "untrusted root",
    ]) {
        return Some(NetworkProblem::Certificate);
    }
    if has(&[
        "dns error",
        "failed to lookup address",
        "name or service not known",
        "nodename nor servname",
        "no address associated with hostname",
        "temporary failure in name resolution",
        "getaddrinfo",
        "enotfound",
        "could not resolve",
        "failed to resolve",
        "nameresolutionerror",
        "no such host",
        "does not resolve",
    ]) {
        return Some(NetworkProblem::NameResolution);
    }
    if has(&[
        "network is unreachable",
        "no route to host",
        "enetunreach",
        "ehostunreach",
        "os error 101)",
        "os error 113)",
    ]) {
        return Some(NetworkProblem::Unreachable);
    }
    if has(&[
        "connection refused",
        "econnrefused",
        "actively refused",
        "connection reset",
        "econnreset",
        "reset by peer",
    ]) {
        return Some(NetworkProblem::Refused);
    }
    if has(&[
        "timed out",
        "etimedout",
        "connecttimeout",
        "connect timeout",
        "i/o timeout",
        "deadline has elapsed",
    ]) {
        return Some(NetworkProblem::Timeout);
    }
    None
}

/// The endpoint a network problem concerns.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub host: Option<&'a str>,
    pub port: u16,
    /// `https` (almost every Azure endpoint) or plain `http` (a metadata endpoint).
    pub https: bool,
    /// Whether the connection went through a proxy (the remedy differs).
    pub via_proxy: bool,
    /// Whose proxy and CA settings made the connection.
    pub process: Process,
}

/// The process whose environment holds the proxy and CA settings a
/// connection used: the remedy says where to change them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Process {
    /// azbrokerd: every token request.
    Daemon,
    /// azbroker-mcp: its own calls to Azure services.
    McpServer,
}

impl Process {
    /// Where its variables are set.
    fn environment(self) -> &'static str {
        match self {
            Process::Daemon => "in the environment azbrokerd starts from",
            Process::McpServer => "in the MCP client's configuration of azbroker-mcp (its env)",
        }
    }

    /// How it picks up changed variables.
    fn restart(self) -> &'static str {
        match self {
            Process::Daemon => "restart azbrokerd with `azbroker stop`",
            Process::McpServer => "restart the MCP server",
        }
    }
}

/// One sentence on what a network problem means for `target`.
pub fn network_summary(problem: NetworkProblem, target: &Target<'_>) -> String {
    let host = target.host.unwrap_or("the endpoint");
    let port = target.port;
    match problem {
        NetworkProblem::NameResolution => {
            format!("Name resolution failed: {host} does not resolve from here.")
        }
        NetworkProblem::Certificate => {
            format!("Certificate trust failed: the certificate presented for {host} is not trusted here.")
        }
        NetworkProblem::Timeout => format!("Timeout: {host}:{port} did not answer in time."),
        NetworkProblem::Refused => {
            format!("Connection refused: the connection to {host}:{port} was refused or reset.")
        }
        NetworkProblem::Unreachable => format!("Network unreachable: there is no route to {host}."),
        NetworkProblem::Proxy => {
            format!("Proxy failure: the proxy did not open a connection to {host}:{port}.")
        }
        NetworkProblem::Other => {
            format!("Connection failed: {host}:{port} could not be reached over TLS.")
        }
    }
}

/// The guide's remedy for a network problem, made concrete for `target`.
pub fn network_remedy(problem: NetworkProblem, target: &Target<'_>) -> String {
    let host = target.host.unwrap_or("<host>");
    let port = target.port;
    let (environment, restart) = (target.process.environment(), target.process.restart());
    let proxy_hint = if target.via_proxy {
        String::new()
    } else {
        format!(" If this network reaches the internet only through a proxy, set HTTPS_PROXY=http://<proxy>:<port> (and NO_PROXY for internal hosts) {environment}, then {restart}.")
    };
    let protocol = if target.https { "HTTPS" } else { "HTTP" };
    let firewall = format!(
        "Ask your network administrator for an outbound firewall rule: destination {host}, TCP {port} ({protocol})."
    );
    match problem {
        NetworkProblem::NameResolution => {
            let zone = target
                .host
                .and_then(private_dns_zone)
                .map(|zone| format!(" (zone {zone})"))
                .unwrap_or_default();
            format!(
                "If {host} uses a private endpoint, this network needs its private DNS zone{zone}: connect the VPN (or ExpressRoute) that provides it, or ask for the zone to be linked to your DNS.{proxy_hint}"
            )
        }
        NetworkProblem::Certificate => format!("A TLS-inspecting proxy or firewall usually causes this: install your organization's root CA by setting AZBROKER_CA_FILE=/path/to/corporate-ca.pem (PEM) {environment}, then {restart}. The Azure CLI needs REQUESTS_CA_BUNDLE=/path/to/bundle.pem for the same reason."),
        NetworkProblem::Timeout | NetworkProblem::Refused => format!("{firewall}{proxy_hint}"),
        NetworkProblem::Unreachable => format!(
            "Connect the VPN (or ExpressRoute) that reaches {host}, or ask for a route to it.{proxy_hint}"
        ),
        NetworkProblem::Proxy => format!(
            "Check HTTPS_PROXY (http://[user:password@]proxy:port) and NO_PROXY {environment}, and ask your proxy administrator to allow CONNECT to {host}:{port}; {restart} after changing them."
        ),
        NetworkProblem::Other => format!(
            "Check that {host}:{port} is an {protocol} endpoint; otherwise: {firewall}"
        ),
    }
}

/// The private DNS zone an Azure service host belongs to when it has a
/// private endpoint, e.g. `acct.blob.core.windows.net` -> `privatelink.blob.core.windows.net`.
pub fn private_dns_zone(host: &str) -> Option<String> {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let (_, parent) = host.split_once('.')?;
    if parent.starts_with("privatelink.") {
        return Some(parent.to_string());
    }
    for cloud in &azbroker_proto::cloud::CLOUDS {
        if parent == cloud.key_vault_suffix {
            // Key Vault's zone has its own name.
            let rest = cloud.key_vault_suffix.trim_start_matches("vault.");
            return Some(format!("privatelink.vaultcore.{rest}"));
        }
        let storage = ["blob", "table", "queue", "file", "dfs", "web"]
            .iter()
            .any(|service| parent == format!("{service}.{}", cloud.storage_suffix));
        if storage || parent == cloud.cosmos_suffix || parent == cloud.service_bus_suffix {
            return Some(format!("privatelink.{parent}"));
        }
    }
    None
}

/// An endpoint named in an error text.
#[derive(Debug, Clone, PartialEq, Eq)]
struct NamedEndpoint {
    host: String,
    port: u16,
    https: bool,
}

/// The first endpoint named in an error text: a URL (`https://host[:port]/...`
/// or `http://...`, as reqwest and most tools print them) or Python's
/// `host='...', port=N`. The port is the URL's, else its scheme's default.
fn endpoint_in(text: &str) -> Option<NamedEndpoint> {
    let url = ["https://", "http://"]
        .into_iter()
        .filter_map(|scheme| text.find(scheme).map(|at| (at, scheme)))
        .min();
    if let Some((at, scheme)) = url {
        let https = scheme == "https://";
        let authority: String = text[at + scheme.len()..]
            .chars()
            .take_while(|c| {
                c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '[' | ']')
            })
            .collect();
        // "https://host:port: refused": the sentence's colon is not a port.
        let authority = authority.trim_end_matches(':');
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port))
                if !host.ends_with(':') && (host.starts_with('[') == host.ends_with(']')) =>
            {
                (host, port.parse().ok())
            }
            _ => (authority, None),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = port.unwrap_or(if https { 443 } else { 80 });
        return (!host.is_empty()).then(|| NamedEndpoint {
            host: host.to_string(),
            port,
            https,
        });
    }
    let after = &text[text.find("host='")? + 6..];
    let host: String = after
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        .collect();
    let port = after
        .strip_prefix(host.as_str())
        .and_then(|rest| rest.strip_prefix("', port="))
        .and_then(|rest| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .unwrap_or(443);
    (!host.is_empty()).then_some(NamedEndpoint {
        host,
        port,
        https: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn network(text: &str) -> Option<NetworkProblem> {
        classify_network(text)
    }

    #[test]
    fn recognizes_network_errors_of_every_tool() {
        use NetworkProblem::*;
        // reqwest / hyper / rustls, as the daemon reports them.
        assert_eq!(network("cannot reach https://login.example: error sending request: client error (Connect): dns error: failed to lookup address information: Name or service not known"), Some(NameResolution));
        assert_eq!(network("error sending request: client error (Connect): invalid peer certificate: UnknownIssuer"), Some(Certificate));
        assert_eq!(
            network("client error (Connect): tcp connect error: Connection refused (os error 111)"),
            Some(Refused)
        );
        assert_eq!(
            network("client error (Connect): operation timed out"),
            Some(Timeout)
        );
        assert_eq!(
            network("tcp connect error: Network is unreachable (os error 101)"),
            Some(Unreachable)
        );
        assert_eq!(
            network("client error (Connect): tunnel error: unsuccessful"),
            Some(Proxy)
        );
        // The Azure CLI (Python) and azd (Go).
        assert_eq!(network("HTTPSConnectionPool(host='login.microsoftonline.com', port=443): Max retries exceeded (Caused by SSLError(SSLCertVerificationError(1, '[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: unable to get local issuer certificate')))"), Some(Certificate));
        assert_eq!(network("(Caused by ProxyError('Cannot connect to proxy.', ConnectionRefusedError(111, 'Connection refused')))"), Some(Proxy));
        assert_eq!(network("NameResolutionError: Failed to resolve 'login.microsoftonline.com' ([Errno -3] Temporary failure in name resolution)"), Some(NameResolution));
        assert_eq!(
            network("dial tcp: lookup login.microsoftonline.com: no such host"),
            Some(NameResolution)
        );
        assert_eq!(
            network(
                "tls: failed to verify certificate: x509: certificate signed by unknown authority"
            ),
            Some(Certificate)
        );
        assert_eq!(
            network(
                "Error: getaddrinfo ENOTFOUND mystorageaccount.privatelink.blob.core.windows.net"
            ),
            Some(NameResolution)
        );
        assert_eq!(
            network("Error: UNABLE_TO_VERIFY_LEAF_SIGNATURE"),
            Some(Certificate)
        );
        assert_eq!(
            network("Error: connect ETIMEDOUT 20.190.151.68:443"),
            Some(Timeout)
        );
        // Not network problems: the broker's own limits and configuration messages.
        assert_eq!(
            network("az account get-access-token did not answer within 13 s"),
            None
        );
        assert_eq!(
            network("AZURE_CLIENT_CERTIFICATE_PATH is not supported yet; set AZURE_CLIENT_SECRET"),
            None
        );
        assert_eq!(network("Azure CLI is not logged in: run 'az login'"), None);
    }

    #[test]
    fn private_dns_zones_follow_the_service() {
        let zone = |host: &str| private_dns_zone(host);
        assert_eq!(
            zone("acct.blob.core.windows.net").as_deref(),
            Some("privatelink.blob.core.windows.net")
        );
        assert_eq!(
            zone("acct.dfs.core.usgovcloudapi.net").as_deref(),
            Some("privatelink.dfs.core.usgovcloudapi.net")
        );
        assert_eq!(
            zone("kv.vault.azure.net").as_deref(),
            Some("privatelink.vaultcore.azure.net")
        );
        assert_eq!(
            zone("kv.vault.azure.cn").as_deref(),
            Some("privatelink.vaultcore.azure.cn")
        );
        assert_eq!(
            zone("db.documents.azure.com").as_deref(),
            Some("privatelink.documents.azure.com")
        );
        assert_eq!(
            zone("bus.servicebus.windows.net").as_deref(),
            Some("privatelink.servicebus.windows.net")
        );
        assert_eq!(
            zone("acct.privatelink.blob.core.windows.net").as_deref(),
            Some("privatelink.blob.core.windows.net")
        );
        assert_eq!(zone("login.microsoftonline.com"), None);
        assert_eq!(zone("localhost"), None);
    }

    #[test]
    fn the_port_and_scheme_come_from_the_error() {
        let at = |text: &str| {
            let e = endpoint_in(text).unwrap();
            (e.host, e.port, e.https)
        };
        assert_eq!(
            at("error sending request for url (https://127.0.0.1:43885/t/oauth2/v2.0/token): operation timed out"),
            ("127.0.0.1".into(), 43885, true)
        );
        assert_eq!(
            at("cannot reach https://acct.blob.core.windows.net/c?comp=list: timed out"),
            ("acct.blob.core.windows.net".into(), 443, true)
        );
        assert_eq!(
            at("url (http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01)"),
            ("169.254.169.254".into(), 80, false)
        );
        assert_eq!(at("url (https://[::1]:8443/x)"), ("::1".into(), 8443, true));
        assert_eq!(
            at("cannot reach https://127.0.0.1:45611: connection refused"),
            ("127.0.0.1".into(), 45611, true)
        );
        assert_eq!(
            at("cannot reach https://login.example: dns error"),
            ("login.example".into(), 443, true)
        );
        assert_eq!(
            at("HTTPSConnectionPool(host='login.contoso.example', port=8443): Max retries exceeded"),
            ("login.contoso.example".into(), 8443, true)
        );
        assert_eq!(endpoint_in("connect ETIMEDOUT"), None);
    }

    #[test]
    fn remedies_name_the_real_port_and_where_to_change_settings() {
        let advice = explain(
            "error sending request for url (https://127.0.0.1:43885/token): client error (Connect): operation timed out",
            Process::Daemon,
        )
        .unwrap();
        assert_eq!(advice.problem, NetworkProblem::Timeout);
        assert!(
            advice.summary.contains("127.0.0.1:43885"),
            "{}",
            advice.summary
        );
        assert!(
            advice
                .remedy
                .contains("destination 127.0.0.1, TCP 43885 (HTTPS)"),
            "{}",
            advice.remedy
        );
        assert!(!advice.remedy.contains("443 "), "{}", advice.remedy);
        assert!(advice.remedy.contains("azbroker stop"), "{}", advice.remedy);

        // Unknown endpoint: the usual HTTPS port.
        let advice = explain("connect ETIMEDOUT", Process::Daemon).unwrap();
        assert!(
            advice.remedy.contains("TCP 443 (HTTPS)"),
            "{}",
            advice.remedy
        );

        let mcp = explain(
            "invalid peer certificate: UnknownIssuer",
            Process::McpServer,
        )
        .unwrap();
        assert!(mcp.remedy.contains("AZBROKER_CA_FILE="), "{}", mcp.remedy);
        assert!(
            mcp.remedy.contains("configuration of azbroker-mcp"),
            "{}",
            mcp.remedy
        );
        assert!(!mcp.remedy.contains("azbroker stop"), "{}", mcp.remedy);
        assert_eq!(
            explain(
                "Azure CLI is not logged in: run 'az login'",
                Process::Daemon
            ),
            None
        );
    }
}
