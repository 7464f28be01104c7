//! A fake PowerShell: a `pwsh` script that stands in for
//! `pwsh -NoProfile -NonInteractive -Command <script>` running azbroker's
//! `Get-AzAccessToken` script. It reads the script's `$resource = '...'` and
//! `$tenant = '...'` lines and answers as the real script would: one JSON
//! line `{"Token":"...","ExpiresOn":"<ISO 8601>","TenantId":"..."}`, or the
//! real errors on stderr with exit 1 (`Get-AzAccessToken: Run
//! Connect-AzAccount to login.`, the `Import-Module` error for a missing
//! Az.Accounts).
//!
//! Az.Accounts 5+ returns the token as a SecureString: in that mode a script
//! without `ConvertFrom-SecureString` gets what ConvertTo-Json makes of a
//! SecureString (`{"Length":N}`), as real PowerShell would print.
//!
//! The invocation log holds `<flags> | resource=<r> tenant=<t>` per run.

use crate::fake_tool::{FakeTool, COMMON_SH};
use std::path::Path;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PwshMode {
    Ok,
    /// `Get-AzAccessToken: Run Connect-AzAccount to login.`
    NotLoggedIn,
    /// Az.Accounts is not installed.
    NoModule,
    /// `Get-AzAccessToken: AADSTS<code>: <text>`
    Aadsts(u32, String),
    Hang,
}

#[derive(Debug)]
pub struct FakePwsh {
    tool: FakeTool,
}

impl FakePwsh {
    pub fn install(dir: &Path) -> FakePwsh {
        let template = SCRIPT.replace("@COMMON@", COMMON_SH);
        let pwsh = FakePwsh {
            tool: FakeTool::install(dir, "pwsh", &template),
        };
        pwsh.set_az_accounts_major(5);
        pwsh
    }

    pub fn set_mode(&self, mode: PwshMode) {
        let line = match mode {
            PwshMode::Ok => "ok".to_owned(),
            PwshMode::NotLoggedIn => "not-logged-in".to_owned(),
            PwshMode::NoModule => "no-module".to_owned(),
            PwshMode::Hang => "hang".to_owned(),
            PwshMode::Aadsts(code, text) => {
                self.tool.write("aadsts.txt", &text);
                format!("aadsts {code}")
            }
        };
        self.tool.write("mode", &line);
    }

    /// Major version of the installed Az.Accounts: 5 and later return a SecureString token.
    pub fn set_az_accounts_major(&self, major: u32) {
        self.tool.write("az_accounts_major", &major.to_string());
    }

    pub fn set_delay(&self, delay: Duration) {
        self.tool.set_delay(delay);
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
# Fake PowerShell for azbroker's tests (tests/support/fake_pwsh.rs).
CTL=@CTL@
DEFAULT_TENANT='@TENANT@'
APP_ID='1950a258-227b-4e31-a9cf-717495945fc2'
@COMMON@

flags=
script=
while [ $# -gt 0 ]; do
    case $1 in
    -NoProfile | -NonInteractive) flags="$flags${flags:+ }$1" ;;
    -Command)
        shift
        script=$1
        ;;
    *)
        printf 'The argument '"'"'%s'"'"' is not recognized as the name of a script file.\n' "$1" >&2
        exit 64
        ;;
    esac
    shift
done
resource=$(printf '%s\n' "$script" | sed -n "s/^\$resource = '\(.*\)'\$/\1/p")
tenant=$(printf '%s\n' "$script" | sed -n "s/^\$tenant = '\(.*\)'\$/\1/p")
log_invocation "$flags | resource=$resource tenant=$tenant"
apply_delay
if [ "$flags" != "-NoProfile -NonInteractive" ] || [ -z "$resource" ]; then
    printf 'fake pwsh: expected -NoProfile -NonInteractive -Command <script with $resource>\n' >&2
    exit 3
fi

mode=$(cat "$CTL/mode" 2>/dev/null)
case $mode in
ok) ;;
not-logged-in)
    printf 'Get-AzAccessToken: Run Connect-AzAccount to login.\n' >&2
    exit 1
    ;;
no-module)
    printf "Import-Module: The specified module 'Az.Accounts' was not loaded because no valid module file was found in any module directory.\n" >&2
    exit 1
    ;;
hang) hang ;;
'aadsts '*)
    printf 'Get-AzAccessToken: AADSTS%s: %s Trace ID: %s Correlation ID: %s Timestamp: %s\n' \
        "${mode#aadsts }" "$(cat "$CTL/aadsts.txt")" "$(uuid)" "$(uuid)" "$(date -u '+%Y-%m-%d %H:%M:%SZ')" >&2
    exit 1
    ;;
*)
    printf 'fake pwsh: bad mode file\n' >&2
    exit 3
    ;;
esac

tid=${tenant:-$DEFAULT_TENANT}
set_expiry
token=$(mint_token "$resource" "$tid")
major=$(cat "$CTL/az_accounts_major" 2>/dev/null)
case $major in '' | *[!0-9]*) major=5 ;; esac
if [ "$major" -ge 5 ] && ! printf '%s' "$script" | grep -q 'ConvertFrom-SecureString'; then
    token_json="{\"Length\":${#token}}"
else
    token_json="\"$token\""
fi
printf '{"Token":%s,"ExpiresOn":"%s","TenantId":"%s"}\n' "$token_json" "$(date -u -d "@$exp" '+%Y-%m-%dT%H:%M:%S.0000000+00:00')" "$tid"
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn run(dir: &Path, script: &str) -> std::process::Output {
        Command::new(dir.join("pwsh"))
            .args(["-NoProfile", "-NonInteractive", "-Command", script])
            .output()
            .unwrap()
    }

    #[test]
    fn answers_like_the_script_and_enforces_securestring_handling() {
        let dir = tempfile::tempdir().unwrap();
        let pwsh = FakePwsh::install(dir.path());
        let good = "$resource = 'https://management.azure.com'\n$tenant = ''\n$t = ConvertFrom-SecureString\n";
        let out = run(dir.path(), good);
        assert!(out.status.success(), "{out:?}");
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(json["Token"].is_string());
        assert!(json["ExpiresOn"]
            .as_str()
            .unwrap()
            .ends_with(".0000000+00:00"));
        assert_eq!(json["TenantId"], crate::fake_tool::DEFAULT_TENANT);

        let careless = "$resource = 'https://management.azure.com'\n$tenant = 't-2'\n";
        let json: serde_json::Value =
            serde_json::from_slice(&run(dir.path(), careless).stdout).unwrap();
        assert!(json["Token"]["Length"].is_number(), "{json}");
        pwsh.set_az_accounts_major(4);
        let json: serde_json::Value =
            serde_json::from_slice(&run(dir.path(), careless).stdout).unwrap();
        assert!(json["Token"].is_string());
        assert_eq!(json["TenantId"], "t-2");

        pwsh.set_mode(PwshMode::NotLoggedIn);
        let out = run(dir.path(), good);
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(
            out.stderr,
            b"Get-AzAccessToken: Run Connect-AzAccount to login.\n"
        );
        assert_eq!(
            pwsh.invocation_args()[0],
            "-NoProfile -NonInteractive | resource=https://management.azure.com tenant="
        );
    }
}
