//! JWT-shaped access tokens, as the Microsoft identity platform issues them.
//!
//! Access tokens are opaque to their clients, but tools decode their claims
//! for display (tenant, identity, audience, expiry), so the doubles mint
//! tokens with the real shape:
//! `base64url(header).base64url(claims).base64url(signature)`. The Entra
//! double uses [`mint`]; the fake `az` script builds the same shape in shell,
//! reusing [`header_b64`] and [`BACKDATE_SECS`].
//!
//! The signature is 256 random bytes (the size of an RS256 signature): the
//! tokens are **not verifiable**, and no key for `test-kid` exists. That is
//! deliberate: only the resource verifies access tokens, never a client or
//! broker, and random bytes guarantee that two tokens always differ.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::RngCore as _;
use serde::{Deserialize, Serialize};

/// The JOSE header of every minted token.
pub const HEADER_JSON: &str = r#"{"typ":"JWT","alg":"RS256","kid":"test-kid"}"#;

/// How long before the request Entra back-dates `iat` and `nbf` (clock-skew allowance).
pub const BACKDATE_SECS: i64 = 300;

/// Claims of a v1.0 app-only (client credentials) access token, in the order
/// Entra emits them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppClaims {
    pub aud: String,
    pub iss: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub appid: String,
    /// `"1"`: the client authenticated with a secret.
    pub appidacr: String,
    pub idp: String,
    pub idtyp: String,
    pub oid: String,
    pub sub: String,
    pub tid: String,
    /// Unique token identifier: makes every token distinct.
    pub uti: String,
    pub ver: String,
}

impl AppClaims {
    /// Claims for a token issued `now` (epoch seconds) for `scope`, valid for
    /// `lifetime` seconds, to the service principal `oid` of app `client_id`.
    pub fn new(
        scope: &str,
        tenant: &str,
        client_id: &str,
        oid: &str,
        now: i64,
        lifetime: i64,
    ) -> AppClaims {
        let issuer = format!("https://sts.windows.net/{tenant}/");
        AppClaims {
            aud: audience_for_scope(scope).to_owned(),
            iss: issuer.clone(),
            iat: now - BACKDATE_SECS,
            nbf: now - BACKDATE_SECS,
            exp: now.saturating_add(lifetime),
            appid: client_id.to_owned(),
            appidacr: "1".to_owned(),
            idp: issuer,
            idtyp: "app".to_owned(),
            oid: oid.to_owned(),
            sub: oid.to_owned(),
            tid: tenant.to_owned(),
            uti: new_uti(),
            ver: "1.0".to_owned(),
        }
    }
}

/// Claims of a v1.0 delegated (user) access token, as Entra issues them to a
/// public client such as Azure.Identity's developer client, in Entra's order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserClaims {
    pub aud: String,
    pub iss: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub acr: String,
    pub amr: Vec<String>,
    pub appid: String,
    /// `"0"`: a public client (no secret).
    pub appidacr: String,
    pub idtyp: String,
    pub ipaddr: String,
    pub name: String,
    pub oid: String,
    pub scp: String,
    pub sub: String,
    pub tid: String,
    pub unique_name: String,
    pub upn: String,
    pub uti: String,
    pub ver: String,
}

/// Who a user token is for: the signed-in user of the doubles.
#[derive(Debug, Clone)]
pub struct User<'a> {
    pub oid: &'a str,
    pub upn: &'a str,
    pub name: &'a str,
}

impl UserClaims {
    /// A token for `user` in `tenant`, issued to public client `client_id`.
    pub fn new(
        scope: &str,
        tenant: &str,
        client_id: &str,
        user: &User<'_>,
        now: i64,
        lifetime: i64,
    ) -> UserClaims {
        UserClaims {
            aud: audience_for_scope(scope).to_owned(),
            iss: format!("https://sts.windows.net/{tenant}/"),
            iat: now - BACKDATE_SECS,
            nbf: now - BACKDATE_SECS,
            exp: now.saturating_add(lifetime),
            acr: "1".to_owned(),
            amr: vec!["pwd".to_owned(), "mfa".to_owned()],
            appid: client_id.to_owned(),
            appidacr: "0".to_owned(),
            idtyp: "user".to_owned(),
            ipaddr: "127.0.0.1".to_owned(),
            name: user.name.to_owned(),
            oid: user.oid.to_owned(),
            scp: "user_impersonation".to_owned(),
            sub: new_uti(),
            tid: tenant.to_owned(),
            unique_name: user.upn.to_owned(),
            upn: user.upn.to_owned(),
            uti: new_uti(),
            ver: "1.0".to_owned(),
        }
    }
}

/// Claims of a v2.0 id token (scope `openid profile`), in Entra's order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdTokenClaims {
    pub aud: String,
    pub iss: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub name: String,
    pub oid: String,
    pub preferred_username: String,
    pub rh: String,
    pub sub: String,
    pub tid: String,
    pub uti: String,
    pub ver: String,
}

impl IdTokenClaims {
    pub fn new(tenant: &str, client_id: &str, user: &User<'_>, now: i64) -> IdTokenClaims {
        IdTokenClaims {
            aud: client_id.to_owned(),
            iss: format!("https://login.microsoftonline.com/{tenant}/v2.0"),
            iat: now - BACKDATE_SECS,
            nbf: now - BACKDATE_SECS,
            exp: now + 3600,
            name: user.name.to_owned(),
            oid: user.oid.to_owned(),
            preferred_username: user.upn.to_owned(),
            rh: format!("0.A{}.", new_uti()),
            sub: new_uti(),
            tid: tenant.to_owned(),
            uti: new_uti(),
            ver: "2.0".to_owned(),
        }
    }
}

/// Encodes `claims` as a JWT-shaped token with [`HEADER_JSON`] and a random signature.
pub fn mint(claims: &impl Serialize) -> String {
    let payload = serde_json::to_vec(claims).expect("claims serialize to JSON");
    let mut signature = [0u8; 256];
    rand::thread_rng().fill_bytes(&mut signature);
    format!(
        "{}.{}.{}",
        header_b64(),
        URL_SAFE_NO_PAD.encode(payload),
        URL_SAFE_NO_PAD.encode(signature)
    )
}

/// [`HEADER_JSON`], base64url-encoded (the first segment of every token).
pub fn header_b64() -> String {
    URL_SAFE_NO_PAD.encode(HEADER_JSON)
}

/// Decodes the claims (middle segment) of a JWT-shaped token, without
/// verifying anything. `None` if it is not JWT-shaped.
pub fn decode_claims(token: &str) -> Option<serde_json::Value> {
    let mut segments = token.split('.');
    let (_header, payload, _signature) = (segments.next()?, segments.next()?, segments.next()?);
    if segments.next().is_some() {
        return None;
    }
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()
}

/// The v1 audience (resource) that a v2 scope names: the scope minus its last
/// path segment, e.g. `https://management.azure.com/.default` ->
/// `https://management.azure.com`, `https://graph.microsoft.com/User.Read` ->
/// `https://graph.microsoft.com`, `<app-id>/.default` -> `<app-id>`.
/// A bare URL or name (no permission segment) is its own audience.
pub fn audience_for_scope(scope: &str) -> &str {
    if let Some(resource) = scope.strip_suffix("/.default") {
        return resource;
    }
    match scope.split_once("://") {
        Some((_, rest)) if rest.contains('/') => scope.rsplit_once('/').map_or(scope, |(r, _)| r),
        _ => scope,
    }
}

/// A unique token identifier shaped like Entra's (16 random bytes, base64url).
pub fn new_uti() -> String {
    let mut bytes = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A random (version 4) UUID in its canonical text form, for object, trace and correlation IDs.
pub fn new_uuid() -> String {
    let mut b = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|byte| format!("{byte:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_tokens_decode_and_differ() {
        let claims = AppClaims::new(
            "https://management.azure.com/.default",
            "tenant-1",
            "app-1",
            "oid-1",
            1_700_000_000,
            3599,
        );
        let first = mint(&claims);
        let second = mint(&claims);
        assert_ne!(first, second, "random signatures make tokens unique");
        assert!(first.starts_with("eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiIsImtpZCI6InRlc3Qta2lkIn0."));

        let decoded = decode_claims(&first).unwrap();
        assert_eq!(decoded["aud"], "https://management.azure.com");
        assert_eq!(decoded["iss"], "https://sts.windows.net/tenant-1/");
        assert_eq!(decoded["exp"], 1_700_003_599);
        assert_eq!(decoded["iat"], 1_700_000_000 - BACKDATE_SECS);
        assert_eq!(decoded["idtyp"], "app");
        assert_eq!(decoded["ver"], "1.0");
        assert_eq!(decoded["uti"].as_str().unwrap().len(), 22);
        // Serialization keeps Entra's claim order.
        let payload = std::str::from_utf8(
            &URL_SAFE_NO_PAD
                .decode(first.split('.').nth(1).unwrap())
                .unwrap(),
        )
        .unwrap()
        .to_owned();
        assert!(payload.starts_with(r#"{"aud":"https://management.azure.com","iss":"#));

        assert_ne!(
            AppClaims::new("s", "t", "c", "o", 0, 1).uti,
            AppClaims::new("s", "t", "c", "o", 0, 1).uti
        );
    }

    #[test]
    fn rejects_non_jwts() {
        assert_eq!(decode_claims("not-a-token"), None);
        assert_eq!(decode_claims("a.b.c.d"), None);
        assert_eq!(decode_claims("a.!!!.c"), None);
    }

    #[test]
    fn audiences() {
        for (scope, aud) in [
            (
                "https://management.azure.com/.default",
                "https://management.azure.com",
            ),
            (
                "https://management.core.windows.net//.default",
                "https://management.core.windows.net/",
            ),
            (
                "https://graph.microsoft.com/User.Read",
                "https://graph.microsoft.com",
            ),
            (
                "00000003-0000-0000-c000-000000000000/.default",
                "00000003-0000-0000-c000-000000000000",
            ),
            ("https://vault.azure.net", "https://vault.azure.net"),
            ("openid", "openid"),
        ] {
            assert_eq!(audience_for_scope(scope), aud, "{scope}");
        }
    }

    #[test]
    fn uuids_are_v4() {
        let id = new_uuid();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"));
        assert_ne!(id, new_uuid());
    }
}
