//! Reads a service principal's certificate (`AZURE_CLIENT_CERTIFICATE_PATH`)
//! for `azure_identity`'s `ClientCertificateCredential`, which takes PKCS#12
//! bytes only: a PFX file is checked and passed on; a PEM file (certificate
//! and private key, the key optionally encrypted) is packed into PKCS#12 in
//! memory. Either way the key must be RSA, as Entra requires.

use std::path::Path;

use azbroker_proto::Secret;
use openssl::pkcs12::Pkcs12;
use openssl::pkey::{Id, PKey, Private};
use openssl::stack::Stack;
use openssl::x509::X509;

/// Certificate files are a few KiB; a larger file is not a certificate.
const MAX_FILE: u64 = 1024 * 1024;

/// A loaded certificate, ready for `ClientCertificateCredential`: PKCS#12 DER
/// protected by [`Loaded::password`].
pub struct Loaded {
    pub pkcs12: Vec<u8>,
    pub password: Option<Secret>,
}

/// Loads `path` as PEM or PFX. Errors name the file and what is wrong, never a secret.
/// The path is the client's: it may name a FIFO or a device (see `bounded_file`).
pub async fn load(path: &str, password: Option<&Secret>) -> Result<Loaded, String> {
    let bytes = crate::bounded_file::read(Path::new(path), MAX_FILE)
        .await
        .map_err(|e| format!("cannot read AZURE_CLIENT_CERTIFICATE_PATH {path}: {e}"))?;
    let is_pem = bytes
        .iter()
        .skip_while(|b| b.is_ascii_whitespace())
        .take(10)
        .eq(b"-----BEGIN".iter());
    let described = |e: String| format!("certificate {path}: {e}");
    if is_pem {
        pem_to_pkcs12(&bytes, password).map_err(described)
    } else {
        check_pfx(&bytes, password).map_err(described)?;
        Ok(Loaded {
            pkcs12: bytes,
            password: password.cloned(),
        })
    }
}

fn check_rsa(key: &PKey<Private>) -> Result<(), String> {
    if key.id() != Id::RSA {
        return Err(
            "the private key is not RSA; Entra ID certificate credentials need an RSA key".into(),
        );
    }
    Ok(())
}

fn check_pfx(der: &[u8], password: Option<&Secret>) -> Result<(), String> {
    let pkcs12 =
        Pkcs12::from_der(der).map_err(|_| "neither PEM nor a PKCS#12 (PFX) file".to_string())?;
    let parsed = pkcs12
        .parse2(password.map(Secret::expose).unwrap_or(""))
        .map_err(|_| {
            if password.is_some() {
                "cannot open the PFX file: wrong AZURE_CLIENT_CERTIFICATE_PASSWORD, or an encryption this OpenSSL does not support".to_string()
            } else {
                "cannot open the PFX file: it needs a password (AZURE_CLIENT_CERTIFICATE_PASSWORD)".to_string()
            }
        })?;
    let key = parsed.pkey.ok_or("the PFX file holds no private key")?;
    check_rsa(&key)?;
    parsed.cert.ok_or("the PFX file holds no certificate")?;
    Ok(())
}

fn pem_to_pkcs12(pem: &[u8], password: Option<&Secret>) -> Result<Loaded, String> {
    let key = match password {
        Some(password) => PKey::private_key_from_pem_passphrase(pem, password.expose().as_bytes()),
        // An explicit empty answer: OpenSSL's default would prompt on the terminal.
        None => PKey::private_key_from_pem_callback(pem, |_| Ok(0)),
    }
    .map_err(|_| {
        if password.is_some() {
            "cannot read the private key: no PEM private key, or a wrong AZURE_CLIENT_CERTIFICATE_PASSWORD".to_string()
        } else {
            "cannot read the private key: the PEM file needs an unencrypted private key, or AZURE_CLIENT_CERTIFICATE_PASSWORD for an encrypted one".to_string()
        }
    })?;
    check_rsa(&key)?;
    let certs =
        X509::stack_from_pem(pem).map_err(|e| format!("cannot read the certificates: {e}"))?;
    // The certificate that goes with the key; the others are its chain.
    let mut leaf = None;
    let mut chain = Stack::new().map_err(|e| e.to_string())?;
    for cert in certs {
        let matches_key = cert
            .public_key()
            .map(|public| public.public_eq(&key))
            .unwrap_or(false);
        if leaf.is_none() && matches_key {
            leaf = Some(cert);
        } else {
            chain.push(cert).map_err(|e| e.to_string())?;
        }
    }
    let leaf = leaf.ok_or("the PEM file holds no certificate for its private key")?;
    // Packed with a throw-away password: the bytes never leave this process.
    let transient = Secret::new(random_password());
    let mut builder = Pkcs12::builder();
    builder.pkey(&key).cert(&leaf);
    if !chain.is_empty() {
        builder.ca(chain);
    }
    let pkcs12 = builder
        .build2(transient.expose())
        .and_then(|p| p.to_der())
        .map_err(|e| format!("cannot pack the certificate: {e}"))?;
    Ok(Loaded {
        pkcs12,
        password: Some(transient),
    })
}

fn random_password() -> String {
    use rand::Rng;
    rand::thread_rng()
        .sample_iter(rand::distributions::Alphanumeric)
        .take(24)
        .map(char::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::asn1::Asn1Time;
    use openssl::ec::{EcGroup, EcKey};
    use openssl::hash::MessageDigest;
    use openssl::nid::Nid;
    use openssl::rsa::Rsa;
    use openssl::symm::Cipher;
    use openssl::x509::X509NameBuilder;

    fn self_signed(key: &PKey<Private>) -> X509 {
        let mut name = X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", "azbroker-test").unwrap();
        let name = name.build();
        let mut builder = X509::builder().unwrap();
        builder.set_version(2).unwrap();
        builder.set_subject_name(&name).unwrap();
        builder.set_issuer_name(&name).unwrap();
        builder.set_pubkey(key).unwrap();
        builder
            .set_not_before(&Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        builder
            .set_not_after(&Asn1Time::days_from_now(1).unwrap())
            .unwrap();
        builder.sign(key, MessageDigest::sha256()).unwrap();
        builder.build()
    }

    fn rsa_key() -> PKey<Private> {
        PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap()
    }

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path.to_string_lossy().into_owned()
    }

    /// What ClientCertificateCredential does with the bytes: parse with the password.
    fn opens(loaded: &Loaded, key: &PKey<Private>) -> bool {
        let parsed = Pkcs12::from_der(&loaded.pkcs12)
            .unwrap()
            .parse2(loaded.password.as_ref().map(Secret::expose).unwrap_or(""))
            .unwrap();
        parsed.pkey.unwrap().public_eq(key) && parsed.cert.is_some()
    }

    #[tokio::test]
    async fn pem_plain_and_encrypted() {
        let dir = tempfile::tempdir().unwrap();
        let key = rsa_key();
        let cert = self_signed(&key);
        // Certificate first, key after: both orders occur in the wild.
        let mut pem = cert.to_pem().unwrap();
        pem.extend(key.private_key_to_pem_pkcs8().unwrap());
        let path = write(dir.path(), "plain.pem", &pem);
        assert!(opens(&load(&path, None).await.unwrap(), &key));

        let mut encrypted = key
            .private_key_to_pem_pkcs8_passphrase(Cipher::aes_256_cbc(), b"pem-pass")
            .unwrap();
        encrypted.extend(cert.to_pem().unwrap());
        let path = write(dir.path(), "encrypted.pem", &encrypted);
        let password = Secret::new("pem-pass");
        assert!(opens(&load(&path, Some(&password)).await.unwrap(), &key));
        let missing = load(&path, None).await.err().unwrap();
        assert!(
            missing.contains("AZURE_CLIENT_CERTIFICATE_PASSWORD"),
            "{missing}"
        );
        let wrong = load(&path, Some(&Secret::new("nope"))).await.err().unwrap();
        assert!(
            wrong.contains("wrong AZURE_CLIENT_CERTIFICATE_PASSWORD"),
            "{wrong}"
        );
        assert!(!wrong.contains("nope"));
    }

    #[tokio::test]
    async fn pfx_with_password() {
        let dir = tempfile::tempdir().unwrap();
        let key = rsa_key();
        let cert = self_signed(&key);
        let mut builder = Pkcs12::builder();
        builder.pkey(&key).cert(&cert);
        let der = builder.build2("pfx-pass").unwrap().to_der().unwrap();
        let path = write(dir.path(), "cert.pfx", &der);
        let password = Secret::new("pfx-pass");
        let loaded = load(&path, Some(&password)).await.unwrap();
        assert_eq!(loaded.pkcs12, der);
        assert!(opens(&loaded, &key));
        let wrong = load(&path, Some(&Secret::new("nope"))).await.err().unwrap();
        assert!(
            wrong.contains("wrong AZURE_CLIENT_CERTIFICATE_PASSWORD"),
            "{wrong}"
        );
        let missing = load(&path, None).await.err().unwrap();
        assert!(missing.contains("needs a password"), "{missing}");
    }

    #[tokio::test]
    async fn bad_files_are_explained() {
        let dir = tempfile::tempdir().unwrap();
        let missing = load(&dir.path().join("none.pem").to_string_lossy(), None)
            .await
            .err()
            .unwrap();
        assert!(
            missing.contains("cannot read AZURE_CLIENT_CERTIFICATE_PATH"),
            "{missing}"
        );
        let garbage = write(dir.path(), "garbage", b"hello");
        assert!(load(&garbage, None)
            .await
            .err()
            .unwrap()
            .contains("neither PEM nor"));
        let huge = write(dir.path(), "huge", &vec![b'a'; 2 * 1024 * 1024]);
        assert!(load(&huge, None)
            .await
            .err()
            .unwrap()
            .contains("larger than 1 MiB"));
        // A FIFO once froze the daemon: it is refused, never opened for a blocking read.
        let fifo = dir.path().join("fifo.pem");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let refused = load(&fifo.to_string_lossy(), None).await.err().unwrap();
        assert!(
            refused.ends_with("fifo.pem: it is a FIFO (named pipe), not a regular file"),
            "{refused}"
        );

        let ec = PKey::from_ec_key(
            EcKey::generate(&EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap()).unwrap(),
        )
        .unwrap();
        let mut pem = self_signed(&ec).to_pem().unwrap();
        pem.extend(ec.private_key_to_pem_pkcs8().unwrap());
        let path = write(dir.path(), "ec.pem", &pem);
        assert!(load(&path, None).await.err().unwrap().contains("not RSA"));

        let key = rsa_key();
        let mut other = self_signed(&rsa_key()).to_pem().unwrap();
        other.extend(key.private_key_to_pem_pkcs8().unwrap());
        let path = write(dir.path(), "mismatch.pem", &other);
        assert!(load(&path, None)
            .await
            .err()
            .unwrap()
            .contains("no certificate for its private key"));
    }
}
