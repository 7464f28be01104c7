//! Failures in words a user can act on: which kind of network or Entra ID
//! problem an error is, and the remedy the Azure MCP Server's authentication
//! guide gives for it.
//!
//! `azbroker diagnose` uses this for what its checks find; the CLI uses it for
//! the errors it sees, so a failing token request says "name resolution",
//! "certificate", "timeout", "refused" or "proxy", what to do, and points to
//! `azbroker diagnose`. The network half lives in `azbroker_netcheck::advice`
//! (re-exported here), which `azbroker-mcp` uses for its own calls.
//!
//! Recognition works on error *text* on purpose: the reasons that reach a
//! client come from reqwest, rustls, the OS resolver, or the output of `az`,
//! `azd` and `pwsh` (Python, Go and .NET error messages), and text is all they
//! have in common.

use azbroker_proto::{CredentialKind, NetworkProblem};

use azbroker_client::ClientError;
pub use azbroker_netcheck::advice::{
    classify_network, metadata_endpoint_silent, network_remedy, network_summary, private_dns_zone,
    Process, Target, RUN_DIAGNOSE,
};

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
    /// The VM metadata endpoint does not answer: this machine has no managed
    /// identity (any machine off Azure). Not a network problem to fix.
    NoManagedIdentity,
}

impl Cause {
    /// A stable lower-case name: `dns`, `tls`... for scripts and MCP results.
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Network(problem) => problem.as_str(),
            Cause::Entra(problem) => problem.as_str(),
            Cause::NoManagedIdentity => "no_managed_identity",
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
    let network = azbroker_netcheck::advice::explain(text, Process::Daemon)?;
    let credential_name = credential.map(|c| c.name().to_string());
    let managed_identity = matches!(credential, None | Some(CredentialKind::ManagedIdentity));
    if managed_identity && metadata_endpoint_silent(text, network.problem) {
        return Some(Advice {
            cause: Cause::NoManagedIdentity,
            credential: credential_name,
            summary: "No managed identity here: the VM metadata endpoint (IMDS, 169.254.169.254) does not answer, as on any machine outside Azure.".into(),
            remedy: "Nothing to fix off Azure: the chain moves on to the next credential (AZURE_TOKEN_CREDENTIALS=dev leaves ManagedIdentityCredential out). On an Azure VM or scale set, assign it a managed identity (az vm identity assign); on App Service, Functions or Container Apps, enable the app's identity so that IDENTITY_ENDPOINT and IDENTITY_HEADER are set.".into(),
        });
    }
    Some(Advice {
        cause: Cause::Network(network.problem),
        credential: credential_name,
        summary: network.summary,
        remedy: network.remedy,
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

#[cfg(test)]
mod tests {
    use super::*;
    use azbroker_proto::{CredentialReason, ErrorKind, WireError};

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
    fn a_silent_metadata_endpoint_means_no_managed_identity_not_a_firewall() {
        // The daemon's words for IMDS off Azure (daemon/src/sources/managed_identity.rs).
        for reason in [
            "the VM metadata endpoint (IMDS) did not answer in time: timed out: check firewall rules and proxy settings (HTTPS_PROXY, NO_PROXY) (error sending request for url (http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://management.azure.com): operation timed out)",
            "no managed identity here: the VM metadata endpoint (IMDS) did not answer (error sending request for url (http://169.254.169.254/metadata/identity/oauth2/token): tcp connect error: Network is unreachable (os error 101)); set IDENTITY_ENDPOINT and IDENTITY_HEADER on App Service",
        ] {
            let advice = explain(reason, Some(CredentialKind::ManagedIdentity)).unwrap();
            assert_eq!(advice.cause, Cause::NoManagedIdentity, "{reason}");
            assert_eq!(advice.cause.as_str(), "no_managed_identity");
            assert!(advice.summary.starts_with("No managed identity here"));
            assert!(!advice.remedy.contains("firewall"), "{}", advice.remedy);
        }
        // Another credential's timeout is still a network problem, on its own port.
        let advice = explain(
            "error sending request for url (https://login.contoso.example:8443/t/oauth2/v2.0/token): operation timed out",
            Some(CredentialKind::Environment),
        )
        .unwrap();
        assert_eq!(advice.cause, Cause::Network(NetworkProblem::Timeout));
        assert!(
            advice.remedy.contains("TCP 8443 (HTTPS)"),
            "{}",
            advice.remedy
        );
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
