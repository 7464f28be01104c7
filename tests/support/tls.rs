//! A throw-away PKI for the HTTPS test doubles.
//!
//! `azure_identity` refuses `http://` authority hosts, so the Entra double must
//! speak TLS with a certificate the process under test can be told to trust.
//! [`TestPki`] makes a fresh CA per test (never a shared or checked-in key),
//! writes its certificate to `ca.pem` for the process under test, and keeps the
//! CA key so it can issue deliberately broken server certificates for tests of
//! certificate errors.

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use time::{Duration, OffsetDateTime};
use tokio_rustls::rustls::{self, ServerConfig};

/// The names the server certificate is valid for: the doubles only listen on loopback.
const SERVER_NAMES: [&str; 2] = ["127.0.0.1", "localhost"];

/// A test CA, its `ca.pem` on disk, and a TLS server configuration signed by it.
pub struct TestPki {
    ca_cert: Certificate,
    ca_key: KeyPair,
    ca_pem: String,
    ca_pem_path: PathBuf,
    server_config: Arc<ServerConfig>,
}

impl std::fmt::Debug for TestPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestPki")
            .field("ca_pem_path", &self.ca_pem_path)
            .finish_non_exhaustive()
    }
}

impl TestPki {
    /// Creates a CA and a server certificate for `127.0.0.1` and `localhost`,
    /// and writes the CA certificate to `dir/ca.pem`.
    ///
    /// # Panics
    /// On any failure: this is test setup, and a broken fixture must stop the test loudly.
    pub fn generate(dir: &Path) -> TestPki {
        Self::generate_named(dir, "azbroker test CA")
    }

    /// Like [`TestPki::generate`], with another name for the CA. Two CAs of one
    /// name make a verifier pick the wrong one (a signature error instead of
    /// "unknown issuer"), so a second, independent PKI needs its own name.
    pub fn generate_named(dir: &Path, ca_name: &str) -> TestPki {
        let (ca_cert, ca_key) = new_ca(ca_name);
        let ca_pem = ca_cert.pem();
        let ca_pem_path = dir.join("ca.pem");
        std::fs::write(&ca_pem_path, &ca_pem)
            .unwrap_or_else(|e| panic!("writing {}: {e}", ca_pem_path.display()));
        let server_config = issue_server_config(&ca_cert, &ca_key, &SERVER_NAMES, valid_now());
        TestPki {
            ca_cert,
            ca_key,
            ca_pem,
            ca_pem_path,
            server_config,
        }
    }

    /// Path of the CA certificate (PEM) that the process under test must trust.
    pub fn ca_pem_path(&self) -> &Path {
        &self.ca_pem_path
    }

    /// The CA certificate, PEM-encoded (e.g. for `reqwest::Certificate::from_pem`).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The CA certificate, DER-encoded.
    pub fn ca_der(&self) -> CertificateDer<'static> {
        self.ca_cert.der().clone()
    }

    /// Server configuration with a valid certificate for `127.0.0.1` and `localhost`.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.server_config)
    }

    /// Server configuration with a valid certificate, signed by this CA, for
    /// other names (e.g. a `.invalid` host that only a proxy double resolves).
    pub fn server_config_for(&self, names: &[&str]) -> Arc<ServerConfig> {
        issue_server_config(&self.ca_cert, &self.ca_key, names, valid_now())
    }

    /// A fresh server certificate for `127.0.0.1` and `localhost`, signed by
    /// this CA, and its private key, both PEM-encoded: for servers that are
    /// not Rust (Azurite takes `--cert` and `--key` files).
    pub fn server_cert_pem(&self) -> (String, String) {
        let (cert, key) =
            issue_server_cert(&self.ca_cert, &self.ca_key, &SERVER_NAMES, valid_now());
        (cert.pem(), key.serialize_pem())
    }

    /// Server configuration whose certificate is signed by this (trusted) CA
    /// but expired yesterday: a client must fail with an expiry error.
    pub fn expired_server_config(&self) -> Arc<ServerConfig> {
        let now = OffsetDateTime::now_utc();
        let validity = (now - Duration::days(30), now - Duration::days(1));
        issue_server_config(&self.ca_cert, &self.ca_key, &SERVER_NAMES, validity)
    }

    /// Server configuration whose certificate is signed by this (trusted) CA
    /// but names another host: a client must fail with a name mismatch.
    pub fn wrong_host_server_config(&self) -> Arc<ServerConfig> {
        issue_server_config(
            &self.ca_cert,
            &self.ca_key,
            &["wrong-host.invalid"],
            valid_now(),
        )
    }

    /// Server configuration for `127.0.0.1`/`localhost` signed by a fresh CA
    /// that nobody trusts (it is never written to disk): a client must fail
    /// with an unknown-issuer error.
    pub fn untrusted_server_config() -> Arc<ServerConfig> {
        let (ca_cert, ca_key) = new_ca("azbroker untrusted test CA");
        issue_server_config(&ca_cert, &ca_key, &SERVER_NAMES, valid_now())
    }
}

/// The `ring` provider, chosen explicitly: the workspace also compiles
/// rustls with aws-lc-rs (through reqwest), and with two providers compiled in,
/// rustls cannot pick a process default and `ServerConfig::builder()` panics.
pub fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn valid_now() -> (OffsetDateTime, OffsetDateTime) {
    // A day of slack on each side keeps the fixture valid under small clock skew.
    let now = OffsetDateTime::now_utc();
    (now - Duration::days(1), now + Duration::days(365))
}

fn new_ca(common_name: &str) -> (Certificate, KeyPair) {
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    (params.not_before, params.not_after) = valid_now();
    let key = KeyPair::generate().expect("generating the CA key");
    let cert = params.self_signed(&key).expect("self-signing the CA");
    (cert, key)
}

fn issue_server_cert(
    ca_cert: &Certificate,
    ca_key: &KeyPair,
    names: &[&str],
    (not_before, not_after): (OffsetDateTime, OffsetDateTime),
) -> (Certificate, KeyPair) {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut params = CertificateParams::new(names.clone()).expect("server certificate names");
    params
        .distinguished_name
        .push(DnType::CommonName, &names[0]);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = not_before;
    params.not_after = not_after;
    let key = KeyPair::generate().expect("generating the server key");
    let cert = params
        .signed_by(&key, ca_cert, ca_key)
        .expect("signing the server certificate");
    (cert, key)
}

fn issue_server_config(
    ca_cert: &Certificate,
    ca_key: &KeyPair,
    names: &[&str],
    validity: (OffsetDateTime, OffsetDateTime),
) -> Arc<ServerConfig> {
    let (cert, key) = issue_server_cert(ca_cert, ca_key, names, validity);
    let private_key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let mut config = ServerConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], private_key)
        .expect("a matching certificate and key");
    // The doubles serve HTTP/1.1 only; saying so in ALPN keeps clients that
    // offer h2 (reqwest does) from choosing a protocol we do not speak.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_the_ca_and_builds_a_server_config() {
        let dir = tempfile::tempdir().unwrap();
        let pki = TestPki::generate(dir.path());
        let on_disk = std::fs::read_to_string(pki.ca_pem_path()).unwrap();
        assert_eq!(on_disk, pki.ca_pem());
        assert!(on_disk.starts_with("-----BEGIN CERTIFICATE-----"));
        assert_eq!(pki.server_config().alpn_protocols, [b"http/1.1".to_vec()]);
        // The broken variants must build too; the Entra double tests use them.
        let _ = pki.expired_server_config();
        let _ = pki.wrong_host_server_config();
        let _ = TestPki::untrusted_server_config();
        let (cert, key) = pki.server_cert_pem();
        assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"));
    }
}
