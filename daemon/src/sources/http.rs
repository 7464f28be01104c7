//! The one HTTP client every credential uses, so all of them honour the same
//! proxy and trust settings.
//!
//! Trust: the platform's roots, plus every certificate in `AZBROKER_CA_FILE`,
//! `SSL_CERT_FILE` and `SSL_CERT_DIR` (a corporate CA is *added*, never a
//! replacement). Proxy: `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY` from the daemon's
//! environment. Retries are off in `azure_identity`'s pipeline: a broker retries
//! on its own schedule, and an untrusted certificate must fail at once with its
//! real cause instead of after a minute of silent retries.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use azure_core::http::{ClientOptions, RetryOptions, Transport};

#[derive(Clone)]
pub struct HttpClient {
    client: reqwest::Client,
    /// Where extra roots came from, for status and diagnostics.
    pub extra_roots: Arc<Vec<String>>,
}

impl HttpClient {
    pub fn from_env() -> Result<HttpClient, String> {
        let mut certs = Vec::new();
        let mut sources = Vec::new();
        for var in ["AZBROKER_CA_FILE", "SSL_CERT_FILE"] {
            if let Some(path) = std::env::var_os(var).filter(|p| !p.is_empty()) {
                let loaded = load_pem_file(Path::new(&path)).map_err(|e| format!("{var}: {e}"))?;
                sources.push(format!(
                    "{var}={} ({} certificates)",
                    Path::new(&path).display(),
                    loaded.len()
                ));
                certs.extend(loaded);
            }
        }
        if let Some(dir) = std::env::var_os("SSL_CERT_DIR").filter(|p| !p.is_empty()) {
            let mut count = 0;
            for entry in std::fs::read_dir(&dir).map_err(|e| format!("SSL_CERT_DIR: {e}"))? {
                let path = entry.map_err(|e| format!("SSL_CERT_DIR: {e}"))?.path();
                let is_cert = matches!(
                    path.extension().and_then(|e| e.to_str()),
                    Some("pem" | "crt" | "cer")
                );
                if is_cert {
                    if let Ok(loaded) = load_pem_file(&path) {
                        count += loaded.len();
                        certs.extend(loaded);
                    }
                }
            }
            sources.push(format!(
                "SSL_CERT_DIR={} ({count} certificates)",
                Path::new(&dir).display()
            ));
        }
        let client = reqwest::Client::builder()
            .tls_certs_merge(certs)
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {}", super::error_chain(&e)))?;
        Ok(HttpClient {
            client,
            extra_roots: Arc::new(sources),
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
}

fn load_pem_file(path: &Path) -> Result<Vec<reqwest::Certificate>, String> {
    const MAX_BUNDLE: u64 = 16 * 1024 * 1024;
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if meta.len() > MAX_BUNDLE {
        return Err(format!("{} is larger than 16 MiB", path.display()));
    }
    let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| format!("{}: not a PEM certificate bundle: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: holds no PEM certificate", path.display()));
    }
    Ok(certs)
}
