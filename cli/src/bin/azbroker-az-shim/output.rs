//! The Azure CLI's JSON for `az account get-access-token`, byte for byte:
//! Python's `json.dumps(indent=2, sort_keys=True)` of `accessToken`,
//! `expiresOn` (local time, no offset), `expires_on` (epoch seconds),
//! `subscription` (absent with `--tenant`), `tenant` and `tokenType`.

use azbroker_proto::TokenReply;

pub fn token_json(token: &TokenReply, subscription: Option<&str>, tenant: Option<&str>) -> String {
    let text = |s: &str| serde_json::to_string(s).expect("a string serializes");
    let mut fields = vec![
        ("accessToken", text(token.access_token.expose())),
        (
            "expiresOn",
            text(&local_time(token.expires_on).unwrap_or_default()),
        ),
        ("expires_on", token.expires_on.to_string()),
    ];
    if let Some(subscription) = subscription {
        fields.push(("subscription", text(subscription)));
    }
    if let Some(tenant) = tenant {
        fields.push(("tenant", text(tenant)));
    }
    fields.push(("tokenType", text(&token.token_type)));
    let body: Vec<String> = fields
        .into_iter()
        .map(|(key, value)| format!("  \"{key}\": {value}"))
        .collect();
    format!("{{\n{}\n}}\n", body.join(",\n"))
}

/// `YYYY-MM-DD HH:MM:SS.000000` in the local time zone, as the CLI prints
/// `datetime.fromtimestamp(expires_on)`: the C library's `localtime_r`
/// (which reads `TZ` and the system zone) does what Python does.
pub fn local_time(epoch: i64) -> Option<String> {
    use nix::libc;
    // time_t is 32 bits on some targets.
    #[allow(clippy::useless_conversion)]
    let time: libc::time_t = epoch.try_into().ok()?;
    // SAFETY: `tm` is plain data that localtime_r fills; both pointers are
    // valid for the call, and a null return means failure.
    let tm = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&time, &mut tm).is_null() {
            return None;
        }
        tm
    };
    Some(format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.000000",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    ))
}

/// The `tid` claim of a JWT access token (the tenant it was issued in), when
/// the token is a JWT. Only read, never verified: it labels the output.
pub fn token_tenant(access_token: &str) -> Option<String> {
    azbroker_proto::jwt::tenant(access_token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use azbroker_proto::Secret;
    use base64::engine::general_purpose;
    use base64::Engine as _;

    fn reply(token: &str, expires_on: i64) -> TokenReply {
        TokenReply {
            access_token: Secret::new(token),
            token_type: "Bearer".into(),
            expires_on,
            refresh_on: expires_on - 600,
            tenant: None,
            credential: "AzureCliCredential".into(),
            cached: false,
            stale: false,
        }
    }

    #[test]
    fn prints_the_cli_layout() {
        let json = token_json(&reply("eyJ.x.y", 1_698_760_750), Some("sub"), Some("tid"));
        let local = local_time(1_698_760_750).unwrap();
        assert_eq!(
            json,
            format!(
                "{{\n  \"accessToken\": \"eyJ.x.y\",\n  \"expiresOn\": \"{local}\",\n  \
                 \"expires_on\": 1698760750,\n  \"subscription\": \"sub\",\n  \
                 \"tenant\": \"tid\",\n  \"tokenType\": \"Bearer\"\n}}\n"
            )
        );
        let without = token_json(&reply("t", 1), None, Some("tid"));
        assert!(!without.contains("subscription"));
    }

    #[test]
    fn reads_the_tenant_claim() {
        let claims = general_purpose::URL_SAFE_NO_PAD
            .encode(r#"{"tid":"72f988bf-86f1-41af-91ab-2d7cd011db47","aud":"x"}"#);
        assert_eq!(
            token_tenant(&format!("eyJhbGciOiJub25lIn0.{claims}.sig")).as_deref(),
            Some("72f988bf-86f1-41af-91ab-2d7cd011db47")
        );
        assert_eq!(token_tenant("opaque-token"), None);
        let odd = general_purpose::URL_SAFE_NO_PAD.encode(r#"{"tid":"a\"b"}"#);
        assert_eq!(token_tenant(&format!("h.{odd}.s")), None);
    }
}
