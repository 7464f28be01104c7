//! The tenant a tool's token was issued in.
//!
//! `az` and `azd` answer with a token and its expiry only (as read through
//! `azure_identity`), so a request that named no tenant would be labelled with
//! none. The token's own `tid` claim says which tenant issued it; it labels
//! output only and decides nothing (see `azbroker_proto::jwt`).

/// The tenant the source knew (asked for, or reported by the tool), else the
/// token's `tid` claim.
pub fn known_or_claimed(known: Option<&str>, access_token: &str) -> Option<String> {
    known
        .filter(|tenant| !tenant.is_empty())
        .map(str::to_string)
        .or_else(|| azbroker_proto::jwt::tenant(access_token))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;

    fn token_with(claims: &str) -> String {
        format!("eyJhbGciOiJub25lIn0.{}.sig", URL_SAFE_NO_PAD.encode(claims))
    }

    #[test]
    fn the_known_tenant_wins_and_the_claim_fills_the_gap() {
        let token = token_with(r#"{"tid":"72f988bf-86f1-41af-91ab-2d7cd011db47"}"#);
        assert_eq!(
            known_or_claimed(Some("contoso.onmicrosoft.com"), &token).as_deref(),
            Some("contoso.onmicrosoft.com")
        );
        for known in [None, Some("")] {
            assert_eq!(
                known_or_claimed(known, &token).as_deref(),
                Some("72f988bf-86f1-41af-91ab-2d7cd011db47")
            );
        }
        assert_eq!(known_or_claimed(None, "opaque-token"), None);
        assert_eq!(known_or_claimed(None, &token_with("{}")), None);
    }
}
