//! Reading the claims of an access token without verifying it.
//!
//! Only the resource verifies a token; the broker and its clients read claims
//! to label output (tenant, account, application) and never decide anything
//! that matters for security on them. One reader, one size cap, one padding
//! rule, for every program.

use base64::alphabet::URL_SAFE;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use serde_json::{Map, Value};

/// A payload longer than this is not read (Entra's are a few KiB).
pub const MAX_PAYLOAD_LEN: usize = 16 * 1024;

/// base64url with or without padding: issuers differ.
const BASE64URL: GeneralPurpose = GeneralPurpose::new(
    &URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The claims of a token shaped `header.payload.signature` whose payload is a
/// JSON object; `None` for anything else (opaque tokens included).
pub fn unverified_claims(token: &str) -> Option<Map<String, Value>> {
    let mut parts = token.split('.');
    let (_header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || payload.len() > MAX_PAYLOAD_LEN {
        return None;
    }
    match serde_json::from_slice(&BASE64URL.decode(payload).ok()?).ok()? {
        Value::Object(claims) => Some(claims),
        _ => None,
    }
}

/// A string claim of `claims`.
pub fn text_claim(claims: &Map<String, Value>, name: &str) -> Option<String> {
    claims.get(name)?.as_str().map(str::to_string)
}

/// The `tid` claim (the tenant that issued the token), when it looks like a
/// tenant: a GUID or a domain name, so it can be printed as it is.
pub fn tenant(token: &str) -> Option<String> {
    let tid = text_claim(&unverified_claims(token)?, "tid")?;
    let plausible = !tid.is_empty()
        && tid.len() <= 128
        && tid
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    plausible.then_some(tid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::{URL_SAFE as PADDED, URL_SAFE_NO_PAD};

    fn token(payload: &str, engine: &GeneralPurpose) -> String {
        format!("eyJhbGciOiJub25lIn0.{}.sig", engine.encode(payload))
    }

    #[test]
    fn reads_claims_with_or_without_padding() {
        let payload = r#"{"tid":"72f988bf-86f1-41af-91ab-2d7cd011db47","oid":"o"}"#;
        for engine in [&URL_SAFE_NO_PAD, &PADDED] {
            let claims = unverified_claims(&token(payload, engine)).unwrap();
            assert_eq!(text_claim(&claims, "oid").as_deref(), Some("o"));
            assert_eq!(
                tenant(&token(payload, engine)).as_deref(),
                Some("72f988bf-86f1-41af-91ab-2d7cd011db47")
            );
        }
    }

    #[test]
    fn refuses_what_is_not_a_jwt_with_an_object_payload() {
        let engine = &URL_SAFE_NO_PAD;
        assert!(unverified_claims("opaque-token").is_none());
        assert!(unverified_claims(&format!("{}.x", token("{}", engine))).is_none());
        assert!(unverified_claims(&token("[1]", engine)).is_none());
        assert!(unverified_claims(&token("not json", engine)).is_none());
        let huge = format!(r#"{{"tid":"t","pad":"{}"}}"#, "a".repeat(MAX_PAYLOAD_LEN));
        assert!(unverified_claims(&token(&huge, engine)).is_none());
    }

    #[test]
    fn a_tenant_claim_that_could_not_be_a_tenant_is_dropped() {
        let engine = &URL_SAFE_NO_PAD;
        assert_eq!(tenant(&token(r#"{"tid":"a\"b"}"#, engine)), None);
        assert_eq!(tenant(&token(r#"{"tid":""}"#, engine)), None);
        assert_eq!(tenant(&token(r#"{"tid":5}"#, engine)), None);
        assert_eq!(
            tenant(&token(r#"{"tid":"contoso.onmicrosoft.com"}"#, engine)).as_deref(),
            Some("contoso.onmicrosoft.com")
        );
    }
}
