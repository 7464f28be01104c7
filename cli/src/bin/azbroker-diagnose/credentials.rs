//! Each credential of the chain, asked alone for a token for the scope: which
//! would serve, which are not set up here and why, which are set up but fail
//! (with the Entra ID error in plain words). Tokens are never shown: only
//! their expiry and the identity they belong to.
//!
//! Each check is its own connection whose chain holds just that credential, so
//! the daemon answers with that credential's own reason. Interactive
//! credentials are never started: a diagnosis must not open a browser.

use azbroker_cli::advice;
use azbroker_client::{Client, ClientError};
use azbroker_proto::{
    ChainSpec, CredentialKind, CredentialState, ErrorKind, GetToken, StatusReport, TokenReply,
};
use serde::Serialize;

use super::daemon::Daemon;
use super::env::Environment;
use super::{Level, Problem};

#[derive(Serialize)]
pub struct CredentialsReport {
    pub status: Level,
    pub scope: String,
    /// The credential that would serve a token now (the first that works).
    pub serving: Option<String>,
    pub results: Vec<CredentialResult>,
}

#[derive(Serialize)]
pub struct CredentialResult {
    pub credential: String,
    pub status: Level,
    /// `token`, `unavailable`, `failed`, `timeout`, `rejected` (the daemon refused the
    /// request itself, e.g. a malformed scope), `not_tried` or `not_checked`.
    pub outcome: &'static str,
    pub reason: Option<String>,
    pub advice: Option<AdviceReport>,
    pub token: Option<TokenInfo>,
    /// The daemon's last error for this credential when a cached token still
    /// serves (a background refresh failing before the token expires).
    pub background_error: Option<String>,
}

#[derive(Serialize)]
pub struct AdviceReport {
    pub kind: &'static str,
    pub summary: String,
    pub remedy: String,
}

#[derive(Serialize)]
pub struct TokenInfo {
    pub expires_on: i64,
    pub expires: String,
    pub cached: bool,
    pub identity: Option<Identity>,
}

/// Who a token belongs to, from its (unverified) claims.
#[derive(Serialize, Clone)]
pub struct Identity {
    /// `user` or `application`.
    pub kind: &'static str,
    /// User principal name, for users.
    pub name: Option<String>,
    pub object_id: Option<String>,
    pub app_id: Option<String>,
    pub tenant_id: Option<String>,
}

/// One credential's attempt, before it is judged against the others.
pub struct Tried {
    kind: CredentialKind,
    outcome: Outcome,
}

enum Outcome {
    Token(TokenReply),
    Error(ClientError),
    /// A credential that would need a person (browser, device code): decided later.
    Interactive,
    NotChecked(String),
}

fn is_interactive(kind: CredentialKind) -> bool {
    matches!(
        kind,
        CredentialKind::InteractiveBrowser | CredentialKind::DeviceCode
    )
}

/// Asks every non-interactive credential of the chain, concurrently.
pub async fn check(env: &Environment, daemon: &Daemon, scope: &str) -> Vec<Tried> {
    let Some(chain) = &env.chain else {
        return Vec::new();
    };
    let mut tasks = tokio::task::JoinSet::new();
    let mut tried: Vec<Option<Tried>> = Vec::new();
    for (index, spec) in chain.credentials.iter().enumerate() {
        let kind = spec.kind();
        let alone = ChainSpec {
            authority_host: chain.authority_host.clone(),
            credentials: vec![spec.clone()],
            selected_by: format!("azbroker diagnose: {} alone", kind.name()),
            // A check never opens a browser.
            interactive: false,
        };
        let outcome = match daemon.client_with(alone) {
            None => Outcome::NotChecked("not checked: azbrokerd is not reachable".into()),
            Some(_) if is_interactive(kind) => Outcome::Interactive,
            Some(client) => {
                let scope = scope.to_string();
                tasks.spawn(async move { (index, ask(client, scope).await) });
                tried.push(None);
                continue;
            }
        };
        tried.push(Some(Tried { kind, outcome }));
    }
    while let Some(Ok((index, outcome))) = tasks.join_next().await {
        tried[index] = Some(Tried {
            kind: chain.credentials[index].kind(),
            outcome,
        });
    }
    tried
        .into_iter()
        .zip(&chain.credentials)
        .map(|(tried, spec)| {
            tried.unwrap_or(Tried {
                kind: spec.kind(),
                outcome: Outcome::NotChecked("the check stopped unexpectedly".into()),
            })
        })
        .collect()
}

async fn ask(client: Client, scope: String) -> Outcome {
    let request = GetToken {
        scopes: vec![scope],
        tenant: None,
        claims: None,
        min_validity_secs: 0,
    };
    match client.get_token(request).await {
        Ok(token) => Outcome::Token(token),
        Err(e) => Outcome::Error(e),
    }
}

/// Judges the attempts: the first token serves; failures matter more when nothing serves.
pub fn finish(
    env: &Environment,
    daemon: &Daemon,
    tried: Vec<Tried>,
    implemented: Option<&[CredentialKind]>,
    status: Option<&StatusReport>,
    scope: &str,
) -> CredentialsReport {
    let serving = tried
        .iter()
        .find(|t| matches!(t.outcome, Outcome::Token(_)))
        .map(|t| t.kind.name().to_string());
    let failure_level = if serving.is_some() {
        Level::Warn
    } else {
        Level::Fail
    };
    let results: Vec<CredentialResult> = tried
        .into_iter()
        .map(|t| judge(t, implemented, status, failure_level))
        .collect();
    let interactive_left = results.iter().any(|r| r.outcome == "not_tried");
    let status = if env.chain.is_none() || !daemon.reachable() {
        Level::Fail
    } else if serving.is_some() {
        results
            .iter()
            .map(|r| r.status)
            .filter(|l| *l == Level::Warn)
            .max()
            .unwrap_or(Level::Ok)
    } else if interactive_left {
        Level::Warn
    } else {
        Level::Fail
    };
    CredentialsReport {
        status,
        scope: scope.to_string(),
        serving,
        results,
    }
}

fn judge(
    tried: Tried,
    implemented: Option<&[CredentialKind]>,
    status: Option<&StatusReport>,
    failure_level: Level,
) -> CredentialResult {
    let kind = tried.kind;
    let mut result = CredentialResult {
        credential: kind.name().to_string(),
        status: Level::Info,
        outcome: "unavailable",
        reason: None,
        advice: None,
        token: None,
        background_error: None,
    };
    match tried.outcome {
        Outcome::Token(token) => {
            result.status = Level::Ok;
            result.outcome = "token";
            result.token = Some(TokenInfo {
                expires_on: token.expires_on,
                expires: rfc3339(token.expires_on),
                cached: token.cached,
                identity: identity_of(token.access_token.expose()),
            });
        }
        Outcome::Error(error) => {
            let (unavailable, timed_out, reason) = match &error {
                ClientError::Daemon(wire) => match wire.reasons.first() {
                    Some(reason) => (
                        reason.unavailable,
                        wire.kind == ErrorKind::Timeout,
                        reason.reason.clone(),
                    ),
                    None => (false, wire.kind == ErrorKind::Timeout, wire.message.clone()),
                },
                ClientError::Timeout(_) => (false, true, error.to_string()),
                other => (false, false, other.to_string()),
            };
            result.advice = advice::explain(&reason, Some(kind)).map(|a| AdviceReport {
                kind: a.cause.as_str(),
                summary: a.summary,
                remedy: a.remedy,
            });
            let rejected =
                matches!(&error, ClientError::Daemon(w) if w.kind == ErrorKind::InvalidRequest);
            result.outcome = if rejected {
                "rejected"
            } else if unavailable {
                "unavailable"
            } else if timed_out {
                "timeout"
            } else {
                "failed"
            };
            // An Entra error makes even an "unavailable" credential worth
            // fixing; a machine without a managed identity is nothing to fix.
            let no_identity_here = result
                .advice
                .as_ref()
                .is_some_and(|a| a.kind == advice::Cause::NoManagedIdentity.as_str());
            result.status = if no_identity_here || unavailable && result.advice.is_none() {
                Level::Info
            } else {
                failure_level
            };
            result.reason = Some(reason);
        }
        Outcome::Interactive => match implemented {
            Some(kinds) if !kinds.contains(&kind) => {
                result.reason = Some(format!(
                    "{} is not implemented in this azbrokerd",
                    kind.name()
                ));
            }
            _ => {
                result.outcome = "not_tried";
                result.reason = Some(
                    "not tried: it would open a browser; the chain falls back to it when nothing before it works".into(),
                );
            }
        },
        Outcome::NotChecked(why) => {
            result.outcome = "not_checked";
            result.reason = Some(why);
        }
    }
    // A cached token hides a failing refresh until it expires. Status names
    // credentials by kind, so this is only said when one identity of the kind
    // exists (two service principals would be ambiguous).
    let cached = result.token.as_ref().is_some_and(|t| t.cached);
    if let (true, Some(status)) = (cached, status) {
        let mut same_kind = status
            .credentials
            .iter()
            .filter(|c| c.credential == kind.name());
        if let (Some(only), None) = (same_kind.next(), same_kind.next()) {
            if only.state == CredentialState::Failing {
                result.background_error = only.last_error.clone();
                result.status = Level::Warn;
            }
        }
    }
    result
}

/// The identity claims of a JWT access token. The signature is not checked:
/// this only labels which account is in use.
fn identity_of(token: &str) -> Option<Identity> {
    let claims = azbroker_proto::jwt::unverified_claims(token)?;
    let text = |name: &str| azbroker_proto::jwt::text_claim(&claims, name);
    let name = text("upn")
        .or_else(|| text("unique_name"))
        .or_else(|| text("preferred_username"));
    let app_id = text("appid").or_else(|| text("azp"));
    let is_app = text("idtyp").as_deref() == Some("app") || name.is_none();
    Some(Identity {
        kind: if is_app { "application" } else { "user" },
        name,
        object_id: text("oid"),
        app_id,
        tenant_id: text("tid"),
    })
}

impl Identity {
    /// One line, e.g. `user alice@contoso.com (object 0e1d..., tenant a1b2...)`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(id) = &self.object_id {
            parts.push(format!("object id {id}"));
        }
        if self.kind == "application" {
            if let Some(app) = &self.app_id {
                parts.push(format!("app id {app}"));
            }
        }
        if let Some(tenant) = &self.tenant_id {
            parts.push(format!("tenant {tenant}"));
        }
        let who = match (&self.name, self.kind) {
            (Some(name), _) => format!("{} {name}", self.kind),
            (None, kind) => kind.to_string(),
        };
        if parts.is_empty() {
            who
        } else {
            format!("{who} ({})", parts.join(", "))
        }
    }
}

/// The identity that serves tokens now, if any.
pub fn serving_identity(report: &CredentialsReport) -> Option<(&str, &Identity)> {
    report.results.iter().find_map(|r| {
        let identity = r.token.as_ref()?.identity.as_ref()?;
        Some((r.credential.as_str(), identity))
    })
}

pub fn problems(report: &CredentialsReport, out: &mut Vec<Problem>) {
    if let Some(rejected) = report.results.iter().find(|r| r.outcome == "rejected") {
        // Every credential gets the same answer: say it once, about the request.
        out.push(Problem::fail(
            "credentials",
            "request",
            format!(
                "azbrokerd rejected the token request: {}.",
                rejected.reason.as_deref().unwrap_or("no reason given")
            ),
            "Check --scope: a scope looks like https://management.azure.com/.default.",
        ));
        return;
    }
    for result in &report.results {
        if let (Some(error), Some(token)) = (&result.background_error, &result.token) {
            out.push(Problem::warn(
                "credentials",
                result.credential.clone(),
                format!(
                    "A cached token serves until {}, but the daemon's last attempt to refresh it failed: {error}.",
                    token.expires
                ),
                advice::explain(error, None).map_or_else(
                    || "Fix the cause before the cached token expires; `azbroker status` shows the credential's state.".to_string(),
                    |advice| advice.remedy,
                ),
            ));
            continue;
        }
        if !matches!(result.status, Level::Warn | Level::Fail) {
            continue;
        }
        let reason = result.reason.clone().unwrap_or_default();
        let (summary, remedy) = match &result.advice {
            // The full reason is in the credential's line above.
            Some(advice) => (
                advice.summary.trim_end_matches('.').to_string(),
                advice.remedy.clone(),
            ),
            None => (
                format!("{}: {reason}", result.outcome),
                "See the credential's reason; `azbroker status` keeps its last error.".into(),
            ),
        };
        let summary = if report.serving.is_some() {
            format!(
                "{summary}. The chain moves on to {}, but this credential is set up and failing.",
                report.serving.as_deref().unwrap_or_default()
            )
        } else {
            format!("{summary}.")
        };
        out.push(Problem {
            level: result.status,
            area: "credentials",
            subject: result.credential.clone(),
            summary,
            remedy,
        });
    }
    let checked = report.results.iter().any(|r| r.outcome != "not_checked");
    if report.serving.is_none() && checked {
        let interactive = report.results.iter().any(|r| r.outcome == "not_tried");
        let (level, summary) = if interactive {
            (
                Level::Warn,
                format!(
                    "No credential produces a token for {} without a browser sign-in.",
                    report.scope
                ),
            )
        } else {
            (
                Level::Fail,
                format!(
                    "No credential in the chain produces a token for {}.",
                    report.scope
                ),
            )
        };
        out.push(Problem {
            level,
            area: "credentials",
            subject: "credential chain".into(),
            summary,
            remedy: "Sign in with a developer tool (`az login`, `azd auth login`, `Connect-AzAccount`), or set a service principal (AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_CLIENT_SECRET); each credential's reason is listed above.".into(),
        });
    }
}

/// Epoch seconds as RFC 3339, the form people read.
fn rfc3339(epoch: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(epoch)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    fn jwt(claims: serde_json::Value) -> String {
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!(
            "{}.{}.c2ln",
            engine.encode(br#"{"alg":"RS256","typ":"JWT"}"#),
            engine.encode(claims.to_string())
        )
    }

    fn status_with(errors: &[&str]) -> StatusReport {
        StatusReport {
            daemon_pid: 1,
            daemon_version: "0.1.0".into(),
            protocol_version: 1,
            uptime_secs: 1,
            socket_path: "/s".into(),
            store: "none".into(),
            credentials: errors
                .iter()
                .enumerate()
                .map(|(i, error)| azbroker_proto::CredentialStatus {
                    credential: "AzureCliCredential".into(),
                    identity: format!("id{i}"),
                    state: CredentialState::Failing,
                    acquisitions: 1,
                    last_success: None,
                    last_error: Some(error.to_string()),
                    profile: None,
                })
                .collect(),
            cache: Vec::new(),
            counters: Default::default(),
            names: Vec::new(),
        }
    }

    fn cached_token() -> Tried {
        Tried {
            kind: CredentialKind::AzureCli,
            outcome: Outcome::Token(TokenReply {
                access_token: azbroker_proto::Secret::new("x.e30.y"),
                token_type: "Bearer".into(),
                expires_on: 1_900_000_000,
                refresh_on: 1_899_999_000,
                tenant: None,
                credential: "AzureCliCredential".into(),
                cached: true,
                stale: false,
            }),
        }
    }

    #[test]
    fn a_failing_refresh_behind_a_cached_token_is_a_warning() {
        let status = status_with(&["ERROR: AADSTS70043: The refresh token has expired"]);
        let result = judge(cached_token(), None, Some(&status), Level::Fail);
        assert_eq!(result.status, Level::Warn);
        assert!(result.background_error.unwrap().contains("AADSTS70043"));
        // Two identities of the kind: which one failed is unknown, so nothing is said.
        let status = status_with(&["one", "two"]);
        let result = judge(cached_token(), None, Some(&status), Level::Fail);
        assert_eq!(result.status, Level::Ok);
        assert!(result.background_error.is_none());
    }

    #[test]
    fn users_and_applications_are_told_apart() {
        let user = identity_of(&jwt(serde_json::json!({
            "upn": "alice@contoso.example", "oid": "o-1", "tid": "t-1", "appid": "04b07795"
        })))
        .unwrap();
        assert_eq!(user.kind, "user");
        assert_eq!(
            user.describe(),
            "user alice@contoso.example (object id o-1, tenant t-1)"
        );
        let app = identity_of(&jwt(serde_json::json!({
            "appid": "a-1", "oid": "o-2", "tid": "t-1", "idtyp": "app"
        })))
        .unwrap();
        assert_eq!(app.kind, "application");
        assert_eq!(
            app.describe(),
            "application (object id o-2, app id a-1, tenant t-1)"
        );
        assert!(identity_of("not-a-jwt").is_none());
    }
}
