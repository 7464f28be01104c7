//! Failures in words a user can act on: which kind of network or Entra ID
//! problem an error is, and the remedy the Azure MCP Server's authentication
//! guide gives for it.
//!
//! `azbroker diagnose` uses this for what its checks find; every client (the
//! CLI's token errors, an MCP server's tool errors) uses it for the errors it
//! sees, so a failing tool call says "name resolution", "certificate",
//! "timeout", "refused" or "proxy", what to do, and points to `azbroker diagnose`.
//!
//! Recognition works on error *text* on purpose: the reasons that reach a
//! client come from reqwest, rustls, the OS resolver, or the output of `az`,
//! `azd` and `pwsh` (Python, Go and .NET error messages), and text is all they
//! have in common.

use azbroker_proto::{CredentialKind, NetworkProblem};

use azbroker_client::ClientError;

/// Appended to every remedy a client shows: the full check is one command away.
pub const RUN_DIAGNOSE: &str = "Run `azbroker diagnose` for a full check.";

/// A failure, explained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advice {
    pub cause: Cause,
    /// The credential whose error this is, when known (e.g. `AzureCliCredential`).
    pub credential: Option<String>,
    /// One sentence: what is wrong.
    pub summary: String,
    /// What to do about it.
    pub remedy: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cause {
    Network(NetworkProblem),
    Entra(EntraProblem),
}

impl Cause {
    /// A stable lower-case name: `dns`, `tls`... for scripts and MCP results.
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Network(problem) => problem.as_str(),
            Cause::Entra(problem) => problem.as_str(),
        }
    }
}

/// Entra ID errors the guide's enterprise section is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntraProblem {
    /// AADSTS50076, AADSTS50079.
    MfaRequired,
    /// AADSTS53003.
    ConditionalAccess,
    /// AADSTS7000215.
    InvalidClientSecret,
    /// AADSTS7000222.
    ExpiredClientSecret,
    /// AADSTS700016.
    UnknownApplication,
    /// AADSTS70043, AADSTS700082, AADSTS70008, AADSTS50173: sign in again.
    SessionExpired,
    /// AADSTS90002.
    TenantNotFound,
    /// `InvalidAuthenticationTokenTenant` from Resource Manager.
    WrongTenant,
}

impl EntraProblem {
    pub fn as_str(self) -> &'static str {
        match self {
            EntraProblem::MfaRequired => "mfa_required",
            EntraProblem::ConditionalAccess => "conditional_access",
            EntraProblem::InvalidClientSecret => "invalid_client_secret",
            EntraProblem::ExpiredClientSecret => "expired_client_secret",
            EntraProblem::UnknownApplication => "unknown_application",
            EntraProblem::SessionExpired => "session_expired",
            EntraProblem::TenantNotFound => "tenant_not_found",
            EntraProblem::WrongTenant => "wrong_tenant",
        }
    }
}

impl std::fmt::Display for Advice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {RUN_DIAGNOSE}", self.summary, self.remedy)
    }
}

/// Explains one error text, Entra ID codes first (their messages may also
/// mention the network), then network causes. `None` when it is neither.
pub fn explain(text: &str, credential: Option<CredentialKind>) -> Option<Advice> {
    if let Some((problem, code)) = classify_entra(text) {
        let (summary, remedy) = entra_words(problem, code.as_deref(), credential);
        return Some(Advice {
            cause: Cause::Entra(problem),
            credential: credential.map(|c| c.name().to_string()),
            summary,
            remedy,
        });
    }
    let problem = classify_network(text)?;
    let host = host_in(text);
    let target = Target {
        host: host.as_deref(),
        port: 443,
        via_proxy: false,
    };
    Some(Advice {
        cause: Cause::Network(problem),
        credential: credential.map(|c| c.name().to_string()),
        summary: network_summary(problem, &target),
        remedy: network_remedy(problem, &target),
    })
}

/// Explains every credential reason of a broker error (or its message when it
/// has none), one advice per distinct cause. This is what an MCP server puts
/// under a failed tool call.
pub fn explain_error(error: &ClientError) -> Vec<Advice> {
    let mut found: Vec<Advice> = Vec::new();
    let mut add = |advice: Option<Advice>| {
        if let Some(advice) = advice {
            if !found
                .iter()
                .any(|a| a.cause == advice.cause && a.summary == advice.summary)
            {
                found.push(advice);
            }
        }
    };
    match error {
        ClientError::Daemon(wire) if !wire.reasons.is_empty() => {
            for reason in &wire.reasons {
                let kind = CredentialKind::ALL
                    .into_iter()
                    .find(|k| k.name() == reason.credential);
                add(explain(&reason.reason, kind).map(|mut advice| {
                    advice.credential = Some(reason.credential.clone());
                    advice
                }));
            }
        }
        ClientError::Daemon(wire) => add(explain(&wire.message, None)),
        // Connect, protocol and timeout errors are about the broker itself.
        _ => {}
    }
    found
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

/// Which Entra ID problem an error text describes, with its AADSTS code.
pub fn classify_entra(text: &str) -> Option<(EntraProblem, Option<String>)> {
    if text.contains("InvalidAuthenticationTokenTenant") {
        return Some((EntraProblem::WrongTenant, None));
    }
    let mut rest = text;
    while let Some(at) = rest.find("AADSTS") {
        let digits: String = rest[at + 6..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        rest = &rest[at + 6..];
        let problem = match digits.as_str() {
            "50076" | "50079" => EntraProblem::MfaRequired,
            "53003" => EntraProblem::ConditionalAccess,
            "7000215" => EntraProblem::InvalidClientSecret,
            "7000222" => EntraProblem::ExpiredClientSecret,
            "700016" => EntraProblem::UnknownApplication,
            "70043" | "700082" | "70008" | "50173" => EntraProblem::SessionExpired,
            "90002" => EntraProblem::TenantNotFound,
            _ => continue,
        };
        return Some((problem, Some(format!("AADSTS{digits}"))));
    }
    None
}

/// The endpoint a network problem concerns.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub host: Option<&'a str>,
    pub port: u16,
    /// Whether the connection went through a proxy (the remedy differs).
    pub via_proxy: bool,
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
    let proxy_hint = if target.via_proxy {
        ""
    } else {
        " If this network reaches the internet only through a proxy, set HTTPS_PROXY=http://<proxy>:<port> (and NO_PROXY for internal hosts) where azbrokerd starts, then restart it with `azbroker stop`."
    };
    let firewall = format!(
        "Ask your network administrator for an outbound firewall rule: destination {host}, TCP {port} (HTTPS)."
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
        NetworkProblem::Certificate => "A TLS-inspecting proxy or firewall usually causes this: install your organization's root CA by setting AZBROKER_CA_FILE=/path/to/corporate-ca.pem (PEM) in the environment azbrokerd starts from, then restart it with `azbroker stop`. The Azure CLI needs REQUESTS_CA_BUNDLE=/path/to/bundle.pem for the same reason.".to_string(),
        NetworkProblem::Timeout | NetworkProblem::Refused => format!("{firewall}{proxy_hint}"),
        NetworkProblem::Unreachable => format!(
            "Connect the VPN (or ExpressRoute) that reaches {host}, or ask for a route to it.{proxy_hint}"
        ),
        NetworkProblem::Proxy => format!(
            "Check HTTPS_PROXY (http://[user:password@]proxy:port) and NO_PROXY where azbrokerd starts, and ask your proxy administrator to allow CONNECT to {host}:{port}; restart azbrokerd with `azbroker stop` after changing them."
        ),
        NetworkProblem::Other => format!(
            "Check that {host}:{port} is an HTTPS endpoint; otherwise: {firewall}"
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

fn entra_words(
    problem: EntraProblem,
    code: Option<&str>,
    credential: Option<CredentialKind>,
) -> (String, String) {
    let code = code.map(|c| format!(" ({c})")).unwrap_or_default();
    let service_principal = matches!(
        credential,
        Some(
            CredentialKind::Environment
                | CredentialKind::WorkloadIdentity
                | CredentialKind::ManagedIdentity
        )
    );
    let login = match credential {
        Some(CredentialKind::AzureCli) | None => "az login",
        Some(CredentialKind::AzureDeveloperCli) => "azd auth login",
        Some(CredentialKind::AzurePowerShell) => "Connect-AzAccount",
        Some(CredentialKind::VisualStudio) => "sign in again in Visual Studio",
        Some(_) => "sign in again",
    };
    match problem {
        EntraProblem::MfaRequired if service_principal => (
            format!("Multi-factor authentication is required{code}."),
            "A service principal cannot complete MFA: ask your identity administrator to exclude this workload identity from the Conditional Access policy, or use a user sign-in (az login).".into(),
        ),
        EntraProblem::MfaRequired => (
            format!("Multi-factor authentication is required{code}."),
            format!("Sign in again interactively so you can complete MFA: {login} (for the Azure CLI, add --scope <the scope> or --tenant <tenant-id>)."),
        ),
        EntraProblem::ConditionalAccess => (
            format!("A Conditional Access policy blocks the sign-in{code}."),
            "Ask your identity administrator which policy applies (the Entra sign-in log shows it for the error's correlation ID): it may require a compliant or joined device, a trusted location such as the corporate VPN, or MFA.".into(),
        ),
        EntraProblem::InvalidClientSecret => (
            format!("The client secret is wrong{code}."),
            "Set AZURE_CLIENT_SECRET to the secret's Value, not its Secret ID; if the value is lost, create a new one: az ad app credential reset --id <AZURE_CLIENT_ID> --append.".into(),
        ),
        EntraProblem::ExpiredClientSecret => (
            format!("The client secret has expired{code}."),
            "Create a new secret (az ad app credential reset --id <AZURE_CLIENT_ID> --append) and put it in AZURE_CLIENT_SECRET.".into(),
        ),
        EntraProblem::UnknownApplication => (
            format!("The application is not known in this tenant{code}."),
            "Check AZURE_CLIENT_ID, AZURE_TENANT_ID and AZURE_CLOUD: the app registration must exist in, or be consented to by, that tenant.".into(),
        ),
        EntraProblem::SessionExpired => (
            format!("The sign-in session has expired{code}."),
            format!("Sign in again: {login}."),
        ),
        EntraProblem::TenantNotFound => (
            format!("The tenant does not exist in this cloud{code}."),
            "Check AZURE_TENANT_ID (or --tenant) and AZURE_CLOUD.".into(),
        ),
        EntraProblem::WrongTenant => (
            "The token was issued by another tenant than the resource's (InvalidAuthenticationTokenTenant).".into(),
            "Ask for a token in the resource's tenant: azbroker token --tenant <tenant-id>, or set AZURE_TENANT_ID; for the Azure CLI, az login --tenant <tenant-id>.".into(),
        ),
    }
}

/// The first host named in an error text (`https://host/...` or Python's `host='...'`).
fn host_in(text: &str) -> Option<String> {
    let after = text
        .find("https://")
        .map(|at| &text[at + 8..])
        .or_else(|| text.find("host='").map(|at| &text[at + 6..]))?;
    let host: String = after
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        .collect();
    (!host.is_empty()).then_some(host)
}

#[cfg(test)]
mod tests {
    use super::*;
    use azbroker_proto::{CredentialReason, ErrorKind, WireError};

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
    fn recognizes_the_guides_entra_errors() {
        let cases = [
            (
                "AADSTS50076: Due to a configuration change",
                EntraProblem::MfaRequired,
            ),
            ("ERROR: AADSTS50079: must enroll", EntraProblem::MfaRequired),
            (
                "AADSTS53003: Access has been blocked by Conditional Access policies.",
                EntraProblem::ConditionalAccess,
            ),
            (
                "AADSTS7000215: Invalid client secret provided. (HTTP 401)",
                EntraProblem::InvalidClientSecret,
            ),
            (
                "AADSTS700016: Application with identifier 'x' was not found",
                EntraProblem::UnknownApplication,
            ),
            (
                "ERROR: AADSTS70043: The refresh token has expired",
                EntraProblem::SessionExpired,
            ),
            (
                "AADSTS700082: The refresh token has expired due to inactivity.",
                EntraProblem::SessionExpired,
            ),
            (
                "{\"error\":{\"code\":\"InvalidAuthenticationTokenTenant\"}}",
                EntraProblem::WrongTenant,
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(
                classify_entra(text).map(|(p, _)| p),
                Some(expected),
                "{text}"
            );
        }
        // An unknown code is skipped, a later known one still counts.
        let (problem, code) = classify_entra("AADSTS9999: x; AADSTS53003: y").unwrap();
        assert_eq!(problem, EntraProblem::ConditionalAccess);
        assert_eq!(code.as_deref(), Some("AADSTS53003"));
        assert_eq!(classify_entra("AADSTS12345: unknown"), None);
    }

    #[test]
    fn remedies_are_concrete() {
        let advice = explain(
            "cannot reach https://acct.blob.core.windows.net: dns error: failed to lookup address information",
            None,
        )
        .unwrap();
        assert_eq!(advice.cause.as_str(), "dns");
        assert!(
            advice
                .summary
                .contains("acct.blob.core.windows.net does not resolve"),
            "{}",
            advice.summary
        );
        assert!(
            advice.remedy.contains("privatelink.blob.core.windows.net"),
            "{}",
            advice.remedy
        );
        assert!(advice.to_string().ends_with(RUN_DIAGNOSE));

        let advice = explain("invalid peer certificate: UnknownIssuer", None).unwrap();
        assert!(
            advice.remedy.contains("AZBROKER_CA_FILE="),
            "{}",
            advice.remedy
        );

        let advice = explain("connect ETIMEDOUT", None).unwrap();
        assert!(advice.remedy.contains("TCP 443"), "{}", advice.remedy);
        assert!(advice.remedy.contains("HTTPS_PROXY"), "{}", advice.remedy);

        let mfa_user = explain("AADSTS50076: x", Some(CredentialKind::AzureCli)).unwrap();
        assert!(mfa_user.remedy.contains("az login"), "{}", mfa_user.remedy);
        let mfa_app = explain("AADSTS50076: x", Some(CredentialKind::Environment)).unwrap();
        assert!(
            mfa_app.remedy.contains("service principal cannot"),
            "{}",
            mfa_app.remedy
        );
        let expired = explain("AADSTS700082: x", Some(CredentialKind::AzureDeveloperCli)).unwrap();
        assert!(
            expired.remedy.contains("azd auth login"),
            "{}",
            expired.remedy
        );
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
    fn explains_each_credential_of_a_chain_error_once() {
        let reason = |credential: &str, reason: &str| CredentialReason {
            credential: credential.into(),
            unavailable: false,
            reason: reason.into(),
        };
        let error = ClientError::Daemon(WireError {
            kind: ErrorKind::AuthenticationFailed,
            message: "authentication failed: no credential in the chain could provide a token"
                .into(),
            reasons: vec![
                reason(
                    "EnvironmentCredential",
                    "cannot reach https://login.example: invalid peer certificate: UnknownIssuer",
                ),
                reason(
                    "AzureCliCredential",
                    "ERROR: AADSTS70043: The refresh token has expired",
                ),
                reason(
                    "AzureDeveloperCliCredential",
                    "AzureDeveloperCliCredential is not implemented yet in azbroker",
                ),
            ],
        });
        let advice = explain_error(&error);
        assert_eq!(advice.len(), 2, "{advice:?}");
        assert_eq!(advice[0].cause, Cause::Network(NetworkProblem::Certificate));
        assert_eq!(
            advice[0].credential.as_deref(),
            Some("EnvironmentCredential")
        );
        assert_eq!(advice[1].cause, Cause::Entra(EntraProblem::SessionExpired));
        assert!(advice[1].remedy.contains("az login"));
        assert!(explain_error(&ClientError::Connect("no daemon".into())).is_empty());
    }
}
