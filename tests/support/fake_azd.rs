//! A fake Azure Developer CLI: an `azd` script answering
//! `azd auth token --output json --scope S [--scope S2] [--tenant-id T]
//! [--no-prompt]` like the real one: `{"token":"...","expiresOn":"<RFC 3339>"}`
//! on success; on failure exit 1 with azd's JSON console message on stderr,
//! e.g. `{"type":"consoleMessage","timestamp":"...","data":{"message":"\nERROR:
//! not logged in, run `azd auth login` to login\n"}}`.
//!
//! The invocation log holds each run's arguments after `azd`.

use crate::fake_tool::{FakeTool, COMMON_SH};
use std::path::Path;
use std::time::Duration;

/// How `azd auth token` behaves from the next run on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AzdMode {
    Ok,
    /// Exit 1: "not logged in, run `azd auth login` to login".
    NotLoggedIn,
    /// Exit 1: "fetching token: AADSTS<code>: <text>".
    Aadsts(u32, String),
    /// Sleep far beyond any limit (as the same process).
    Hang,
}

#[derive(Debug)]
pub struct FakeAzd {
    tool: FakeTool,
}

impl FakeAzd {
    pub fn install(dir: &Path) -> FakeAzd {
        let template = SCRIPT.replace("@COMMON@", COMMON_SH);
        FakeAzd {
            tool: FakeTool::install(dir, "azd", &template),
        }
    }

    pub fn set_mode(&self, mode: AzdMode) {
        let line = match mode {
            AzdMode::Ok => "ok".to_owned(),
            AzdMode::NotLoggedIn => "not-logged-in".to_owned(),
            AzdMode::Hang => "hang".to_owned(),
            AzdMode::Aadsts(code, text) => {
                self.tool.write("aadsts.txt", &text);
                format!("aadsts {code}")
            }
        };
        self.tool.write("mode", &line);
    }

    pub fn set_delay(&self, delay: Duration) {
        self.tool.set_delay(delay);
    }

    pub fn set_lifetime(&self, secs: u64) {
        self.tool.set_lifetime(secs);
    }

    pub fn invocations(&self) -> usize {
        self.tool.invocations()
    }

    pub fn invocation_args(&self) -> Vec<String> {
        self.tool.invocation_args()
    }

    pub fn live_hung_pids(&self) -> Vec<i32> {
        self.tool.live_hung_pids()
    }
}

const SCRIPT: &str = r#"#!/bin/sh
# Fake Azure Developer CLI for azbroker's tests (tests/support/fake_azd.rs).
CTL=@CTL@
DEFAULT_TENANT='@TENANT@'
APP_ID='04b07795-8ddb-461a-bbee-02f9e1bf7b46'
@COMMON@
log_invocation "$*"
apply_delay

console_error() {
    printf '{"type":"consoleMessage","timestamp":"%s","data":{"message":"\\nERROR: %s\\n"}}\n' \
        "$(date -u '+%Y-%m-%dT%H:%M:%S.%NZ')" "$1" >&2
    exit 1
}

if [ "$1" != auth ] || [ "$2" != token ]; then
    console_error "fake azd: only 'azd auth token' is implemented"
fi
shift 2
scopes=
tenant=
output=
while [ $# -gt 0 ]; do
    arg=$1
    shift
    case $arg in
    --*=*)
        set -- "${arg#*=}" "$@"
        arg=${arg%%=*}
        ;;
    esac
    case $arg in
    --scope)
        [ $# -gt 0 ] || console_error "flag needs an argument: --scope"
        scopes="$scopes${scopes:+ }$1"
        shift
        ;;
    --tenant-id)
        [ $# -gt 0 ] || console_error "flag needs an argument: --tenant-id"
        tenant=$1
        shift
        ;;
    --output | -o)
        [ $# -gt 0 ] || console_error "flag needs an argument: --output"
        output=$1
        shift
        ;;
    --claims)
        [ $# -gt 0 ] || console_error "flag needs an argument: --claims"
        shift
        ;;
    --no-prompt | --debug) ;;
    *) console_error "unknown flag: $arg" ;;
    esac
done
[ "$output" = json ] || console_error "fake azd: only --output json is implemented"
[ -n "$scopes" ] || scopes='https://management.azure.com//.default'

mode=$(cat "$CTL/mode" 2>/dev/null)
case $mode in
ok) ;;
not-logged-in) console_error 'not logged in, run `azd auth login` to login' ;;
hang) hang ;;
'aadsts '*)
    console_error "fetching token: AADSTS${mode#aadsts }: $(cat "$CTL/aadsts.txt") Trace ID: $(uuid) Correlation ID: $(uuid) Timestamp: $(date -u '+%Y-%m-%d %H:%M:%SZ')"
    ;;
*) console_error "fake azd: bad mode file $CTL/mode" ;;
esac

case "$scopes $tenant" in
*[!A-Za-z0-9._:/\ -]*) console_error "fetching token: AADSTS70011: The provided value for the input parameter 'scope' is not valid." ;;
esac
set_expiry
token=$(mint_token "$(audience "${scopes%% *}")" "${tenant:-$DEFAULT_TENANT}")
printf '{"token":"%s","expiresOn":"%s"}\n' "$token" "$(date -u -d "@$exp" '+%Y-%m-%dT%H:%M:%SZ')"
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn run(azd: &FakeAzd, dir: &Path, args: &str) -> std::process::Output {
        let _ = azd;
        Command::new("/bin/sh")
            .arg("-c")
            .arg(format!("cd /bin && azd {args}"))
            .env("PATH", format!("{}:/usr/bin:/bin", dir.display()))
            .output()
            .unwrap()
    }

    #[test]
    fn prints_token_json_and_console_errors() {
        let dir = tempfile::tempdir().unwrap();
        let azd = FakeAzd::install(dir.path());
        let out = run(
            &azd,
            dir.path(),
            "auth token -o json --no-prompt --scope https://vault.azure.net/.default --tenant-id t-1",
        );
        assert!(out.status.success(), "{out:?}");
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let keys: Vec<&String> = json.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["expiresOn", "token"]);
        assert!(json["expiresOn"].as_str().unwrap().ends_with('Z'));
        let claims = crate::jwt::decode_claims(json["token"].as_str().unwrap()).unwrap();
        assert_eq!(claims["aud"], "https://vault.azure.net");
        assert_eq!(claims["tid"], "t-1");

        azd.set_mode(AzdMode::NotLoggedIn);
        let out = run(&azd, dir.path(), "auth token -o json --scope x/.default");
        assert_eq!(out.status.code(), Some(1));
        let stderr = String::from_utf8(out.stderr).unwrap();
        let line: serde_json::Value = serde_json::from_str(&stderr).unwrap();
        assert_eq!(line["type"], "consoleMessage");
        assert_eq!(
            line["data"]["message"],
            "\nERROR: not logged in, run `azd auth login` to login\n"
        );
        assert_eq!(azd.invocations(), 2);
        assert!(azd.invocation_args()[0].starts_with("auth token -o json --no-prompt --scope "));
    }
}
