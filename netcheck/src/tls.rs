//! The TLS handshake, verified the way azbrokerd's HTTP client verifies it,
//! and its failures put in words.

use std::io;
use std::sync::Arc;

use azbroker_proto::NetworkProblem;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{CertificateError, ClientConfig};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsConnector;

/// reqwest's rustls setup: the process's default crypto provider, else
/// aws-lc-rs (reqwest's own default), and the platform verifier with the extra roots.
pub(crate) fn client_config(
    extra_roots: &[CertificateDer<'static>],
) -> Result<Arc<ClientConfig>, String> {
    let provider = rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
    let verifier = rustls_platform_verifier::Verifier::new_with_extra_roots(
        extra_roots.iter().cloned(),
        provider.clone(),
    )
    .map_err(|e| format!("cannot load the trusted roots: {e}"))?;
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    warm_up(&config);
    Ok(Arc::new(config))
}

/// Seeds the random generator and makes one key share, so the provider's
/// one-time setup is not counted in (and does not stall) the first handshake.
fn warm_up(config: &ClientConfig) {
    let provider = config.crypto_provider();
    let _ = provider.secure_random.fill(&mut [0u8; 32]);
    if let Some(group) = provider.kx_groups.first() {
        let _ = group.start();
    }
}

/// Runs the handshake with `host` over `stream`; on success, a short description
/// of the session (protocol version, ALPN).
pub(crate) async fn handshake<S>(
    config: Arc<ClientConfig>,
    host: &str,
    stream: S,
) -> Result<(tokio_rustls::client::TlsStream<S>, String), (NetworkProblem, String)>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let name = ServerName::try_from(host.to_string()).map_err(|e| {
        (
            NetworkProblem::Other,
            format!("{host:?} is not a valid TLS server name: {e}"),
        )
    })?;
    match TlsConnector::from(config).connect(name, stream).await {
        Ok(tls) => {
            let (_, session) = tls.get_ref();
            let version = session
                .protocol_version()
                .and_then(|v| v.as_str())
                .unwrap_or("TLS");
            let detail = match session.alpn_protocol() {
                Some(alpn) => format!("{version}, {}", String::from_utf8_lossy(alpn)),
                None => version.to_string(),
            };
            Ok((tls, detail))
        }
        Err(e) => Err(classify(&e)),
    }
}

/// What a failed handshake means.
pub(crate) fn classify(error: &io::Error) -> (NetworkProblem, String) {
    if let Some(tls) = error
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    {
        return match tls {
            rustls::Error::InvalidCertificate(cert) => (
                NetworkProblem::Certificate,
                describe_certificate_error(cert, tls),
            ),
            rustls::Error::AlertReceived(alert) => (
                NetworkProblem::Other,
                format!("the server ended the handshake with the alert {alert:?}"),
            ),
            rustls::Error::InvalidMessage(_)
            | rustls::Error::InappropriateHandshakeMessage { .. } => (
                NetworkProblem::Other,
                format!("the server does not speak TLS as expected ({tls})"),
            ),
            other => (NetworkProblem::Other, other.to_string()),
        };
    }
    match error.kind() {
        // A firewall that filters by host name (the TLS SNI) typically resets or
        // drops the connection right after the ClientHello.
        io::ErrorKind::ConnectionReset | io::ErrorKind::UnexpectedEof => (
            NetworkProblem::Refused,
            format!(
                "the connection was closed during the TLS handshake ({error}): a firewall that filters by host name, or a port that does not speak TLS"
            ),
        ),
        _ => (NetworkProblem::Other, error.to_string()),
    }
}

fn describe_certificate_error(cert: &CertificateError, error: &rustls::Error) -> String {
    let plain = match cert {
        CertificateError::UnknownIssuer => {
            "the certificate is issued by an authority this machine does not trust (a corporate TLS-inspecting proxy or firewall, or a private CA)"
        }
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            "the certificate is for another host name"
        }
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            "the certificate has expired (or this machine's clock is wrong)"
        }
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            "the certificate is not valid yet (or this machine's clock is wrong)"
        }
        CertificateError::Revoked => "the certificate has been revoked",
        _ => "the certificate was rejected",
    };
    format!("{plain}: {error}")
}
