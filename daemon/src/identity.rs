//! Credential identities and chain fingerprints.
//!
//! Two clients whose chains name the same credential (same kind, authority,
//! tenant, client id and secret; for a tool, the same executable and profile
//! directory) share one credential actor, hence one login, one refresh token,
//! one health record and every token it minted. Secrets enter only as a SHA-256
//! hash, so an identity can be logged and shown in status.

use azbroker_proto::{ChainSpec, CredentialKind, CredentialSpec};
use sha2::{Digest, Sha256};

/// Identifies one credential actor. Holds no secret.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CredentialId {
    pub kind: CredentialKind,
    /// 32 bytes of SHA-256 over everything that distinguishes this credential.
    digest: [u8; 32],
}

impl CredentialId {
    pub fn of(spec: &CredentialSpec, authority_host: &str) -> CredentialId {
        let mut hasher = Sha256::new();
        let mut field = |value: Option<&str>| {
            // Length-prefix each field so that ("ab","c") and ("a","bc") differ.
            let value = value.unwrap_or("\u{0}none");
            hasher.update((value.len() as u64).to_le_bytes());
            hasher.update(value.as_bytes());
        };
        field(Some(spec.kind().name()));
        field(Some(authority_host));
        match spec {
            CredentialSpec::Environment {
                tenant_id,
                client_id,
                client_secret,
                certificate_path,
                certificate_password,
            } => {
                field(tenant_id.as_deref());
                field(client_id.as_deref());
                field(client_secret.as_ref().map(|s| s.expose()));
                field(certificate_path.as_deref());
                field(certificate_password.as_ref().map(|s| s.expose()));
            }
            CredentialSpec::WorkloadIdentity {
                tenant_id,
                client_id,
                token_file,
            } => {
                field(tenant_id.as_deref());
                field(client_id.as_deref());
                field(token_file.as_deref());
            }
            CredentialSpec::ManagedIdentity {
                client_id,
                endpoint,
                header,
            } => {
                field(client_id.as_deref());
                field(endpoint.as_deref());
                field(header.as_ref().map(|s| s.expose()));
            }
            CredentialSpec::InteractiveBrowser {
                client_id,
                tenant_id,
                use_broker,
                // The timeout changes how long a login may take, not who logs in.
                timeout_secs: _,
            } => {
                field(client_id.as_deref());
                field(tenant_id.as_deref());
                field(Some(if *use_broker { "broker" } else { "browser" }));
            }
            CredentialSpec::DeviceCode {
                client_id,
                tenant_id,
            } => {
                field(client_id.as_deref());
                field(tenant_id.as_deref());
            }
            // The tools act as whoever is logged in to them in a profile:
            // which tool and which profile make the credential. The rest of
            // the requester's environment (locale, PATH order) does not.
            CredentialSpec::AzureCli(tool)
            | CredentialSpec::AzurePowerShell(tool)
            | CredentialSpec::AzureDeveloperCli(tool) => {
                field(tool.executable.as_deref());
                field(tool.profile_dir.as_deref());
            }
            CredentialSpec::VisualStudio => {}
        }
        CredentialId {
            kind: spec.kind(),
            digest: hasher.finalize().into(),
        }
    }

    /// Short hex fingerprint for logs and status.
    pub fn fingerprint(&self) -> String {
        self.short_hex().to_string()
    }

    /// The first 6 bytes of the digest in lower-case hex, without allocating:
    /// every audit line names its credential.
    fn short_hex(&self) -> ShortHex {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut text = [0u8; 12];
        for (pair, byte) in text.chunks_exact_mut(2).zip(&self.digest[..6]) {
            pair[0] = DIGITS[usize::from(byte >> 4)];
            pair[1] = DIGITS[usize::from(byte & 0xf)];
        }
        ShortHex(text)
    }
}

/// Twelve hex digits.
struct ShortHex([u8; 12]);

impl std::fmt::Display for ShortHex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(std::str::from_utf8(&self.0).expect("hex digits are ASCII"))
    }
}

impl std::fmt::Display for CredentialId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.kind.name())?;
        f.write_str("#")?;
        self.short_hex().fmt(f)
    }
}

/// Identifies a whole chain: the ordered list of its credential identities.
/// Part of every cache key, so a hit never re-walks the chain.
pub fn chain_fingerprint(chain: &ChainSpec) -> u128 {
    let mut hasher = Sha256::new();
    hasher.update(chain.authority_host.as_bytes());
    for spec in &chain.credentials {
        hasher.update(CredentialId::of(spec, &chain.authority_host).digest);
    }
    let digest = hasher.finalize();
    u128::from_le_bytes(digest[..16].try_into().expect("16 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use azbroker_proto::Secret;

    fn env(secret: &str) -> CredentialSpec {
        CredentialSpec::Environment {
            tenant_id: Some("t".into()),
            client_id: Some("c".into()),
            client_secret: Some(Secret::new(secret)),
            certificate_path: None,
            certificate_password: None,
        }
    }

    #[test]
    fn same_settings_same_identity() {
        let a = CredentialId::of(&env("s1"), "https://login");
        assert_eq!(a, CredentialId::of(&env("s1"), "https://login"));
        assert_ne!(a, CredentialId::of(&env("s2"), "https://login"));
        assert_ne!(a, CredentialId::of(&env("s1"), "https://other"));
    }

    fn az(profile_dir: &str, lang: &str) -> CredentialSpec {
        CredentialSpec::AzureCli(azbroker_proto::ToolSpec {
            executable: Some("/usr/bin/az".into()),
            profile_dir: Some(profile_dir.into()),
            env: vec![("LANG".into(), lang.into())],
        })
    }

    #[test]
    fn a_tool_is_its_executable_and_profile_not_the_rest_of_the_environment() {
        let work = CredentialId::of(&az("/home/u/.azure-work", "C"), "h");
        assert_eq!(
            work,
            CredentialId::of(&az("/home/u/.azure-work", "de_DE"), "h")
        );
        assert_ne!(work, CredentialId::of(&az("/home/u/.azure", "C"), "h"));
        let mut elsewhere = az("/home/u/.azure-work", "C");
        if let CredentialSpec::AzureCli(tool) = &mut elsewhere {
            tool.executable = Some("/opt/az/bin/az".into());
        }
        assert_ne!(work, CredentialId::of(&elsewhere, "h"));
    }

    #[test]
    fn identity_shows_no_secret() {
        let id = CredentialId::of(&env("super-secret-value"), "https://login");
        let shown = format!("{id} {id:?}");
        assert!(!shown.contains("super-secret-value"));
        assert!(shown.starts_with("EnvironmentCredential#"));
    }

    #[test]
    fn shown_as_kind_and_the_digests_first_six_bytes_in_hex() {
        let id = CredentialId::of(&env("secret"), "https://login");
        let hex: String = id.digest[..6].iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(id.to_string(), format!("EnvironmentCredential#{hex}"));
        assert_eq!(id.fingerprint(), hex);
        // Width and alignment work as for any str.
        assert_eq!(format!("{:>14}", id.short_hex()), format!("  {hex}"));
    }
}
