//! A local HTTPS double of Azure Resource Manager, for the MCP server's tools:
//!
//! - `GET /subscriptions?api-version=2022-12-01`: the subscriptions of the
//!   token's tenant, `page_size` per page, with `nextLink` (`%24skiptoken`).
//! - `GET /subscriptions/{id}/resourcegroups?api-version=2021-04-01`: the
//!   subscription's resource groups, paged the same way.
//! - Bearer tokens are checked the way ARM does, with ARM's error codes and
//!   messages: missing header (`AuthenticationFailed`), not a JWT
//!   (`InvalidAuthenticationToken`), wrong audience
//!   (`InvalidAuthenticationTokenAudience`), expired
//!   (`ExpiredAuthenticationToken`), and a token from another tenant than the
//!   subscription's (`InvalidAuthenticationTokenTenant`, with
//!   `WWW-Authenticate: Bearer authorization_uri="https://login.windows.net/<tenant>"`):
//!   wrong-tenant mode is simply a subscription registered in another tenant.
//! - Claims-challenge mode ([`ArmDouble::challenge_next`]): the next requests
//!   get a continuous access evaluation challenge, `401` with
//!   `WWW-Authenticate: Bearer ..., error="insufficient_claims", claims="<base64>"`.
//!   The header is ARM's documented format; the body's exact text is not
//!   documented, so it is a plausible `InvalidAuthenticationToken` error.
//!
//! The double cannot verify signatures (nobody has the keys of the test
//! tokens): it checks claims only, as Azurite's `--oauth basic` does.

use crate::https_server::{Handler, HttpsServer};
use crate::jwt;
use crate::tls::TestPki;
use base64::Engine as _;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use time::OffsetDateTime;

/// The claims of the challenge (the shape Entra's CAE challenges have).
pub const CAE_CLAIMS: &str = r#"{"access_token":{"nbf":{"essential":true,"value":"1726258122"}}}"#;

/// Audiences ARM accepts.
const AUDIENCES: [&str; 4] = [
    "https://management.core.windows.net/",
    "https://management.core.windows.net",
    "https://management.azure.com/",
    "https://management.azure.com",
];

/// A subscription the double serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArmSubscription {
    pub id: String,
    pub display_name: String,
    pub tenant: String,
    /// `Enabled`, `Disabled`, `Warned`, ...
    pub state: String,
    /// `(name, location)` of each resource group.
    pub groups: Vec<(String, String)>,
}

/// One request, as the double understood it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArmRequest {
    pub method: String,
    /// Path and query, e.g. `/subscriptions?api-version=2022-12-01`.
    pub target: String,
    /// `tid` of the bearer token, empty if none could be read.
    pub token_tenant: String,
    /// HTTP status of the reply.
    pub status: u16,
}

#[derive(Default)]
struct State {
    subscriptions: Vec<ArmSubscription>,
    page_size: usize,
    challenges_left: usize,
    requests: Vec<ArmRequest>,
}

/// The running double; dropping it stops the server.
pub struct ArmDouble {
    server: HttpsServer,
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for ArmDouble {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArmDouble")
            .field("addr", &self.server.addr())
            .finish_non_exhaustive()
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ArmDouble {
    /// Starts the double on loopback with the PKI's certificate; 100 items per page.
    pub fn start(pki: &TestPki) -> ArmDouble {
        let state = Arc::new(Mutex::new(State {
            page_size: 100,
            ..State::default()
        }));
        // The server needs its own address for nextLink; it is known after the bind.
        let base: Arc<Mutex<String>> = Arc::default();
        let handler: Handler = {
            let (state, base) = (Arc::clone(&state), Arc::clone(&base));
            Arc::new(move |request| {
                let base = base.lock().unwrap_or_else(PoisonError::into_inner).clone();
                handle(&state, &base, &request)
            })
        };
        let server = HttpsServer::start("arm-double", pki.server_config(), handler);
        *base.lock().unwrap_or_else(PoisonError::into_inner) = format!("https://{}", server.addr());
        ArmDouble { server, state }
    }

    /// The Resource Manager base URL, e.g. `https://127.0.0.1:41234` (for `AZBROKER_ARM_ENDPOINT`).
    pub fn endpoint(&self) -> String {
        format!("https://{}", self.server.addr())
    }

    pub fn add_subscription(&self, subscription: ArmSubscription) {
        lock(&self.state).subscriptions.push(subscription);
    }

    /// Items per page of every list (at least 1).
    pub fn set_page_size(&self, size: usize) {
        lock(&self.state).page_size = size.max(1);
    }

    /// The next `n` requests with a valid token get a claims challenge.
    pub fn challenge_next(&self, n: usize) {
        lock(&self.state).challenges_left = n;
    }

    /// Every request so far, oldest first.
    pub fn requests(&self) -> Vec<ArmRequest> {
        lock(&self.state).requests.clone()
    }
}

/// An ARM error: `{"error":{"code","message"}}`.
fn arm_error(status: StatusCode, code: &str, message: &str) -> Response<Full<Bytes>> {
    json_response(
        status,
        &json!({"error": {"code": code, "message": message}}),
    )
}

fn json_response(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    response
}

fn with_challenge(mut response: Response<Full<Bytes>>, challenge: &str) -> Response<Full<Bytes>> {
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_str(challenge).expect("a valid header"),
    );
    response
}

/// ARM's timestamps in its messages: `11/26/2024 4:15:00 AM`.
fn arm_time(epoch: i64) -> String {
    let t = OffsetDateTime::from_unix_timestamp(epoch).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let (hour, meridiem) = match t.hour() {
        0 => (12, "AM"),
        h @ 1..=11 => (h, "AM"),
        12 => (12, "PM"),
        h => (h - 12, "PM"),
    };
    format!(
        "{}/{}/{} {}:{:02}:{:02} {meridiem}",
        u8::from(t.month()),
        t.day(),
        t.year(),
        hour,
        t.minute(),
        t.second()
    )
}

fn handle(state: &Mutex<State>, base: &str, request: &Request<Bytes>) -> Response<Full<Bytes>> {
    let target = request.uri().path_and_query().map_or_else(
        || request.uri().path().to_string(),
        |pq| pq.as_str().to_string(),
    );
    let claims = bearer_claims(request);
    let token_tenant = claims
        .as_ref()
        .and_then(|c| c["tid"].as_str())
        .unwrap_or_default()
        .to_string();
    let response = respond(state, base, request, claims.as_ref());
    lock(state).requests.push(ArmRequest {
        method: request.method().to_string(),
        target,
        token_tenant,
        status: response.status().as_u16(),
    });
    response
}

/// The claims of the bearer token, `None` if there is no JWT-shaped bearer token.
fn bearer_claims(request: &Request<Bytes>) -> Option<Value> {
    let value = request
        .headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let token = value.strip_prefix("Bearer ")?;
    jwt::decode_claims(token)
}

fn respond(
    state: &Mutex<State>,
    base: &str,
    request: &Request<Bytes>,
    claims: Option<&Value>,
) -> Response<Full<Bytes>> {
    if request.headers().get(header::AUTHORIZATION).is_none() {
        return with_challenge(
            arm_error(
                StatusCode::UNAUTHORIZED,
                "AuthenticationFailed",
                "Authentication failed. The 'Authorization' header is missing.",
            ),
            r#"Bearer authorization_uri="https://login.windows.net/", error="invalid_token", error_description="The authentication failed because of missing 'Authorization' header.""#,
        );
    }
    let Some(claims) = claims else {
        return with_challenge(
            arm_error(
                StatusCode::UNAUTHORIZED,
                "InvalidAuthenticationToken",
                "The access token is invalid.",
            ),
            r#"Bearer authorization_uri="https://login.windows.net/", error="invalid_token", error_description="The access token is invalid.""#,
        );
    };
    let audience = claims["aud"].as_str().unwrap_or_default();
    if !AUDIENCES.contains(&audience) {
        let message = format!(
            "The access token has been obtained for wrong audience or resource '{audience}'. It \
             should exactly match with one of the allowed audiences 'https://management.core.windows.net/',\
             'https://management.core.windows.net','https://management.azure.com/','https://management.azure.com'."
        );
        return arm_error(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationTokenAudience",
            &message,
        );
    }
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let expires = claims["exp"].as_i64().unwrap_or(0);
    if expires <= now {
        let message = format!(
            "The access token expiry UTC time '{}' is earlier than current UTC time '{}'.",
            arm_time(expires),
            arm_time(now)
        );
        return arm_error(
            StatusCode::UNAUTHORIZED,
            "ExpiredAuthenticationToken",
            &message,
        );
    }
    {
        let mut state = lock(state);
        if state.challenges_left > 0 {
            state.challenges_left -= 1;
            let claims = base64::engine::general_purpose::STANDARD.encode(CAE_CLAIMS);
            return with_challenge(
                arm_error(
                    StatusCode::UNAUTHORIZED,
                    "InvalidAuthenticationToken",
                    "The access token is not valid anymore: continuous access evaluation requires a new token with additional claims.",
                ),
                &format!(
                    r#"Bearer authorization_uri="https://login.windows.net/", error="insufficient_claims", claims="{claims}""#
                ),
            );
        }
    }
    if request.method() != Method::GET {
        return arm_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "The double serves GET requests only.",
        );
    }
    let query: Vec<(String, String)> =
        form_urlencoded::parse(request.uri().query().unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let Some(api_version) = param("api-version") else {
        return arm_error(
            StatusCode::BAD_REQUEST,
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        );
    };
    let skip: usize = param("$skiptoken")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let tenant = claims["tid"].as_str().unwrap_or_default();
    let issuer = claims["iss"].as_str().unwrap_or_default();
    let segments: Vec<&str> = request.uri().path().trim_matches('/').split('/').collect();
    let state = lock(state);
    match segments.as_slice() {
        ["subscriptions"] => {
            // ARM lists the subscriptions of the token's tenant.
            let items: Vec<Value> = state
                .subscriptions
                .iter()
                .filter(|s| s.tenant == tenant)
                .map(subscription_json)
                .collect();
            page(
                base,
                "/subscriptions",
                api_version,
                items,
                skip,
                state.page_size,
            )
        }
        ["subscriptions", id, group_segment]
            if group_segment.eq_ignore_ascii_case("resourcegroups") =>
        {
            let Some(subscription) = state
                .subscriptions
                .iter()
                .find(|s| s.id.eq_ignore_ascii_case(id))
            else {
                return arm_error(
                    StatusCode::NOT_FOUND,
                    "SubscriptionNotFound",
                    &format!("The subscription '{id}' could not be found."),
                );
            };
            if subscription.tenant != tenant {
                let required = &subscription.tenant;
                let message = format!(
                    "The access token is from the wrong issuer '{issuer}'. It must match the tenant \
                     'https://sts.windows.net/{required}/' associated with this subscription. Please \
                     use the authority (URL) 'https://login.windows.net/{required}' to get the token. \
                     Note, if the subscription is transferred to another tenant there is no impact to \
                     the services, but information about new tenant could take time to propagate (up \
                     to an hour). If you just transferred your subscription and see this error \
                     message, please try back later."
                );
                return with_challenge(
                    arm_error(
                        StatusCode::UNAUTHORIZED,
                        "InvalidAuthenticationTokenTenant",
                        &message,
                    ),
                    &format!(
                        r#"Bearer authorization_uri="https://login.windows.net/{required}", error="invalid_token", error_description="The access token is from the wrong issuer.""#
                    ),
                );
            }
            let items: Vec<Value> = subscription
                .groups
                .iter()
                .map(|(name, location)| {
                    json!({
                        "id": format!("/subscriptions/{}/resourceGroups/{name}", subscription.id),
                        "name": name,
                        "type": "Microsoft.Resources/resourceGroups",
                        "location": location,
                        "properties": {"provisioningState": "Succeeded"},
                    })
                })
                .collect();
            let path = format!("/subscriptions/{}/resourcegroups", subscription.id);
            page(base, &path, api_version, items, skip, state.page_size)
        }
        _ => arm_error(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("The double does not serve {}.", request.uri().path()),
        ),
    }
}

/// The subscription as `GET /subscriptions?api-version=2022-12-01` lists it.
fn subscription_json(s: &ArmSubscription) -> Value {
    json!({
        "id": format!("/subscriptions/{}", s.id),
        "authorizationSource": "RoleBased",
        "managedByTenants": [],
        "subscriptionId": s.id,
        "tenantId": s.tenant,
        "displayName": s.display_name,
        "state": s.state,
        "subscriptionPolicies": {
            "locationPlacementId": "Public_2014-09-01",
            "quotaId": "PayAsYouGo_2014-09-01",
            "spendingLimit": "Off",
        },
    })
}

/// One page of `items` from `skip`, with a `nextLink` when more remain.
fn page(
    base: &str,
    path: &str,
    api_version: &str,
    items: Vec<Value>,
    skip: usize,
    page_size: usize,
) -> Response<Full<Bytes>> {
    let total = items.len();
    let value: Vec<Value> = items.into_iter().skip(skip).take(page_size).collect();
    let mut body = json!({"value": value, "count": {"type": "Total", "value": total}});
    if skip + page_size < total {
        body["nextLink"] = json!(format!(
            "{base}{path}?api-version={api_version}&%24skiptoken={}",
            skip + page_size
        ));
    }
    json_response(StatusCode::OK, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arm_times_look_like_arms() {
        assert_eq!(arm_time(1_732_594_500), "11/26/2024 4:15:00 AM");
        assert_eq!(arm_time(1_732_637_700), "11/26/2024 4:15:00 PM");
        assert_eq!(arm_time(1_732_579_200), "11/26/2024 12:00:00 AM");
    }
}
