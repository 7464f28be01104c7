//! `auth_status`: who is signed in (decoded from the claims of a Resource
//! Manager token the broker hands out), which credential served, the tokens
//! the daemon holds and its health. Never a token.

use azbroker_proto::StatusReport;
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::errors::ToolError;
use crate::server::Context;

pub async fn auth_status(ctx: &Context, tenant: Option<&str>) -> Result<Value, ToolError> {
    let scope = &ctx.endpoints()?.arm_scope;
    let token = ctx.token(scope, tenant, None).await?;
    let status = ctx
        .broker()?
        .status()
        .await
        .map_err(ToolError::from_client)?;
    // Access tokens are opaque to clients in principle, but Entra's are JWTs
    // and their claims are the only record of who signed in. Only these
    // identity claims are read; the token itself never leaves this function.
    let claims = jwt_claims(token.access_token.expose()).unwrap_or(Value::Null);
    let claim = |name: &str| claims.get(name).and_then(Value::as_str).map(str::to_string);
    let user = claim("upn")
        .or_else(|| claim("unique_name"))
        .or_else(|| claim("preferred_username"));
    let kind = claim("idtyp").unwrap_or_else(|| if user.is_some() { "user" } else { "app" }.into());
    Ok(json!({
        "credential": token.credential,
        "tenantId": claim("tid").or(token.tenant.clone()),
        "identity": {
            "type": kind,
            "objectId": claim("oid"),
            "userPrincipalName": user,
            "name": claim("name"),
            "appId": claim("appid").or_else(|| claim("azp")),
        },
        "token": {
            "scope": scope,
            "audience": claim("aud"),
            "expiresOn": rfc3339(token.expires_on),
            "refreshOn": rfc3339(token.refresh_on),
            "fromCache": token.cached,
        },
        "tokensHeld": status.cache.iter().map(|entry| json!({
            "scopes": entry.scopes,
            "tenant": entry.tenant,
            "credential": entry.credential,
            "expiresOn": rfc3339(entry.expires_on),
            "refreshOn": rfc3339(entry.refresh_on),
            "hits": entry.hits,
        })).collect::<Vec<_>>(),
        "broker": broker_json(&status),
    }))
}

fn broker_json(status: &StatusReport) -> Value {
    let c = &status.counters;
    json!({
        // It answered this status request.
        "running": true,
        "pid": status.daemon_pid,
        "version": status.daemon_version,
        "protocolVersion": status.protocol_version,
        "uptimeSeconds": status.uptime_secs,
        "socket": status.socket_path,
        "store": status.store,
        "credentials": status.credentials.iter().map(|cred| json!({
            "credential": cred.credential,
            "state": cred.state.as_str(),
            "acquisitions": cred.acquisitions,
            "lastSuccess": cred.last_success.map(rfc3339),
            "lastError": cred.last_error,
        })).collect::<Vec<_>>(),
        "counters": {
            "requests": c.requests,
            "cacheHits": c.cache_hits,
            "cacheMisses": c.cache_misses,
            "upstreamAcquisitions": c.upstream_acquisitions,
            "refreshes": c.refreshes,
            "refreshFailures": c.refresh_failures,
            "errors": c.errors,
            "connectionsOpen": c.connections_open,
        },
    })
}

/// The claims of a JWT-shaped token, without verifying anything (only the
/// resource verifies tokens). `None` if it is not a JWT.
fn jwt_claims(token: &str) -> Option<Value> {
    azbroker_proto::jwt::unverified_claims(token).map(Value::Object)
}

fn rfc3339(epoch: i64) -> Option<String> {
    OffsetDateTime::from_unix_timestamp(epoch)
        .ok()?
        .format(&Rfc3339)
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    #[test]
    fn decodes_jwt_claims_only() {
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(r#"{"oid":"o-1","tid":"t-1","upn":"a@b.example"}"#);
        let claims = jwt_claims(&format!("eyJ0eXAiOiJKV1QifQ.{payload}.c2ln")).unwrap();
        assert_eq!(claims["oid"], "o-1");
        assert_eq!(jwt_claims("opaque-token"), None);
        assert_eq!(jwt_claims("a.b.c.d"), None);
        assert_eq!(jwt_claims("a.!!!.c"), None);
        assert_eq!(rfc3339(0).as_deref(), Some("1970-01-01T00:00:00Z"));
    }
}
