//! Tool results in the Azure MCP Server's shape.
//!
//! Every tool answers with one text block holding
//! `{"status": <HTTP-like code>, "message": "...", "results": {...}, "duration": <ms>}`.
//! A failure is a tool result flagged `isError` (the model reads it and can
//! act on the remedy), never a protocol error, and its `results` is
//! `{"message": <the underlying cause>, "type": <kind of failure>}`. The kinds
//! are named after the exceptions the Azure MCP Server reports for the same
//! failure, so a model that knows one server reads the other.

use std::time::Duration;

use azbroker_client::ClientError;
use azbroker_netcheck::advice::{self, Process, RUN_DIAGNOSE};
use azbroker_proto::{ErrorKind, WireError};
use rmcp::model::{CallToolResult, ContentBlock};
use serde::Serialize;
use serde_json::{json, Value};

/// Where the credential chain and its switches are documented.
const AUTH_GUIDE: &str = "https://aka.ms/azmcp/auth";

/// Why a tool call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolError {
    /// HTTP-like status: 400 bad arguments, 401 authentication, 404, 503, 504, ...
    pub status: u16,
    /// What happened and what to do about it.
    pub message: String,
    /// The underlying cause (`results.message`).
    pub detail: String,
    /// Kind of failure (`results.type`).
    pub kind: &'static str,
}

impl ToolError {
    fn new(status: u16, kind: &'static str, message: String, detail: String) -> ToolError {
        ToolError {
            status,
            message,
            detail,
            kind,
        }
    }

    /// The caller's arguments are wrong.
    pub fn invalid_argument(message: impl Into<String>) -> ToolError {
        let message = message.into();
        ToolError::new(400, "ArgumentException", message.clone(), message)
    }

    /// The broker could not produce a token, or could not be reached.
    pub fn from_client(error: ClientError) -> ToolError {
        match error {
            ClientError::Daemon(wire) => {
                let detail = wire.to_string();
                match wire.kind {
                    ErrorKind::CredentialUnavailable => ToolError::new(
                        401,
                        "CredentialUnavailableException",
                        format!(
                            "Azure credentials not found or unavailable. Please run 'az login' to \
                             authenticate, then try again. For the complete list of supported \
                             credentials, see: {AUTH_GUIDE}. Details: {detail}{}",
                            network_advice(&wire)
                        ),
                        detail,
                    ),
                    ErrorKind::AuthenticationFailed => ToolError::new(
                        401,
                        "AuthenticationFailedException",
                        format!(
                            "Authentication failed. Please run 'az login' to sign in to Azure. \
                             Details: {detail}{}",
                            network_advice(&wire)
                        ),
                        detail,
                    ),
                    ErrorKind::Timeout => ToolError::timeout(detail),
                    ErrorKind::InvalidRequest => {
                        ToolError::new(400, "ArgumentException", detail.clone(), detail)
                    }
                    ErrorKind::Refused | ErrorKind::Internal => ToolError::new(
                        503,
                        "BrokerException",
                        format!(
                            "The token broker (azbrokerd) could not serve the request: {detail}"
                        ),
                        detail,
                    ),
                }
            }
            ClientError::Connect(m) | ClientError::Protocol(m) => ToolError::new(
                503,
                "BrokerUnavailableException",
                format!(
                    "Cannot reach the token broker (azbrokerd): {m}. Check that azbrokerd is \
                     installed beside azbroker-mcp or on PATH, or start it with 'azbrokerd'"
                ),
                m,
            ),
            ClientError::Untrusted(m) => ToolError::new(
                503,
                "BrokerUntrustedException",
                format!("Refused to use the token broker's socket: {m}"),
                m,
            ),
            ClientError::Timeout(m) => ToolError::timeout(m),
            ClientError::Config(m) => ToolError::new(
                422,
                "InvalidOperationException",
                format!(
                    "The MCP server's environment selects no usable credential chain: {m}. Fix \
                     it in the MCP client's configuration of azbroker-mcp (its env) and restart \
                     the server. See {AUTH_GUIDE}"
                ),
                m,
            ),
        }
    }

    /// The MCP server's own configuration (an environment variable) is wrong.
    pub fn configuration(detail: String) -> ToolError {
        ToolError::new(
            422,
            "InvalidOperationException",
            format!(
                "azbroker-mcp is misconfigured: {detail}. Fix it in the MCP client's \
                 configuration of azbroker-mcp (its env) and restart the server"
            ),
            detail,
        )
    }

    pub fn timeout(detail: String) -> ToolError {
        ToolError::new(
            504,
            "TimeoutException",
            format!("The operation timed out. Details: {detail}"),
            detail,
        )
    }

    /// The service could not be reached (DNS, TCP, TLS, proxy): what kind of
    /// problem it is and its remedy, from the shared network advice.
    pub fn network(detail: String) -> ToolError {
        let advice = match advice::explain(&detail, Process::McpServer) {
            Some(advice) => format!(" {} {} {RUN_DIAGNOSE}", advice.summary, advice.remedy),
            None => format!(" {RUN_DIAGNOSE}"),
        };
        ToolError::new(
            503,
            "HttpRequestException",
            format!(
                "Service unavailable or network connectivity issues.{advice} Details: {detail}"
            ),
            detail,
        )
    }

    /// The service answered with an error status.
    pub fn request_failed(status: u16, code: &str, service_message: &str) -> ToolError {
        let detail = if code.is_empty() {
            format!("{service_message} Status: {status}")
        } else {
            format!("{service_message} Status: {status} ({code})")
        };
        ToolError::new(status, "RequestFailedException", detail.clone(), detail)
    }

    /// Resource Manager refused a token issued by another tenant than the
    /// subscription's (`InvalidAuthenticationTokenTenant`).
    pub fn tenant_mismatch(required_tenant: Option<&str>, service_message: &str) -> ToolError {
        let tenant = required_tenant.unwrap_or("<tenant_id>");
        let message = format!(
            "Authentication failed due to a tenant mismatch. Your credential is authenticated to \
             a different Azure tenant than the one required by this subscription{which}. To \
             resolve: 1. Call this tool again with tenant=\"{tenant}\": azbroker then asks your \
             credential for a token in that tenant. 2. Or authenticate to the target tenant \
             with one of the supported credential types: Azure CLI: run 'az login --tenant \
             {tenant}'; Azure PowerShell: run 'Connect-AzAccount -Tenant {tenant}'; Azure \
             Developer CLI: run 'azd auth login --tenant-id {tenant}'; then run 'azbroker stop' \
             so the broker forgets tokens of the previous sign-in. For the complete list of \
             supported credentials, see: {AUTH_GUIDE}",
            which = required_tenant
                .map(|t| format!(" (tenant {t})"))
                .unwrap_or_default(),
        );
        ToolError::new(
            401,
            "RequestFailedException",
            message,
            format!("{service_message} Status: 401 (InvalidAuthenticationTokenTenant)"),
        )
    }

    /// The service answered, but not with anything this server can read.
    pub fn bad_response(detail: String) -> ToolError {
        ToolError::new(
            502,
            "InvalidDataException",
            format!("The service returned a response azbroker-mcp cannot use: {detail}"),
            detail,
        )
    }
}

/// What the shared network advice says about a broker error's reasons (the
/// daemon could not reach Entra ID, say), one remedy per distinct problem,
/// each after a space; empty when no reason is a network failure. A managed
/// identity that is simply absent (no metadata endpoint off Azure) is no
/// network problem and gets no remedy.
fn network_advice(wire: &WireError) -> String {
    let reasons: Vec<(Option<&str>, &str)> = if wire.reasons.is_empty() {
        vec![(None, wire.message.as_str())]
    } else {
        wire.reasons
            .iter()
            .map(|r| (Some(r.credential.as_str()), r.reason.as_str()))
            .collect()
    };
    let mut said: Vec<String> = Vec::new();
    let mut text = String::new();
    for (credential, reason) in reasons {
        let Some(found) = advice::explain(reason, Process::Daemon) else {
            continue;
        };
        if advice::metadata_endpoint_silent(reason, found.problem) || said.contains(&found.summary)
        {
            continue;
        }
        let whose = credential.map(|c| format!(" of {c}")).unwrap_or_default();
        text.push_str(&format!(
            " Network problem{whose}: {} {}",
            found.summary, found.remedy
        ));
        said.push(found.summary);
    }
    if !text.is_empty() {
        text.push(' ');
        text.push_str(RUN_DIAGNOSE);
    }
    text
}

/// The response body, fields in the Azure MCP Server's order.
#[derive(Serialize)]
struct Envelope<'a> {
    status: u16,
    message: &'a str,
    results: &'a Value,
    duration: u64,
}

/// Wraps a tool's outcome in the response envelope.
pub fn tool_result(outcome: Result<Value, ToolError>, elapsed: Duration) -> CallToolResult {
    let duration = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
    let text = |status, message: &str, results: &Value| {
        let envelope = Envelope {
            status,
            message,
            results,
            duration,
        };
        serde_json::to_string(&envelope).expect("the envelope serializes")
    };
    match outcome {
        Ok(results) => {
            CallToolResult::success(vec![ContentBlock::text(text(200, "Success", &results))])
        }
        Err(error) => {
            tracing::info!(
                status = error.status,
                kind = error.kind,
                "tool failed: {}",
                error.message
            );
            let results = json!({"message": error.detail, "type": error.kind});
            CallToolResult::error(vec![ContentBlock::text(text(
                error.status,
                &error.message,
                &results,
            ))])
        }
    }
}

/// rmcp answers arguments that do not fit a tool's input type with a plain
/// text error result starting with this.
const RMCP_ARGUMENT_ERROR_PREFIX: &str = "failed to deserialize parameters:";

/// Puts rmcp's own argument errors into the envelope (400, ArgumentException);
/// every other result passes through unchanged.
pub fn reshape_argument_error(result: CallToolResult, elapsed: Duration) -> CallToolResult {
    if result.is_error != Some(true) {
        return result;
    }
    let argument_error = match result.content.as_slice() {
        [block] => block
            .as_text()
            .and_then(|t| t.text.strip_prefix(RMCP_ARGUMENT_ERROR_PREFIX))
            .map(|rest| format!("Invalid arguments: {}", rest.trim())),
        _ => None,
    };
    match argument_error {
        Some(message) => tool_result(Err(ToolError::invalid_argument(message)), elapsed),
        None => result,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use azbroker_proto::CredentialReason;

    fn text(result: &CallToolResult) -> Value {
        let block = result.content.first().expect("one content block");
        let text = block.as_text().expect("a text block");
        serde_json::from_str(&text.text).unwrap()
    }

    #[test]
    fn success_and_failure_envelopes() {
        let ok = tool_result(Ok(json!({"subscriptions": []})), Duration::from_millis(12));
        assert_eq!(ok.is_error, Some(false));
        assert_eq!(
            ok.content[0].as_text().unwrap().text,
            r#"{"status":200,"message":"Success","results":{"subscriptions":[]},"duration":12}"#
        );
        assert_eq!(
            text(&ok),
            json!({"status": 200, "message": "Success", "results": {"subscriptions": []}, "duration": 12})
        );

        let failed = tool_result(
            Err(ToolError::invalid_argument("account is required")),
            Duration::from_millis(3),
        );
        assert_eq!(failed.is_error, Some(true));
        assert_eq!(
            text(&failed),
            json!({
                "status": 400,
                "message": "account is required",
                "results": {"message": "account is required", "type": "ArgumentException"},
                "duration": 3
            })
        );
    }

    #[test]
    fn broker_errors_map_to_the_azure_mcp_server_contract() {
        let mut wire = WireError::new(
            ErrorKind::CredentialUnavailable,
            "no credential in the chain produced a token",
        );
        wire.reasons.push(CredentialReason {
            credential: "AzureCliCredential".into(),
            unavailable: true,
            reason: "Azure CLI is not logged in: run 'az login'".into(),
        });
        let error = ToolError::from_client(ClientError::Daemon(wire));
        assert_eq!(error.status, 401);
        assert_eq!(error.kind, "CredentialUnavailableException");
        assert!(error.message.starts_with(
            "Azure credentials not found or unavailable. Please run 'az login' to authenticate"
        ));
        assert!(error.message.ends_with(
            "Details: no credential in the chain produced a token; AzureCliCredential: Azure CLI is not logged in: run 'az login'"
        ));

        let failed = ToolError::from_client(ClientError::Daemon(WireError::new(
            ErrorKind::AuthenticationFailed,
            "AADSTS7000215: Invalid client secret provided.",
        )));
        assert_eq!(
            (failed.status, failed.kind),
            (401, "AuthenticationFailedException")
        );
        let slow = ToolError::from_client(ClientError::Daemon(WireError::new(
            ErrorKind::Timeout,
            "az did not answer",
        )));
        assert_eq!((slow.status, slow.kind), (504, "TimeoutException"));
        let gone = ToolError::from_client(ClientError::Connect("no such file".into()));
        assert_eq!(
            (gone.status, gone.kind),
            (503, "BrokerUnavailableException")
        );
        let config = ToolError::from_client(ClientError::Config(
            "AZURE_TOKEN_CREDENTIALS=\"nope\"".into(),
        ));
        assert_eq!(
            (config.status, config.kind),
            (422, "InvalidOperationException")
        );
    }

    #[test]
    fn token_errors_with_a_network_cause_carry_its_remedy() {
        let reason = |credential: &str, reason: &str| CredentialReason {
            credential: credential.into(),
            unavailable: false,
            reason: reason.into(),
        };
        let mut wire = WireError::new(
            ErrorKind::AuthenticationFailed,
            "no credential in the chain could provide a token",
        );
        wire.reasons = vec![
            reason(
                "EnvironmentCredential",
                "cannot reach https://login.contoso.example:8443: error sending request: operation timed out",
            ),
            reason(
                "ManagedIdentityCredential",
                "no managed identity here: the VM metadata endpoint (IMDS) did not answer (tcp connect error: Connection refused (os error 111))",
            ),
            reason("AzureCliCredential", "Azure CLI is not logged in: run 'az login'"),
        ];
        let error = ToolError::from_client(ClientError::Daemon(wire));
        assert_eq!(error.status, 401);
        assert!(
            error.message.contains(
                "Network problem of EnvironmentCredential: Timeout: login.contoso.example:8443 did not answer in time."
            ),
            "{}",
            error.message
        );
        assert!(
            error.message.contains("TCP 8443 (HTTPS)"),
            "{}",
            error.message
        );
        assert!(error.message.contains("azbroker stop"), "{}", error.message);
        assert_eq!(
            error.message.matches("Network problem").count(),
            1,
            "an absent managed identity is no network problem: {}",
            error.message
        );
        assert!(error.message.ends_with(RUN_DIAGNOSE), "{}", error.message);
        // No network cause, no network remedy.
        let plain = ToolError::from_client(ClientError::Daemon(WireError::new(
            ErrorKind::CredentialUnavailable,
            "Azure CLI is not logged in: run 'az login'",
        )));
        assert!(!plain.message.contains(RUN_DIAGNOSE), "{}", plain.message);
    }

    #[test]
    fn reshapes_only_rmcp_argument_errors() {
        let rmcp_error = CallToolResult::error(vec![ContentBlock::text(
            "failed to deserialize parameters: missing field `account`",
        )]);
        let reshaped = reshape_argument_error(rmcp_error, Duration::from_millis(1));
        assert_eq!(reshaped.is_error, Some(true));
        assert_eq!(
            text(&reshaped),
            json!({
                "status": 400,
                "message": "Invalid arguments: missing field `account`",
                "results": {"message": "Invalid arguments: missing field `account`", "type": "ArgumentException"},
                "duration": 1
            })
        );
        let ours = tool_result(
            Err(ToolError::timeout("slow".into())),
            Duration::from_millis(2),
        );
        assert_eq!(reshape_argument_error(ours.clone(), Duration::ZERO), ours);
        let success = CallToolResult::success(vec![ContentBlock::text(
            "failed to deserialize parameters: x",
        )]);
        assert_eq!(
            reshape_argument_error(success.clone(), Duration::ZERO),
            success
        );
    }

    #[test]
    fn network_errors_carry_the_remedy() {
        let refused = ToolError::network(
            "error sending request for url (https://127.0.0.1:10000/acct?comp=list): client error (Connect): tcp connect error: Connection refused (os error 111)".into(),
        );
        assert_eq!(
            (refused.status, refused.kind),
            (503, "HttpRequestException")
        );
        assert!(
            refused.message.starts_with(
                "Service unavailable or network connectivity issues. Connection refused: the connection to 127.0.0.1:10000 was refused or reset."
            ),
            "{}",
            refused.message
        );
        assert!(
            refused.message.contains("TCP 10000 (HTTPS)"),
            "{}",
            refused.message
        );
        assert!(
            refused.message.contains("configuration of azbroker-mcp"),
            "{}",
            refused.message
        );
        assert!(
            refused.message.contains(RUN_DIAGNOSE),
            "{}",
            refused.message
        );
        assert!(
            refused.message.ends_with("(os error 111)"),
            "{}",
            refused.message
        );

        let untrusted = ToolError::network("invalid peer certificate: UnknownIssuer".into());
        assert!(
            untrusted.message.contains("AZBROKER_CA_FILE="),
            "{}",
            untrusted.message
        );
    }

    #[test]
    fn tenant_mismatch_names_the_tenant() {
        let error =
            ToolError::tenant_mismatch(Some("tid-2"), "The access token is from the wrong issuer.");
        assert_eq!(error.status, 401);
        assert!(error
            .message
            .starts_with("Authentication failed due to a tenant mismatch."));
        assert!(error.message.contains("tenant=\"tid-2\""));
        assert!(error.message.contains("az login --tenant tid-2"));
        assert_eq!(
            error.detail,
            "The access token is from the wrong issuer. Status: 401 (InvalidAuthenticationTokenTenant)"
        );
    }
}
