//! A service principal's certificate for the certificate credential tests:
//! an RSA key and a self-signed certificate, written as the files a user
//! would point `AZURE_CLIENT_CERTIFICATE_PATH` at (PEM, encrypted PEM, PFX).

use openssl::asn1::Asn1Time;
use openssl::hash::MessageDigest;
use openssl::pkcs12::Pkcs12;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::symm::Cipher;
use openssl::x509::{X509NameBuilder, X509};
use std::path::{Path, PathBuf};

/// Password of [`SpCertificate::encrypted_pem`] and [`SpCertificate::pfx`].
pub const PASSWORD: &str = "cert-pass~1";

pub struct SpCertificate {
    cert: X509,
    pub pem: PathBuf,
    pub encrypted_pem: PathBuf,
    pub pfx: PathBuf,
}

impl SpCertificate {
    /// Generates a key and certificate and writes `<name>.pem`,
    /// `<name>-encrypted.pem` and `<name>.pfx` into `dir`.
    pub fn generate(dir: &Path, name: &str) -> SpCertificate {
        let key = PKey::from_rsa(Rsa::generate(2048).expect("RSA key")).expect("key");
        let cert = self_signed(&key, name);
        let write = |file: String, bytes: Vec<u8>| {
            let path = dir.join(file);
            std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            path
        };
        let mut pem = cert.to_pem().expect("PEM");
        pem.extend(key.private_key_to_pem_pkcs8().expect("PKCS#8"));
        let mut encrypted = key
            .private_key_to_pem_pkcs8_passphrase(Cipher::aes_256_cbc(), PASSWORD.as_bytes())
            .expect("encrypted PKCS#8");
        encrypted.extend(cert.to_pem().expect("PEM"));
        let mut builder = Pkcs12::builder();
        builder.name(name).pkey(&key).cert(&cert);
        let pfx = builder
            .build2(PASSWORD)
            .and_then(|p| p.to_der())
            .expect("PFX");
        SpCertificate {
            pem: write(format!("{name}.pem"), pem),
            encrypted_pem: write(format!("{name}-encrypted.pem"), encrypted),
            pfx: write(format!("{name}.pfx"), pfx),
            cert,
        }
    }

    /// The certificate (DER), as registered on the app.
    pub fn der(&self) -> Vec<u8> {
        self.cert.to_der().expect("DER")
    }
}

fn self_signed(key: &PKey<Private>, name: &str) -> X509 {
    let mut subject = X509NameBuilder::new().expect("name");
    subject.append_entry_by_text("CN", name).expect("CN");
    let subject = subject.build();
    let mut builder = X509::builder().expect("builder");
    builder.set_version(2).expect("version");
    builder.set_subject_name(&subject).expect("subject");
    builder.set_issuer_name(&subject).expect("issuer");
    builder.set_pubkey(key).expect("key");
    builder
        .set_not_before(&Asn1Time::days_from_now(0).expect("time"))
        .expect("not before");
    builder
        .set_not_after(&Asn1Time::days_from_now(30).expect("time"))
        .expect("not after");
    builder.sign(key, MessageDigest::sha256()).expect("sign");
    builder.build()
}
