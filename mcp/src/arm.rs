//! Azure Resource Manager: subscriptions and resource groups, following
//! `nextLink` pages, with ARM's errors turned into tool errors (a wrong-tenant
//! token becomes the tenant remedy).

use azbroker_client::azure_cli_profile;
use azbroker_proto::resource::is_guid;
use reqwest::header::WWW_AUTHENTICATE;
use reqwest::Url;
use serde_json::{json, Value};

use crate::errors::ToolError;
use crate::http::{bearer_params, Response};
use crate::server::Context;

const SUBSCRIPTIONS_API: &str = "2022-12-01";
const RESOURCE_GROUPS_API: &str = "2021-04-01";
/// A listing stops here rather than follow a server that pages forever.
const MAX_PAGES: usize = 100;

/// `GET /subscriptions`, shaped like the Azure MCP Server's `subscription list`:
/// `subscriptionId`, `displayName`, `state`, `tenantId`, `isDefault`, the default first.
pub async fn subscription_list(ctx: &Context, tenant: Option<&str>) -> Result<Value, ToolError> {
    let subscriptions = list_subscriptions(ctx, tenant).await?;
    let default = default_subscription(|name| std::env::var(name).ok());
    let mut items: Vec<Value> = subscriptions
        .iter()
        .map(|s| {
            let id = text(s, "subscriptionId");
            json!({
                "subscriptionId": id,
                "displayName": text(s, "displayName"),
                "state": s.get("state").and_then(Value::as_str),
                "tenantId": s.get("tenantId").and_then(Value::as_str),
                "isDefault": default.as_deref().is_some_and(|d| d.eq_ignore_ascii_case(id)),
            })
        })
        .collect();
    // Stable: the default first, the rest in Resource Manager's order.
    items.sort_by_key(|item| !item["isDefault"].as_bool().unwrap_or(false));
    Ok(json!({ "subscriptions": items }))
}

/// `GET /subscriptions/{id}/resourcegroups`, shaped like the Azure MCP
/// Server's `group list`: `name`, `id`, `location`. `subscription` is an ID
/// or a display name; without it, the default subscription.
pub async fn group_list(
    ctx: &Context,
    subscription: Option<&str>,
    tenant: Option<&str>,
) -> Result<Value, ToolError> {
    let subscription_id = resolve_subscription(ctx, subscription, tenant).await?;
    let path = format!("subscriptions/{subscription_id}/resourcegroups");
    let groups = get_pages(ctx, &path, RESOURCE_GROUPS_API, tenant).await?;
    let items: Vec<Value> = groups
        .iter()
        .map(|g| {
            json!({
                "name": text(g, "name"),
                "id": text(g, "id"),
                "location": text(g, "location"),
            })
        })
        .collect();
    Ok(json!({ "groups": items }))
}

async fn list_subscriptions(ctx: &Context, tenant: Option<&str>) -> Result<Vec<Value>, ToolError> {
    get_pages(ctx, "subscriptions", SUBSCRIPTIONS_API, tenant).await
}

/// A subscription ID from an ID, a display name, or the default.
async fn resolve_subscription(
    ctx: &Context,
    subscription: Option<&str>,
    tenant: Option<&str>,
) -> Result<String, ToolError> {
    let given = subscription.map(str::trim).filter(|s| !s.is_empty());
    let Some(given) = given
        .map(str::to_string)
        .or_else(|| default_subscription(|n| std::env::var(n).ok()))
    else {
        return Err(ToolError::invalid_argument(
            "Missing required option: subscription. Name one (ID or display name), set a \
             default with 'az account set --subscription <id>', or set AZURE_SUBSCRIPTION_ID",
        ));
    };
    if is_guid(&given) {
        return Ok(given.to_ascii_lowercase());
    }
    // A display name: find it among the subscriptions this identity can see.
    let subscriptions = list_subscriptions(ctx, tenant).await?;
    let matches: Vec<&str> = subscriptions
        .iter()
        .filter(|s| text(s, "displayName").eq_ignore_ascii_case(&given))
        .map(|s| text(s, "subscriptionId"))
        .collect();
    match matches.as_slice() {
        [id] if is_guid(id) => Ok(id.to_string()),
        [] => Err(ToolError::invalid_argument(format!(
            "No subscription named {given:?} is visible to this identity; use subscription_list to see them"
        ))),
        _ => Err(ToolError::invalid_argument(format!(
            "Several subscriptions are named {given:?}; name one by its subscriptionId"
        ))),
    }
}

/// Every item of a paged Resource Manager list, following `nextLink`.
async fn get_pages(
    ctx: &Context,
    path: &str,
    api_version: &str,
    tenant: Option<&str>,
) -> Result<Vec<Value>, ToolError> {
    let endpoints = ctx.endpoints()?;
    let mut url = endpoints
        .arm
        .join(path)
        .map_err(|e| ToolError::invalid_argument(format!("{path}: {e}")))?;
    url.query_pairs_mut()
        .append_pair("api-version", api_version);
    let mut items = Vec::new();
    for _ in 0..MAX_PAGES {
        let response = ctx.get(&url, &endpoints.arm_scope, tenant, &[]).await?;
        if !response.status.is_success() {
            return Err(arm_error(&response));
        }
        let page: Value = serde_json::from_slice(&response.body).map_err(|e| {
            ToolError::bad_response(format!(
                "Resource Manager sent invalid JSON for {path}: {e}"
            ))
        })?;
        match page.get("value") {
            Some(Value::Array(values)) => items.extend(values.iter().cloned()),
            _ => {
                return Err(ToolError::bad_response(format!(
                    "Resource Manager's answer for {path} has no \"value\" list"
                )))
            }
        }
        match page
            .get("nextLink")
            .and_then(Value::as_str)
            .filter(|l| !l.is_empty())
        {
            None => return Ok(items),
            Some(link) => url = next_link(&endpoints.arm, link)?,
        }
    }
    Err(ToolError::bad_response(format!(
        "Resource Manager returned more than {MAX_PAGES} pages for {path}"
    )))
}

/// A `nextLink` is followed only on Resource Manager's own origin: the
/// request carries a Resource Manager token, which must never go elsewhere.
fn next_link(arm: &Url, link: &str) -> Result<Url, ToolError> {
    let url = Url::parse(link)
        .map_err(|e| ToolError::bad_response(format!("invalid nextLink {link:?}: {e}")))?;
    if url.origin() != arm.origin() {
        return Err(ToolError::bad_response(format!(
            "Resource Manager returned a nextLink to another origin ({}); not following it with a token for {}",
            url.origin().ascii_serialization(),
            arm.origin().ascii_serialization()
        )));
    }
    Ok(url)
}

/// ARM's `{"error": {"code", "message"}}` as a tool error.
fn arm_error(response: &Response) -> ToolError {
    let body: Value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
    let error = &body["error"];
    let code = error["code"].as_str().unwrap_or_default();
    let message = error["message"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| {
            let text = String::from_utf8_lossy(&response.body);
            let text: String = text.chars().take(500).collect();
            format!("Resource Manager answered {}: {text}", response.status)
        });
    if code.eq_ignore_ascii_case("InvalidAuthenticationTokenTenant") {
        return ToolError::tenant_mismatch(
            required_tenant(response, &message).as_deref(),
            &message,
        );
    }
    ToolError::request_failed(response.status.as_u16(), code, &message)
}

/// The tenant Resource Manager wants: from the challenge's
/// `authorization_uri="https://login.windows.net/<tenant>"`, else from the
/// message's "It must match the tenant 'https://sts.windows.net/<tenant>/'".
fn required_tenant(response: &Response, message: &str) -> Option<String> {
    let from_header = response
        .headers
        .get_all(WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(bearer_params)
        .find(|(name, _)| name == "authorization_uri")
        .and_then(|(_, uri)| Url::parse(&uri).ok())
        .and_then(|uri| uri.path_segments()?.next().map(str::to_string))
        .filter(|tenant| is_guid(tenant));
    from_header.or_else(|| {
        let (_, rest) = message.split_once("must match the tenant 'https://sts.windows.net/")?;
        let tenant = rest.split(['/', '\'']).next()?;
        is_guid(tenant).then(|| tenant.to_string())
    })
}

/// The default subscription as the Azure MCP Server resolves it: the Azure
/// CLI profile's (`az account set`), else `AZURE_SUBSCRIPTION_ID`.
pub fn default_subscription(env: impl Fn(&str) -> Option<String>) -> Option<String> {
    let profile = azure_cli_profile::load_with(&env);
    azure_cli_profile::default(&profile)
        .map(|s| s.id.clone())
        .or_else(|| {
            env("AZURE_SUBSCRIPTION_ID")
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        })
}

fn text<'a>(value: &'a Value, field: &str) -> &'a str {
    value.get(field).and_then(Value::as_str).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue};
    use reqwest::StatusCode;

    const SUB: &str = "5f0c7a1e-0000-4000-8000-0000000050b5";

    fn response(status: u16, challenge: Option<&str>, body: Value) -> Response {
        let mut headers = HeaderMap::new();
        if let Some(c) = challenge {
            headers.insert(WWW_AUTHENTICATE, HeaderValue::from_str(c).unwrap());
        }
        Response {
            status: StatusCode::from_u16(status).unwrap(),
            headers,
            body: body.to_string().into_bytes(),
        }
    }

    #[test]
    fn guids() {
        assert!(is_guid(SUB));
        assert!(is_guid("5F0C7A1E-0000-4000-8000-0000000050B5"));
        assert!(!is_guid("5f0c7a1e-0000-4000-8000-0000000050b"));
        assert!(!is_guid("my-subscription"));
        assert!(!is_guid("5f0c7a1e-0000-4000-8000-0000000050bx"));
    }

    #[test]
    fn next_links_stay_on_resource_manager() {
        let arm = Url::parse("https://127.0.0.1:8443/").unwrap();
        let same = next_link(
            &arm,
            "https://127.0.0.1:8443/subscriptions?api-version=2022-12-01&%24skiptoken=2",
        )
        .unwrap();
        assert_eq!(same.query(), Some("api-version=2022-12-01&%24skiptoken=2"));
        for elsewhere in [
            "https://attacker.example/subscriptions",
            "http://127.0.0.1:8443/subscriptions",
            "https://127.0.0.1:9443/subscriptions",
        ] {
            let error = next_link(&arm, elsewhere).unwrap_err();
            assert_eq!(error.status, 502, "{elsewhere}");
        }
    }

    #[test]
    fn arm_errors() {
        let not_found = arm_error(&response(
            404,
            None,
            json!({"error": {"code": "SubscriptionNotFound", "message": format!("The subscription '{SUB}' could not be found.")}}),
        ));
        assert_eq!(not_found.status, 404);
        assert_eq!(not_found.kind, "RequestFailedException");
        assert_eq!(
            not_found.message,
            format!(
                "The subscription '{SUB}' could not be found. Status: 404 (SubscriptionNotFound)"
            )
        );

        let wrong_issuer = format!(
            "The access token is from the wrong issuer 'https://sts.windows.net/a1b2c3d4-0000-4000-8000-00000000a2b1/'. \
             It must match the tenant 'https://sts.windows.net/{SUB}/' associated with this subscription."
        );
        let body =
            json!({"error": {"code": "InvalidAuthenticationTokenTenant", "message": wrong_issuer}});
        let from_header = arm_error(&response(
            401,
            Some(&format!(
                r#"Bearer authorization_uri="https://login.windows.net/{SUB}", error="invalid_token""#
            )),
            body.clone(),
        ));
        assert!(
            from_header
                .message
                .contains(&format!("az login --tenant {SUB}")),
            "{}",
            from_header.message
        );
        let from_message = arm_error(&response(401, None, body));
        assert!(
            from_message.message.contains(&format!("tenant=\"{SUB}\"")),
            "{}",
            from_message.message
        );

        let not_json = arm_error(&Response {
            status: StatusCode::BAD_GATEWAY,
            headers: HeaderMap::new(),
            body: b"<html>bad gateway</html>".to_vec(),
        });
        assert_eq!(not_json.status, 502);
        assert!(not_json.message.contains("<html>bad gateway</html>"));
    }

    #[test]
    fn default_subscription_prefers_the_cli_profile() {
        let dir = std::env::temp_dir().join(format!("azbroker-mcp-profile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let profile = format!(
            "\u{feff}{}",
            json!({"installationId": "x", "subscriptions": [
                {"id": "11111111-0000-4000-8000-000000000001", "isDefault": false},
                {"id": SUB, "isDefault": true},
            ]})
        );
        std::fs::write(dir.join("azureProfile.json"), profile).unwrap();
        let dir_text = dir.to_str().unwrap().to_string();
        let env = |vars: Vec<(&'static str, String)>| {
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.clone())
            }
        };
        assert_eq!(
            default_subscription(env(vec![
                ("AZURE_CONFIG_DIR", dir_text.clone()),
                ("AZURE_SUBSCRIPTION_ID", "env-sub".into()),
            ])),
            Some(SUB.to_string())
        );
        assert_eq!(
            default_subscription(env(vec![
                ("AZURE_CONFIG_DIR", "/nonexistent".into()),
                ("AZURE_SUBSCRIPTION_ID", "env-sub".into()),
            ])),
            Some("env-sub".to_string())
        );
        assert_eq!(default_subscription(env(vec![])), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
