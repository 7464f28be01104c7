//! Client assertions as the Entra double checks them: the signed JWT that
//! certificate credentials send (`x5t` names the certificate's SHA-1
//! thumbprint, RS256 over `header.payload`), and the federated token that
//! workload identity forwards (a Kubernetes service account token matched
//! against a federated identity credential's issuer and subject).
//!
//! The double verifies certificate signatures for real (OpenSSL). It cannot
//! fetch a Kubernetes issuer's signing keys, so federated tokens are matched
//! by issuer, subject, audience and lifetime only, which is all a test can
//! vary. Rejections carry the AADSTS code and text Entra uses.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use openssl::hash::MessageDigest;
use openssl::sign::Verifier;
use openssl::x509::X509;
use std::collections::HashMap;

/// The audience a federated token must carry.
pub const TOKEN_EXCHANGE_AUDIENCE: &str = "api://AzureADTokenExchange";
/// The `client_assertion_type` of both kinds.
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// What a client presented, as the double understood it (never the assertion itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presented {
    Certificate {
        client_id: String,
        /// Hex SHA-1 thumbprint named by `x5t`.
        thumbprint: String,
        accepted: bool,
    },
    Federated {
        client_id: String,
        issuer: String,
        subject: String,
        /// The token's `jti`, which tests vary to see which file content was sent.
        jti: String,
        accepted: bool,
    },
    Malformed {
        client_id: String,
    },
}

/// Why an assertion was refused: the AADSTS code and its text.
#[derive(Debug)]
pub struct Rejection {
    pub code: u32,
    pub text: String,
}

#[derive(Default)]
pub struct AssertionRegistry {
    certificates: HashMap<String, Vec<X509>>,
    federated: HashMap<String, Vec<(String, String)>>,
    presented: Vec<Presented>,
}

impl AssertionRegistry {
    pub fn add_certificate(&mut self, client_id: &str, cert_der: &[u8]) {
        let cert = X509::from_der(cert_der).expect("a DER certificate");
        self.certificates
            .entry(client_id.to_owned())
            .or_default()
            .push(cert);
    }

    pub fn add_federated(&mut self, client_id: &str, issuer: &str, subject: &str) {
        self.federated
            .entry(client_id.to_owned())
            .or_default()
            .push((issuer.to_owned(), subject.to_owned()));
    }

    pub fn presented(&self) -> Vec<Presented> {
        self.presented.clone()
    }

    /// Checks `assertion` for `client_id` at time `now` (epoch seconds).
    pub fn verify(&mut self, client_id: &str, assertion: &str, now: i64) -> Result<(), Rejection> {
        let Some(jwt) = Jwt::parse(assertion) else {
            self.presented.push(Presented::Malformed {
                client_id: client_id.to_owned(),
            });
            return Err(Rejection {
                code: 50027,
                text: "JWT token is invalid or malformed.".to_owned(),
            });
        };
        match jwt.header.get("x5t").and_then(|v| v.as_str()) {
            Some(x5t) => self.verify_certificate(client_id, &jwt, x5t, now),
            None => self.verify_federated(client_id, &jwt, now),
        }
    }

    fn verify_certificate(
        &mut self,
        client_id: &str,
        jwt: &Jwt,
        x5t: &str,
        now: i64,
    ) -> Result<(), Rejection> {
        // azure_identity sends standard base64; the JOSE spec says base64url. Accept both.
        let thumbprint = STANDARD
            .decode(x5t)
            .or_else(|_| URL_SAFE_NO_PAD.decode(x5t.trim_end_matches('=')))
            .map(hex)
            .unwrap_or_default();
        let registered = self.certificates.get(client_id).and_then(|certs| {
            certs.iter().find(|cert| {
                cert.digest(MessageDigest::sha1())
                    .map(|d| hex(d.to_vec()))
                    .is_ok_and(|t| t == thumbprint)
            })
        });
        let result = match registered {
            None => Err(Rejection {
                code: 700027,
                text: format!(
                    "The certificate with identifier used to sign the client assertion is not \
                     registered on application. [Reason - The key was not found., Thumbprint of \
                     key used by client: '{}', Please visit the Azure Portal, Graph Explorer or \
                     directly use MS Graph to see configured keys for app Id '{client_id}'. \
                     Review the documentation at https://docs.microsoft.com/en-us/graph/deployments \
                     if you are not using the public cloud.]",
                    thumbprint.to_uppercase()
                ),
            }),
            Some(cert) if !signature_ok(cert, jwt) => Err(Rejection {
                code: 700027,
                text: "Client assertion failed signature validation.".to_owned(),
            }),
            Some(_) if jwt.claim("iss") != client_id || jwt.claim("sub") != client_id => {
                Err(Rejection {
                    code: 700021,
                    text: "Client assertion application identifier doesn't match 'client_id' \
                           parameter. Review the documentation at \
                           https://docs.microsoft.com/en-us/azure/active-directory/develop/active-directory-certificate-credentials ."
                        .to_owned(),
                })
            }
            Some(_) => lifetime_ok(jwt, now),
        };
        self.presented.push(Presented::Certificate {
            client_id: client_id.to_owned(),
            thumbprint,
            accepted: result.is_ok(),
        });
        result
    }

    fn verify_federated(&mut self, client_id: &str, jwt: &Jwt, now: i64) -> Result<(), Rejection> {
        let (issuer, subject, audience) = (jwt.claim("iss"), jwt.claim("sub"), jwt.audience());
        let matches = self
            .federated
            .get(client_id)
            .is_some_and(|records| records.iter().any(|(i, s)| *i == issuer && *s == subject))
            && audience == TOKEN_EXCHANGE_AUDIENCE;
        let result = if matches {
            lifetime_ok(jwt, now)
        } else {
            Err(Rejection {
                code: 70021,
                text: format!(
                    "No matching federated identity record found for presented assertion. \
                     Assertion Issuer: '{issuer}'. Assertion Subject: '{subject}'. Assertion \
                     Audience: '{audience}'. \
                     https://docs.microsoft.com/en-us/azure/active-directory/develop/workload-identity-federation"
                ),
            })
        };
        self.presented.push(Presented::Federated {
            client_id: client_id.to_owned(),
            issuer,
            subject,
            jti: jwt.claim("jti"),
            accepted: result.is_ok(),
        });
        result
    }
}

struct Jwt {
    header: serde_json::Value,
    claims: serde_json::Value,
    signed: String,
    signature: Vec<u8>,
}

impl Jwt {
    fn parse(token: &str) -> Option<Jwt> {
        let mut parts = token.split('.');
        let (header, payload, signature) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let json = |part: &str| -> Option<serde_json::Value> {
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).ok()?).ok()
        };
        Some(Jwt {
            header: json(header)?,
            claims: json(payload)?,
            signed: format!("{header}.{payload}"),
            signature: URL_SAFE_NO_PAD.decode(signature).ok()?,
        })
    }

    fn claim(&self, name: &str) -> String {
        self.claims
            .get(name)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned()
    }

    /// `aud` may be a string or an array (Kubernetes uses an array).
    fn audience(&self) -> String {
        match self.claims.get("aud") {
            Some(serde_json::Value::Array(values)) => values
                .first()
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_owned(),
            _ => self.claim("aud"),
        }
    }
}

fn signature_ok(cert: &X509, jwt: &Jwt) -> bool {
    let Ok(key) = cert.public_key() else {
        return false;
    };
    let Ok(mut verifier) = Verifier::new(MessageDigest::sha256(), &key) else {
        return false;
    };
    verifier.update(jwt.signed.as_bytes()).is_ok()
        && verifier.verify(&jwt.signature).unwrap_or(false)
}

fn lifetime_ok(jwt: &Jwt, now: i64) -> Result<(), Rejection> {
    let exp = jwt.claims.get("exp").and_then(|v| v.as_i64()).unwrap_or(0);
    let nbf = jwt.claims.get("nbf").and_then(|v| v.as_i64()).unwrap_or(0);
    if now < exp && nbf <= now + 300 {
        return Ok(());
    }
    let at = |secs: i64| {
        time::OffsetDateTime::from_unix_timestamp(secs)
            .map(|t| t.to_string())
            .unwrap_or_default()
    };
    Err(Rejection {
        code: 700024,
        text: format!(
            "Client assertion is not within its valid time range. Current time: {}, assertion \
             valid from {}, expiry time of assertion {}. Review the documentation at \
             https://docs.microsoft.com/en-us/azure/active-directory/develop/active-directory-certificate-credentials .",
            at(now),
            at(nbf),
            at(exp)
        ),
    })
}

fn hex(bytes: Vec<u8>) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
