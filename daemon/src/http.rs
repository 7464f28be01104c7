//! The one HTTP client every credential uses, so all of them honour the same
//! proxy and trust settings.
//!
//! Trust: the platform's roots, plus every certificate in `AZBROKER_CA_FILE`,
//! `SSL_CERT_FILE` and `SSL_CERT_DIR`. Proxy: `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY`
//! from the daemon's environment, for every call except the VM metadata endpoint
//! (IMDS), which is link-local and must never go through a proxy. Both are read
//! by `azbroker_netcheck`'s `NetworkSettings`, which `azbroker diagnose` checks
//! endpoints with.
//!
//! Retries are off in `azure_identity`'s pipeline: a broker retries on its own
//! schedule, and an untrusted certificate must fail at once with its real cause
//! instead of after a minute of silent retries.

use std::sync::Arc;
use std::time::Duration;

use azbroker_netcheck::NetworkSettings;
use azure_core::http::{ClientOptions, RetryOptions, Transport};

/// The VM metadata endpoint's token URL (Azure's fixed link-local address).
pub const IMDS_TOKEN_URL: &str = "http://169.254.169.254/metadata/identity/oauth2/token";

/// How long to wait for IMDS to accept a connection. Off Azure nothing answers
/// at that address, and the chain must move on quickly (Azure.Identity probes
/// with a similar limit).
const IMDS_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct HttpClient {
    client: reqwest::Client,
    /// No proxy and a short connect timeout: for IMDS only.
    imds: reqwest::Client,
    imds_url: Arc<str>,
    /// The proxy and trust settings this client was built from; `azbroker
    /// diagnose` checks endpoints with the very same ones.
    pub network: Arc<NetworkSettings>,
    /// Where extra roots came from, for status and diagnostics.
    pub extra_roots: Arc<Vec<String>>,
}

impl HttpClient {
    /// Reads the trust and proxy settings of the daemon's environment.
    /// `imds_url` replaces [`IMDS_TOKEN_URL`] (tests only: the daemon accepts
    /// nothing but a loopback URL there, from its own command line).
    pub fn from_env(imds_url: Option<String>) -> Result<HttpClient, String> {
        let network = NetworkSettings::from_env()?;
        let certs = network
            .extra_roots()
            .iter()
            .map(|der| reqwest::Certificate::from_der(der))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("an extra root certificate: {e}"))?;
        // No explicit proxy: reqwest applies the environment's proxy rules with
        // the same matcher `network` uses.
        let build_error = |e: reqwest::Error| {
            format!(
                "cannot build the HTTP client: {}",
                crate::error_chain::error_chain(&e)
            )
        };
        let client = reqwest::Client::builder()
            .tls_certs_merge(certs)
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(build_error)?;
        // Plain http: no trust store to load.
        let imds = reqwest::Client::builder()
            .tls_certs_only(Vec::new())
            .no_proxy()
            .connect_timeout(IMDS_CONNECT_TIMEOUT)
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(build_error)?;
        Ok(HttpClient {
            client,
            imds,
            imds_url: imds_url.unwrap_or_else(|| IMDS_TOKEN_URL.into()).into(),
            extra_roots: Arc::new(network.report().extra_roots.clone()),
            network: Arc::new(network),
        })
    }

    /// The client itself, for requests `azure_identity` does not make (user logins).
    pub fn reqwest(&self) -> &reqwest::Client {
        &self.client
    }

    /// `azure_core` client options that send through this client, without retries.
    pub fn client_options(&self) -> ClientOptions {
        ClientOptions {
            transport: Some(Transport::new(Arc::new(self.client.clone()))),
            retry: RetryOptions::none(),
            ..Default::default()
        }
    }

    /// The shared client (proxy and extra roots applied).
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// The client for the VM metadata endpoint (never proxied) and its token URL.
    pub fn imds(&self) -> (&reqwest::Client, &str) {
        (&self.imds, &self.imds_url)
    }
}

/// A response's `Retry-After` in seconds (the form Entra ID and the
/// managed-identity endpoints send), for the credential's backoff.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<std::time::Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(std::time::Duration::from_secs)
}

/// Says what a transport failure means for the user, with its real cause:
/// a certificate problem names certificate trust and the settings that fix
/// it, instead of a bare "error sending request".
pub fn describe_transport_error(err: &(dyn std::error::Error + 'static)) -> String {
    let chain = crate::error_chain::error_chain(err);
    let hint = if chain.contains("UnknownIssuer") || chain.contains("UnknownCA") {
        Some(
            "certificate not trusted: the server's certificate is not signed by a trusted \
             certificate authority; if a corporate proxy or CA inspects TLS, add its CA \
             certificate with AZBROKER_CA_FILE or SSL_CERT_FILE",
        )
    } else if chain.contains("certificate expired") || chain.contains("not valid yet") {
        Some("certificate expired or not yet valid: check the system clock and the server's certificate")
    } else if chain.contains("not valid for name") {
        Some("certificate name mismatch: the server's certificate is for another host (a TLS-inspecting proxy?)")
    } else if chain.contains("invalid peer certificate") {
        Some("certificate rejected")
    } else if chain.contains("dns error") || chain.contains("failed to lookup address") {
        Some("DNS resolution failed: check the host name, DNS or private endpoint DNS settings")
    } else if chain.contains("timed out") {
        Some("timed out: check firewall rules and proxy settings (HTTPS_PROXY, NO_PROXY)")
    } else if chain.contains("Connection refused") {
        Some("connection refused")
    } else {
        None
    };
    match hint {
        Some(hint) => format!("{hint} ({chain})"),
        None => chain,
    }
}

/// Checks a replacement IMDS URL: tests point the daemon at a loopback double,
/// and nothing else may stand in for the metadata endpoint (a remote host
/// would receive every managed-identity token request).
pub fn check_test_imds_url(url: &str) -> Result<String, String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    let loopback = match parsed.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => name == "localhost",
        None => false,
    };
    if parsed.scheme() != "http" || !loopback {
        return Err(format!(
            "{url:?} must be an http:// URL on a loopback address (it replaces the VM metadata endpoint for tests)"
        ));
    }
    Ok(parsed.to_string())
}
#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Wrapped(&'static str, Option<Box<Wrapped>>);

    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Wrapped {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    #[test]
    fn unknown_issuer_names_certificate_trust_and_the_fix() {
        let err = Wrapped(
            "error sending request",
            Some(Box::new(Wrapped(
                "invalid peer certificate: UnknownIssuer",
                None,
            ))),
        );
        let text = describe_transport_error(&err);
        assert!(text.starts_with("certificate not trusted: "), "{text}");
        assert!(text.contains("AZBROKER_CA_FILE or SSL_CERT_FILE"), "{text}");
        assert!(text.ends_with("(error sending request: invalid peer certificate: UnknownIssuer)"));
    }

    #[test]
    fn only_loopback_can_replace_imds() {
        assert!(
            check_test_imds_url("http://127.0.0.1:8080/metadata/identity/oauth2/token").is_ok()
        );
        assert!(check_test_imds_url("http://[::1]:8080/x").is_ok());
        for bad in [
            "http://169.254.169.254/x",
            "https://127.0.0.1/x",
            "http://example.com/x",
            "http://10.0.0.1/x",
            "not a url",
        ] {
            assert!(check_test_imds_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn other_failures_keep_their_cause() {
        let err = Wrapped("error sending request", None);
        assert_eq!(describe_transport_error(&err), "error sending request");
    }
}
