//! The one HTTP client every credential uses, so all of them honour the same
//! proxy and trust settings.
//!
//! Trust: the platform's roots, plus every certificate in `AZBROKER_CA_FILE`,
//! `SSL_CERT_FILE` and `SSL_CERT_DIR`. Proxy: `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY`
//! from the daemon's environment. Both are read by `azbroker_netcheck`'s
//! `NetworkSettings`, which `azbroker diagnose` checks endpoints with.
//!
//! Retries are off in `azure_identity`'s pipeline: a broker retries on its own
//! schedule, and an untrusted certificate must fail at once with its real cause
//! instead of after a minute of silent retries.

use std::sync::Arc;
use std::time::Duration;

use azbroker_netcheck::NetworkSettings;
use azure_core::http::{ClientOptions, RetryOptions, Transport};

#[derive(Clone)]
pub struct HttpClient {
    client: reqwest::Client,
    /// The proxy and trust settings this client was built from; `azbroker
    /// diagnose` checks endpoints with the very same ones.
    pub network: Arc<NetworkSettings>,
    /// Where extra roots came from, for status and diagnostics.
    pub extra_roots: Arc<Vec<String>>,
}

impl HttpClient {
    pub fn from_env() -> Result<HttpClient, String> {
        let network = NetworkSettings::from_env()?;
        let certs = network
            .extra_roots()
            .iter()
            .map(|der| reqwest::Certificate::from_der(der))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("an extra root certificate: {e}"))?;
        // No explicit proxy: reqwest applies the environment's proxy rules with
        // the same matcher `network` uses.
        let client = reqwest::Client::builder()
            .tls_certs_merge(certs)
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {}", super::error_chain(&e)))?;
        Ok(HttpClient {
            client,
            extra_roots: Arc::new(network.report().extra_roots.clone()),
            network: Arc::new(network),
        })
    }

    /// `azure_core` client options that send through this client, without retries.
    pub fn client_options(&self) -> ClientOptions {
        ClientOptions {
            transport: Some(Transport::new(Arc::new(self.client.clone()))),
            retry: RetryOptions::none(),
            ..Default::default()
        }
    }
}
