//! AzurePowerShell: runs `pwsh -NoProfile -NonInteractive -Command <script>`,
//! where the script calls `Get-AzAccessToken` for one resource (and tenant)
//! and prints one JSON line `{"Token":"...","ExpiresOn":"...","TenantId":"..."}`.
//!
//! `azure_identity` has no PowerShell credential, so this is our own. Since
//! Az.Accounts 5 the token is a SecureString: the script converts it (and asks
//! older versions that know `-AsSecureString` for one too, which silences
//! their deprecation warning). pwsh runs directly, not through a shell, in
//! its own process group, with bounded output and a 10 s limit; a timeout
//! kills the whole group. Resource and tenant come from the broker's narrow
//! alphabets (no quote can occur) and sit inside single-quoted strings.

use std::ffi::OsStr;
use std::time::Duration;

use azbroker_proto::{Secret, ToolSpec};
use azure_identity::Executor;
use base64::Engine as _;
use serde::Deserialize;

use super::process::BoundedExecutor;
use super::{SourceError, SourceRequest, Token, TokenSource};
use azbroker_proto::resource;

/// The Azure MCP Server's limit for PowerShell (`docs/spec/authentication.md`, "Each credential").
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// Longest piece of pwsh's stderr kept in an error.
const MAX_MESSAGE: usize = 600;

/// Why a request for several scopes is not for `pwsh` (see [`TokenSource::unsupported`]).
const ONE_SCOPE: &str = "AzurePowerShellCredential takes exactly one scope per token (Get-AzAccessToken takes a resource); ask for each scope separately";

pub struct AzurePowerShellSource {
    /// `pwsh` as found on the requester's `PATH`, and how to run it as that
    /// requester would; `None` when it was not there.
    program: Option<(String, BoundedExecutor)>,
    timeout: Duration,
}

impl AzurePowerShellSource {
    pub fn new(spec: &ToolSpec, timeout: Duration) -> Self {
        AzurePowerShellSource {
            program: spec
                .executable
                .clone()
                .map(|exe| (exe, BoundedExecutor::new(spec))),
            timeout,
        }
    }
}

#[async_trait::async_trait]
impl TokenSource for AzurePowerShellSource {
    fn unsupported(&self, request: &SourceRequest) -> Option<String> {
        (request.scopes.len() != 1).then(|| ONE_SCOPE.into())
    }

    async fn acquire(&self, request: &SourceRequest) -> Result<Token, SourceError> {
        let [scope] = request.scopes.as_slice() else {
            return Err(SourceError::failed(ONE_SCOPE));
        };
        let resource = resource::scope_to_resource(&resource::to_default_scope(scope)).to_string();
        if let Some(claims) = &request.claims {
            let mut command = format!(
                "Connect-AzAccount -ClaimsChallenge {}",
                base64::engine::general_purpose::STANDARD.encode(claims)
            );
            if let Some(tenant) = &request.tenant {
                command.push_str(&format!(" -Tenant {tenant}"));
            }
            return Err(SourceError::failed(format!(
                "Azure PowerShell cannot satisfy a claims challenge by itself; run: {command}"
            )));
        }
        let Some((program, executor)) = &self.program else {
            return Err(SourceError::Unavailable(not_installed()));
        };
        let script = script(&resource, request.tenant.as_deref())?;
        let args = ["-NoProfile", "-NonInteractive", "-Command", script.as_str()].map(OsStr::new);
        let run = executor.run(OsStr::new(program), &args);
        let output = match tokio::time::timeout(self.timeout, run).await {
            // Dropping the run kills pwsh's process group.
            Err(_) => {
                return Err(SourceError::Timeout(format!(
                    "pwsh Get-AzAccessToken did not answer within {} s",
                    self.timeout.as_secs()
                )))
            }
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(SourceError::Unavailable(not_installed()))
            }
            Ok(Err(e)) => return Err(SourceError::failed(format!("running pwsh: {e}"))),
            Ok(Ok(output)) => output,
        };
        if !output.status.success() {
            return Err(classify(
                output.status.code(),
                &String::from_utf8_lossy(&output.stderr),
            ));
        }
        parse_output(&output.stdout, request.tenant.as_deref())
    }
}

fn not_installed() -> String {
    "PowerShell (pwsh) not found on PATH (the PATH of the process that asked for the token); install PowerShell 7 and the Az.Accounts module there".into()
}

/// The script pwsh runs. Refuses values that could leave their quotes
/// (the broker's validation already excludes them).
fn script(resource: &str, tenant: Option<&str>) -> Result<String, SourceError> {
    let quotable = |s: &str| {
        s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:/+%=~".contains(c))
    };
    if !quotable(resource) || !tenant.is_none_or(quotable) {
        return Err(SourceError::failed(
            "resource or tenant has characters that cannot be passed to PowerShell",
        ));
    }
    Ok(SCRIPT
        .replace("@RESOURCE@", resource)
        .replace("@TENANT@", tenant.unwrap_or("")))
}

const SCRIPT: &str = r#"$ErrorActionPreference = 'Stop'
$WarningPreference = 'SilentlyContinue'
$ProgressPreference = 'SilentlyContinue'
if ($PSStyle) { $PSStyle.OutputRendering = 'PlainText' }
Import-Module Az.Accounts -MinimumVersion 2.2.0
$resource = '@RESOURCE@'
$tenant = '@TENANT@'
$params = @{ ResourceUrl = $resource }
if ($tenant) { $params['TenantId'] = $tenant }
if ((Get-Command Get-AzAccessToken).Parameters.ContainsKey('AsSecureString')) { $params['AsSecureString'] = $true }
$result = Get-AzAccessToken @params
$token = $result.Token
if ($token -is [System.Security.SecureString]) { $token = ConvertFrom-SecureString -SecureString $token -AsPlainText }
[ordered]@{ Token = $token; ExpiresOn = $result.ExpiresOn.ToString('o'); TenantId = $result.TenantId } | ConvertTo-Json -Compress
"#;

/// pwsh failed: decide from its stderr whether PowerShell is merely not set up
/// here. stdout is never quoted (it may hold a token).
fn classify(code: Option<i32>, stderr: &str) -> SourceError {
    let text = one_line(stderr);
    if code == Some(127) {
        return SourceError::Unavailable(not_installed());
    }
    if text.contains("Connect-AzAccount") && !text.contains("AADSTS") {
        return SourceError::Unavailable(format!(
            "Azure PowerShell is not logged in: run 'Connect-AzAccount' ({text})"
        ));
    }
    if text.contains("Az.Accounts") && text.contains("was not loaded") {
        return SourceError::Unavailable(format!(
            "the Az.Accounts module (2.2.0 or later) is not installed: run 'Install-Module Az.Accounts' in pwsh ({text})"
        ));
    }
    SourceError::failed(if text.is_empty() {
        format!("pwsh Get-AzAccessToken failed (exit code {code:?}) without a message")
    } else {
        text
    })
}

/// stderr as one bounded line, without terminal escape sequences.
fn one_line(stderr: &str) -> String {
    let mut out = String::new();
    let mut chars = stderr.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI sequence: ESC [ ... final byte in @..~
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(if c.is_control() { ' ' } else { c });
    }
    let words: Vec<&str> = out.split_whitespace().collect();
    words.join(" ").chars().take(MAX_MESSAGE).collect()
}

#[derive(Deserialize)]
struct ScriptOutput {
    #[serde(rename = "Token")]
    token: serde_json::Value,
    #[serde(rename = "ExpiresOn")]
    expires_on: serde_json::Value,
    #[serde(rename = "TenantId")]
    tenant_id: Option<String>,
}

fn parse_output(stdout: &[u8], requested_tenant: Option<&str>) -> Result<Token, SourceError> {
    let bad = |why: &str| {
        SourceError::failed(format!(
            "pwsh Get-AzAccessToken gave an unusable answer: {why}"
        ))
    };
    let text = String::from_utf8_lossy(stdout);
    // The JSON line is the last one; anything before it (a warning a module
    // printed anyway) is ignored.
    let line = text
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('{'))
        .ok_or_else(|| bad("no JSON line on stdout"))?;
    let output: ScriptOutput =
        serde_json::from_str(line).map_err(|_| bad("the JSON line is not {Token, ExpiresOn}"))?;
    let token = match output.token {
        serde_json::Value::String(token) if !token.is_empty() => Secret::new(token),
        serde_json::Value::String(_) => return Err(bad("empty Token")),
        _ => return Err(bad("Token is not a string (an unconverted SecureString?)")),
    };
    let expires_on = match &output.expires_on {
        serde_json::Value::Number(n) => n.as_i64(),
        serde_json::Value::String(s) => {
            time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                .ok()
                .map(|t| t.unix_timestamp())
        }
        _ => None,
    }
    .ok_or_else(|| bad("ExpiresOn is not a date"))?;
    let known = output
        .tenant_id
        .filter(|t| !t.is_empty())
        .or_else(|| requested_tenant.map(str::to_string));
    Ok(Token {
        tenant: super::token_tenant::known_or_claimed(known.as_deref(), token.expose()),
        access_token: token,
        expires_on,
        refresh_in: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_carries_resource_and_tenant_in_quotes() {
        let text = script(
            "https://management.azure.com",
            Some("contoso.onmicrosoft.com"),
        )
        .unwrap();
        assert!(text.contains("$resource = 'https://management.azure.com'"));
        assert!(text.contains("$tenant = 'contoso.onmicrosoft.com'"));
        assert!(text.contains("ConvertFrom-SecureString"));
        assert!(script("https://x'; rm -rf /'", None).is_err());
        assert!(script("https://x", Some("a'b")).is_err());
    }

    #[test]
    fn parses_the_json_line() {
        let out = b"WARNING: something\n{\"Token\":\"eyJ.a.b\",\"ExpiresOn\":\"2025-01-01T12:00:00.0000000+00:00\",\"TenantId\":\"t1\"}\n";
        let token = parse_output(out, None).unwrap();
        assert_eq!(token.access_token.expose(), "eyJ.a.b");
        assert_eq!(token.expires_on, 1735732800);
        assert_eq!(token.tenant.as_deref(), Some("t1"));
        let epoch = br#"{"Token":"x","ExpiresOn":1735732800}"#;
        assert_eq!(
            parse_output(epoch, Some("t2")).unwrap().tenant.as_deref(),
            Some("t2")
        );
    }

    #[test]
    fn a_token_without_a_known_tenant_is_labelled_with_its_tid() {
        // {"tid":"t3"} in base64url: Az.Accounts versions without TenantId.
        let out = br#"{"Token":"eyJhbGciOiJub25lIn0.eyJ0aWQiOiJ0MyJ9.sig","ExpiresOn":1735732800}"#;
        assert_eq!(
            parse_output(out, None).unwrap().tenant.as_deref(),
            Some("t3")
        );
    }

    #[test]
    fn unusable_answers_never_echo_stdout() {
        for out in [
            &b""[..],
            b"secret-token-value",
            br#"{"Token":{"Length":1234},"ExpiresOn":"2025-01-01T12:00:00+00:00"}"#,
            br#"{"Token":"secret-token-value","ExpiresOn":"tomorrow"}"#,
        ] {
            let err = parse_output(out, None).err().unwrap();
            assert!(!err.message().contains("secret-token-value"), "{err:?}");
        }
        let secure = br#"{"Token":{"Length":1234},"ExpiresOn":"2025-01-01T12:00:00+00:00"}"#;
        assert!(parse_output(secure, None)
            .err()
            .unwrap()
            .message()
            .contains("SecureString"));
    }

    #[test]
    fn classifies_powershell_errors() {
        assert!(matches!(
            classify(Some(1), "\u{1b}[31;1mGet-AzAccessToken: \u{1b}[31;1mRun Connect-AzAccount to login.\u{1b}[0m\n"),
            SourceError::Unavailable(m) if m == "Azure PowerShell is not logged in: run 'Connect-AzAccount' (Get-AzAccessToken: Run Connect-AzAccount to login.)"
        ));
        assert!(matches!(
            classify(Some(1), "Import-Module: The specified module 'Az.Accounts' was not loaded because no valid module file was found in any module directory.\n"),
            SourceError::Unavailable(m) if m.starts_with("the Az.Accounts module")
        ));
        assert!(
            matches!(classify(Some(127), ""), SourceError::Unavailable(m) if m.contains("not found on PATH"))
        );
        assert!(matches!(
            classify(Some(1), "Get-AzAccessToken: AADSTS50076: Due to a configuration change ... Connect-AzAccount"),
            SourceError::Failed { .. }
        ));
    }
}
