//! A process's network settings: the proxy rules and the extra trusted roots.
//!
//! azbrokerd builds its HTTP client from these same settings (see
//! `daemon/src/http.rs`), so a check run with them sees what a token request sees.
//!
//! - Proxy: hyper-util's `Matcher::from_system()`, which is exactly what
//!   reqwest consults for every request (`HTTPS_PROXY`, `HTTP_PROXY`,
//!   `ALL_PROXY`, `NO_PROXY`, lower-case spellings too).
//! - Trust: the platform's roots plus every certificate in `AZBROKER_CA_FILE`,
//!   `SSL_CERT_FILE` and the `.pem`/`.crt`/`.cer` files of `SSL_CERT_DIR`.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use azbroker_proto::diagnose::NetworkSettingsReport;
use azbroker_proto::Endpoint;
use hyper_util::client::proxy::matcher::Matcher;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

/// Largest certificate bundle read from disk.
const MAX_BUNDLE_BYTES: u64 = 16 * 1024 * 1024;

pub struct NetworkSettings {
    proxy: Matcher,
    extra_roots: Vec<CertificateDer<'static>>,
    report: NetworkSettingsReport,
    /// Built on first use: loading the platform's roots reads many files.
    tls: OnceLock<Result<Arc<rustls::ClientConfig>, String>>,
}

impl std::fmt::Debug for NetworkSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetworkSettings")
            .field("report", &self.report)
            .finish_non_exhaustive()
    }
}

/// The proxy one endpoint goes through.
#[derive(Clone)]
pub struct ProxyRoute {
    pub scheme: String,
    pub host: String,
    pub port: u16,
    /// `Proxy-Authorization` value from the proxy URL's user info, if any.
    pub authorization: Option<http::HeaderValue>,
}

impl std::fmt::Debug for ProxyRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the authorization.
        write!(f, "ProxyRoute({})", self.display())
    }
}

impl ProxyRoute {
    /// `scheme://host:port`, without credentials.
    pub fn display(&self) -> String {
        let endpoint = Endpoint {
            host: self.host.clone(),
            port: self.port,
        };
        format!("{}://{endpoint}", self.scheme)
    }
}

impl NetworkSettings {
    /// This process's settings. Fails when a configured CA file cannot be used,
    /// exactly as azbrokerd refuses to start with one.
    pub fn from_env() -> Result<NetworkSettings, String> {
        let lookup = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        let (extra_roots, sources) = load_extra_roots(&lookup)?;
        let text = |names: &[&str]| {
            names
                .iter()
                .find_map(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
        };
        let all = text(&["ALL_PROXY", "all_proxy"]);
        let report = NetworkSettingsReport {
            https_proxy: text(&["HTTPS_PROXY", "https_proxy"])
                .or_else(|| all.clone())
                .map(|url| shorten(mask_url_credentials(&url))),
            http_proxy: text(&["HTTP_PROXY", "http_proxy"])
                .or(all)
                .map(|url| shorten(mask_url_credentials(&url))),
            no_proxy: text(&["NO_PROXY", "no_proxy"]).map(shorten),
            extra_roots: sources.into_iter().map(shorten).collect(),
        };
        Ok(NetworkSettings {
            proxy: Matcher::from_system(),
            extra_roots,
            report,
            tls: OnceLock::new(),
        })
    }

    /// Certificates added to the platform's roots.
    pub fn extra_roots(&self) -> &[CertificateDer<'static>] {
        &self.extra_roots
    }

    pub fn report(&self) -> &NetworkSettingsReport {
        &self.report
    }

    /// The proxy an `https://host:port` request goes through, or `None` for a direct connection.
    pub fn proxy_for(&self, endpoint: &Endpoint) -> Option<ProxyRoute> {
        let uri: http::Uri = format!("https://{endpoint}/").parse().ok()?;
        let intercept = self.proxy.intercept(&uri)?;
        let proxy = intercept.uri();
        let scheme = proxy.scheme_str().unwrap_or("http").to_string();
        let default_port = if scheme == "https" { 443 } else { 80 };
        Some(ProxyRoute {
            host: proxy
                .host()?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port: proxy.port_u16().unwrap_or(default_port),
            scheme,
            authorization: intercept.basic_auth().cloned(),
        })
    }

    /// The TLS client configuration: reqwest's rustls setup (the platform
    /// verifier with these extra roots, HTTP/2 and HTTP/1.1 offered).
    pub fn tls_config(&self) -> Result<Arc<rustls::ClientConfig>, String> {
        self.tls
            .get_or_init(|| crate::tls::client_config(&self.extra_roots))
            .clone()
    }
}

/// Reads the extra roots: `AZBROKER_CA_FILE`, `SSL_CERT_FILE`, then `SSL_CERT_DIR`.
/// Returns the certificates and one line per source saying how many each gave.
pub fn load_extra_roots(
    lookup: &dyn Fn(&str) -> Option<std::ffi::OsString>,
) -> Result<(Vec<CertificateDer<'static>>, Vec<String>), String> {
    let mut certs = Vec::new();
    let mut sources = Vec::new();
    for var in ["AZBROKER_CA_FILE", "SSL_CERT_FILE"] {
        if let Some(path) = lookup(var) {
            let path = Path::new(&path);
            let loaded = load_pem_file(path).map_err(|e| format!("{var}: {e}"))?;
            sources.push(format!(
                "{var}={} ({})",
                path.display(),
                certificates(loaded.len())
            ));
            certs.extend(loaded);
        }
    }
    if let Some(dir) = lookup("SSL_CERT_DIR") {
        let mut count = 0;
        for entry in std::fs::read_dir(&dir).map_err(|e| format!("SSL_CERT_DIR: {e}"))? {
            let path = entry.map_err(|e| format!("SSL_CERT_DIR: {e}"))?.path();
            let is_cert = matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("pem" | "crt" | "cer")
            );
            // A directory of hashed links and bundles may hold files that are not
            // certificates; they are skipped, as OpenSSL does.
            if let Some(loaded) = is_cert.then(|| load_pem_file(&path).ok()).flatten() {
                count += loaded.len();
                certs.extend(loaded);
            }
        }
        sources.push(format!(
            "SSL_CERT_DIR={} ({})",
            Path::new(&dir).display(),
            certificates(count)
        ));
    }
    Ok((certs, sources))
}

fn certificates(count: usize) -> String {
    match count {
        1 => "1 certificate".into(),
        n => format!("{n} certificates"),
    }
}

fn load_pem_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if meta.len() > MAX_BUNDLE_BYTES {
        return Err(format!("{} is larger than 16 MiB", path.display()));
    }
    let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: not a PEM certificate bundle: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: holds no PEM certificate", path.display()));
    }
    Ok(certs)
}

/// Keeps a reported setting to a sane length (it travels in one frame).
fn shorten(text: String) -> String {
    shorten_to(text, MAX_SETTING_LEN)
}

/// `text` cut to at most `max` bytes (on a character boundary), ending in
/// `...` when cut.
pub(crate) fn shorten_to(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut cut = max.saturating_sub(3);
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("...");
    }
    text
}

/// Longest reported proxy, `NO_PROXY` or root source, in bytes.
pub const MAX_SETTING_LEN: usize = 512;

/// `scheme://user:password@host` -> `scheme://user:***@host`; a user name alone
/// (often a token) becomes `***`. Anything without user info is unchanged.
pub fn mask_url_credentials(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return url.to_string();
    };
    let masked = match userinfo.split_once(':') {
        Some((user, _)) => format!("{user}:***"),
        None => "***".to_string(),
    };
    let prefix = scheme.map(|s| format!("{s}://")).unwrap_or_default();
    format!("{prefix}{masked}@{host}{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_passwords_and_bare_user_info() {
        assert_eq!(
            mask_url_credentials("http://alice:pa55@proxy.corp:3128"),
            "http://alice:***@proxy.corp:3128"
        );
        assert_eq!(
            mask_url_credentials("http://tok3n@proxy.corp:3128/x"),
            "http://***@proxy.corp:3128/x"
        );
        assert_eq!(mask_url_credentials("proxy.corp:3128"), "proxy.corp:3128");
        assert_eq!(
            mask_url_credentials("user:p@ss:word@proxy:1"),
            "user:***@proxy:1"
        );
    }

    #[test]
    fn extra_roots_come_from_each_variable() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("empty.pem"), "nothing here").unwrap();
        let file = dir.path().join("empty.pem");
        let lookup = |name: &str| (name == "AZBROKER_CA_FILE").then(|| file.clone().into());
        let error = load_extra_roots(&lookup).unwrap_err();
        assert!(error.starts_with("AZBROKER_CA_FILE: "), "{error}");
        assert!(error.contains("holds no PEM certificate"), "{error}");

        let missing = dir.path().join("missing.pem");
        let lookup = |name: &str| (name == "SSL_CERT_FILE").then(|| missing.clone().into());
        let error = load_extra_roots(&lookup).unwrap_err();
        assert!(error.starts_with("SSL_CERT_FILE: "), "{error}");

        // A directory skips what it cannot read and says how many it found.
        let lookup = |name: &str| (name == "SSL_CERT_DIR").then(|| dir.path().into());
        let (certs, sources) = load_extra_roots(&lookup).unwrap();
        assert!(certs.is_empty());
        assert!(sources[0].ends_with("(0 certificates)"), "{sources:?}");
    }
}
