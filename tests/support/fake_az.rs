//! A fake Azure CLI: an `az` shell script (over [`fake_tool`](crate::fake_tool))
//! that answers `az account get-access-token` exactly like the real CLI
//! (output layout, flags, errors and exit codes; see
//! `docs/spec/wire-formats.md`), driven by files the test writes.
//!
//! Tokens are JWT-shaped, with [`HEADER_JSON`](crate::jwt::HEADER_JSON) as
//! header, realistic v1 user claims (`aud`, `tid`, `oid`, `upn`, `exp`, unique
//! `uti`, ...) and a random, unverifiable signature.
//!
//! The invocation log holds `<unique id><TAB><arguments>` per run: the id lets
//! a run find its own position in the log without a lock, for
//! [`Mode::FailAfter`].

use crate::fake_tool::{sh_quote, FakeTool, COMMON_SH};
use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

pub use crate::fake_tool::{DEFAULT_LIFETIME_SECS, DEFAULT_TENANT, HANG_SECS, USER_OID, USER_UPN};

/// Default subscription of the signed-in test user.
pub const DEFAULT_SUBSCRIPTION: &str = "5f0c7a1e-0000-4000-8000-0000000050b5";
/// Display name of [`DEFAULT_SUBSCRIPTION`]; `--subscription` accepts it or any GUID.
pub const SUBSCRIPTION_NAME: &str = "azbroker-test-subscription";

/// Exact stderr line of the real CLI when nobody is logged in.
pub const NOT_LOGGED_IN: &str = "ERROR: Please run 'az login' to setup account.";

/// How `az account get-access-token` behaves, from the next invocation on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Print a token.
    Ok,
    /// Exit 1 with [`NOT_LOGGED_IN`] on stderr.
    NotLoggedIn,
    /// Exit 1 with `ERROR: AADSTS<code>: <text> Trace ID: .. Correlation ID: ..
    /// Timestamp: ..` on stderr, followed by the CLI's
    /// `Interactive authentication is needed` advice (e.g. `Aadsts(70043,
    /// "The refresh token has expired or is invalid due to sign-in frequency
    /// checks by conditional access. ...")`).
    Aadsts(u32, String),
    /// Sleep [`HANG_SECS`] as the same process (`exec sleep`), so killing the
    /// `az` process ends it. Note that `/bin/sh -c "cd /bin && az ..."` forks
    /// `az` as a child: killing only that shell leaves `az` running, so a
    /// caller must kill the process group (see [`FakeAz::live_hung_pids`]).
    Hang,
    /// Exit 1 with a network error (the CLI's
    /// `ERROR: HTTPSConnectionPool(...)` text) on every invocation.
    Fail,
    /// Behave like `Ok` for the next `n` invocations (of any `az` command),
    /// then like `Fail`.
    FailAfter(usize),
}

impl Mode {
    /// AADSTS70043, the error `az` gives when the sign-in session has expired.
    pub fn refresh_token_expired() -> Mode {
        Mode::Aadsts(
            70043,
            "The refresh token has expired or is invalid due to sign-in frequency checks by \
             conditional access. The token was issued on 2024-01-01T00:00:00.0000000Z and the \
             maximum allowed lifetime for this request is 43200."
                .to_owned(),
        )
    }
}

/// An installed fake `az`. Dropping it kills the processes still hanging in
/// [`Mode::Hang`] (see [`FakeTool`]).
#[derive(Debug)]
pub struct FakeAz {
    tool: FakeTool,
}

impl FakeAz {
    /// Writes the executable `dir/az` and its control directory `dir/.az-control`
    /// (mode `Ok`, lifetime [`DEFAULT_LIFETIME_SECS`], no delay). Put `dir` first
    /// on the `PATH` of the process under test (see [`FakeAz::path_env`]).
    ///
    /// # Panics
    /// If the files cannot be written.
    pub fn install(dir: &Path) -> FakeAz {
        let template = SCRIPT_TEMPLATE
            .replace("@COMMON@", COMMON_SH)
            .replace("@SUBSCRIPTION@", DEFAULT_SUBSCRIPTION)
            .replace("@SUBSCRIPTION_NAME@", SUBSCRIPTION_NAME)
            .replace("@NOT_LOGGED_IN@", &sh_quote(NOT_LOGGED_IN));
        FakeAz {
            tool: FakeTool::install(dir, "az", &template),
        }
    }

    /// The directory holding `az`, to put on `PATH`.
    pub fn dir(&self) -> &Path {
        self.tool.dir()
    }

    /// Path of the `az` script.
    pub fn script_path(&self) -> &Path {
        self.tool.script_path()
    }

    /// The control directory (mode, lifetime, delay, invocation log).
    pub fn control_dir(&self) -> &Path {
        self.tool.control_dir()
    }

    /// This process's `PATH` with [`dir`](Self::dir) in front, for the
    /// environment of the process under test.
    pub fn path_env(&self) -> OsString {
        self.tool.path_env()
    }

    /// Sets the behaviour of the next invocations.
    pub fn set_mode(&self, mode: Mode) {
        let line = match mode {
            Mode::Ok => "ok".to_owned(),
            Mode::NotLoggedIn => "not-logged-in".to_owned(),
            Mode::Hang => "hang".to_owned(),
            Mode::Fail => "fail".to_owned(),
            // The script compares its own position in the invocation log with this bound.
            Mode::FailAfter(n) => format!("fail-after {}", self.invocations() + n),
            Mode::Aadsts(code, text) => {
                self.tool.write("aadsts.txt", &text);
                format!("aadsts {code}")
            }
        };
        self.tool.write("mode", &line);
    }

    /// Lifetime of the tokens printed from now on (`expires_on` = now + `secs`).
    pub fn set_lifetime(&self, secs: u64) {
        self.tool.set_lifetime(secs);
    }

    /// Delay before every invocation does anything else (millisecond
    /// resolution), e.g. to mimic the real CLI's 1-2 s cold start.
    pub fn set_delay(&self, delay: Duration) {
        self.tool.set_delay(delay);
    }

    /// Number of times `az` has been run (any command, any outcome).
    pub fn invocations(&self) -> usize {
        self.tool.invocations()
    }

    /// The arguments of each invocation, oldest first, joined by spaces
    /// (e.g. `account get-access-token -o json --scope https://management.azure.com/.default`).
    pub fn invocation_args(&self) -> Vec<String> {
        self.tool
            .invocation_args()
            .into_iter()
            .map(|line| match line.split_once('\t') {
                Some((_id, args)) => args.to_owned(),
                None => line,
            })
            .collect()
    }

    /// PIDs of invocations that entered [`Mode::Hang`] and still run.
    pub fn live_hung_pids(&self) -> Vec<i32> {
        self.tool.live_hung_pids()
    }

    /// From now on, every run records the environment it was started with
    /// (see [`FakeAz::recorded_environment`]).
    pub fn record_environment(&self) {
        self.tool.write("record_environment", "");
    }

    /// The environment of the latest run since [`FakeAz::record_environment`],
    /// in order; `None` before such a run.
    pub fn recorded_environment(&self) -> Option<Vec<(String, String)>> {
        let block = self.tool.read("environ")?;
        Some(
            block
                .split(|&b| b == 0)
                .filter(|entry| !entry.is_empty())
                .map(|entry| {
                    let entry = String::from_utf8_lossy(entry);
                    match entry.split_once('=') {
                        Some((name, value)) => (name.to_owned(), value.to_owned()),
                        None => (entry.into_owned(), String::new()),
                    }
                })
                .collect(),
        )
    }
}

const SCRIPT_TEMPLATE: &str = r#"#!/bin/sh
# Fake Azure CLI for azbroker's tests, generated by tests/support/fake_az.rs.
# Implements `az account get-access-token` with the real CLI's output and
# errors; the files in $CTL (written by the test) choose the behaviour.
CTL=@CTL@
HEADER='@HEADER@'
DEFAULT_TENANT='@TENANT@'
DEFAULT_SUBSCRIPTION='@SUBSCRIPTION@'
SUBSCRIPTION_NAME='@SUBSCRIPTION_NAME@'
USER_OID='@OID@'
USER_UPN='@UPN@'
APP_ID='04b07795-8ddb-461a-bbee-02f9e1bf7b46'
@COMMON@
# One log line per invocation, "<unique id><TAB><arguments>". The id lets this
# process find its own position in the log without a lock (appends are atomic).
id="$$.$(date +%s%N)"
printf '%s\t%s\n' "$id" "$(printf '%s' "$*" | tr '\n' ' ')" >>"$CTL/invocations.log"
# A test may ask what the broker passed to its tools: this run's environment, as exec'd.
if [ -e "$CTL/record_environment" ]; then cat /proc/$$/environ >"$CTL/environ"; fi
apply_delay

is_guid() {
    case $1 in
    *[!0-9a-fA-F-]*) return 1 ;;
    ????????-????-????-????-????????????) return 0 ;;
    *) return 1 ;;
    esac
}
# Position (1-based) of this invocation in the log.
position() {
    n=0
    while IFS= read -r line; do
        n=$((n + 1))
        case $line in "$id	"*) break ;; esac
    done <"$CTL/invocations.log"
    echo "$n"
}
usage_error() {
    printf 'ERROR: %s\n' "$1" >&2
    exit 2
}
# An Entra error as the CLI prints it: code, text, then optional advice (a scope).
aadsts_error() {
    printf 'ERROR: AADSTS%s: %s Trace ID: %s Correlation ID: %s Timestamp: %s\n' \
        "$1" "$2" "$(uuid)" "$(uuid)" "$(date -u '+%Y-%m-%d %H:%M:%SZ')" >&2
    if [ -n "$3" ]; then
        printf 'Interactive authentication is needed. Please run:\naz login --scope %s\n' "$3" >&2
    fi
    exit 1
}
# argparse's check that an option has a value: $1 option name, $2 the next argument.
need_value() {
    if [ $# -lt 2 ]; then usage_error "argument $1: expected one argument"; fi
    case $2 in -*) usage_error "argument $1: expected one argument" ;; esac
}

if [ "$1" != account ]; then
    printf "az: '%s' is not in the 'az' command group. See 'az --help'.\n" "$1" >&2
    exit 2
fi
if [ "$2" != get-access-token ]; then
    printf "az account: '%s' is not in the 'az account' command group. See 'az account --help'.\n" "$2" >&2
    exit 2
fi
shift 2

scopes=
resource=
tenant=
subscription=
output=json
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
        # nargs='*': takes every value up to the next option; a repeated --scope replaces.
        scopes=
        while [ $# -gt 0 ]; do
            case $1 in -*) break ;; esac
            scopes="$scopes${scopes:+ }$1"
            shift
        done
        ;;
    --resource)
        need_value --resource "$@"
        resource=$1
        shift
        ;;
    --tenant | -t)
        need_value --tenant/-t "$@"
        tenant=$1
        shift
        ;;
    --subscription)
        need_value --subscription "$@"
        subscription=$1
        shift
        ;;
    --output | -o)
        need_value --output/-o "$@"
        output=$1
        shift
        ;;
    --debug | --verbose | --only-show-errors) ;;
    *) usage_error "unrecognized arguments: $arg" ;;
    esac
done

case $output in
json | jsonc | none) ;;
table | tsv | yaml | yamlc)
    printf 'ERROR: fake az: --output %s is not implemented (json, jsonc and none are)\n' "$output" >&2
    exit 2
    ;;
*) usage_error "argument --output/-o: invalid choice: '$output' (choose from 'json', 'jsonc', 'none', 'table', 'tsv', 'yaml', 'yamlc')" ;;
esac
if [ -n "$resource" ] && [ -n "$scopes" ]; then
    printf "ERROR: resource and scopes can't be provided at the same time.\n" >&2
    exit 1
fi
if [ -n "$subscription" ] && [ -n "$tenant" ]; then
    printf 'ERROR: Please specify only one of subscription and tenant, not both\n' >&2
    exit 1
fi

mode=$(cat "$CTL/mode" 2>/dev/null)
case $mode in
'fail-after '*)
    if [ "$(position)" -le "${mode#fail-after }" ]; then mode=ok; else mode=fail; fi
    ;;
esac
case $mode in
ok) ;;
not-logged-in)
    printf '%s\n' @NOT_LOGGED_IN@ >&2
    exit 1
    ;;
hang) hang ;;
fail)
    printf '%s\n' "ERROR: HTTPSConnectionPool(host='login.microsoftonline.com', port=443): Max retries exceeded with url: /organizations/oauth2/v2.0/token (Caused by NewConnectionError('<urllib3.connection.HTTPSConnection object at 0x7f3a1c2b5d90>: Failed to establish a new connection: [Errno -3] Temporary failure in name resolution'))" >&2
    exit 1
    ;;
'aadsts '*)
    login_scope=${scopes%% *}
    if [ -z "$login_scope" ]; then
        login_scope="${resource:-https://management.core.windows.net/}/.default"
    fi
    aadsts_error "${mode#aadsts }" "$(cat "$CTL/aadsts.txt")" "$login_scope"
    ;;
*)
    printf 'fake az: bad mode file %s\n' "$CTL/mode" >&2
    exit 3
    ;;
esac

# Values end up in JSON unescaped, so refuse what the real service would refuse anyway.
case "$scopes $resource" in
*[!A-Za-z0-9._:/\ -]*)
    aadsts_error 70011 "The provided value for the input parameter 'scope' is not valid. The scope $scopes$resource is not valid."
    ;;
esac
case $tenant in
*[!A-Za-z0-9.-]*)
    aadsts_error 90002 "Tenant '$tenant' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant."
    ;;
esac
sub=$DEFAULT_SUBSCRIPTION
if [ -n "$subscription" ]; then
    if is_guid "$subscription"; then
        sub=$subscription
    elif [ "$subscription" != "$SUBSCRIPTION_NAME" ]; then
        printf "ERROR: Subscription '%s' not found. Check the spelling and casing and try again.\n" "$subscription" >&2
        exit 1
    fi
fi

# The v1 audience: a --resource as given, else the first scope minus its permission.
if [ -n "$scopes" ]; then
    aud=$(audience "${scopes%% *}")
else
    aud=${resource:-https://management.core.windows.net/}
fi

set_expiry
tid=${tenant:-$DEFAULT_TENANT}
claims=$(printf '{"aud":"%s","iss":"https://sts.windows.net/%s/","iat":%s,"nbf":%s,"exp":%s,"acr":"1","amr":["pwd","mfa"],"appid":"%s","appidacr":"0","idtyp":"user","name":"Test User","oid":"%s","scp":"user_impersonation","sub":"%s","tid":"%s","unique_name":"%s","upn":"%s","uti":"%s","ver":"1.0"}' \
    "$aud" "$tid" "$iat" "$iat" "$exp" "$APP_ID" "$USER_OID" "$USER_OID" "$tid" "$USER_UPN" "$USER_UPN" \
    "$(head -c 16 /dev/urandom | b64url)")
token="$HEADER.$(printf '%s' "$claims" | b64url).$(head -c 256 /dev/urandom | b64url)"

[ "$output" = none ] && exit 0
# json.dumps(indent=2, sort_keys=True); expiresOn is local time, without offset.
printf '{\n'
printf '  "accessToken": "%s",\n' "$token"
printf '  "expiresOn": "%s",\n' "$(date -d "@$exp" '+%Y-%m-%d %H:%M:%S.000000')"
printf '  "expires_on": %s,\n' "$exp"
if [ -z "$tenant" ]; then
    printf '  "subscription": "%s",\n' "$sub"
fi
printf '  "tenant": "%s",\n' "$tid"
printf '  "tokenType": "Bearer"\n'
printf '}\n'
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwt;
    use azure_core::credentials::TokenCredential;
    use azure_identity::{AzureCliCredential, AzureCliCredentialOptions, Executor};
    use std::ffi::OsStr;
    use std::process::{Command, Output};
    use std::sync::Arc;
    use std::time::Instant;

    const ARM: &str = "https://management.azure.com/.default";

    fn install() -> (tempfile::TempDir, FakeAz) {
        let dir = tempfile::tempdir().unwrap();
        let az = FakeAz::install(dir.path());
        (dir, az)
    }

    /// Runs `az <args>` the way azure_identity does: `/bin/sh -c "cd /bin && az ..."`.
    fn run(az: &FakeAz, args: &str, tz: &str) -> Output {
        Command::new("/bin/sh")
            .arg("-c")
            .arg(format!("cd /bin && az {args}"))
            .env("PATH", az.path_env())
            .env("TZ", tz)
            .output()
            .unwrap()
    }

    fn stdout_json(output: &Output) -> serde_json::Value {
        assert!(output.status.success(), "{output:?}");
        serde_json::from_slice(&output.stdout).unwrap()
    }

    fn now() -> i64 {
        time::OffsetDateTime::now_utc().unix_timestamp()
    }

    #[test]
    fn prints_the_cli_layout_byte_for_byte() {
        let (_dir, az) = install();
        let before = now();
        // The Azure MCP Server's exact command line.
        let output = run(
            &az,
            "account get-access-token --output json --resource https://management.azure.com/",
            "UTC",
        );
        let json = stdout_json(&output);

        let token = json["accessToken"].as_str().unwrap();
        let expires_on = json["expires_on"].as_i64().unwrap();
        assert!((before + 3600..=now() + 3600).contains(&expires_on));
        let expires_utc = time::OffsetDateTime::from_unix_timestamp(expires_on).unwrap();
        let expires_on_text = expires_utc
            .format(time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute]:[second].000000"
            ))
            .unwrap();
        let expected = format!(
            "{{\n  \"accessToken\": \"{token}\",\n  \"expiresOn\": \"{expires_on_text}\",\n  \
             \"expires_on\": {expires_on},\n  \"subscription\": \"{DEFAULT_SUBSCRIPTION}\",\n  \
             \"tenant\": \"{DEFAULT_TENANT}\",\n  \"tokenType\": \"Bearer\"\n}}\n"
        );
        assert_eq!(String::from_utf8(output.stdout).unwrap(), expected);
        assert!(output.stderr.is_empty());

        let claims = jwt::decode_claims(token).unwrap();
        assert_eq!(claims["aud"], "https://management.azure.com/");
        assert_eq!(claims["tid"], DEFAULT_TENANT);
        assert_eq!(claims["oid"], USER_OID);
        assert_eq!(claims["upn"], USER_UPN);
        assert_eq!(claims["exp"], expires_on);
        assert_eq!(claims["idtyp"], "user");
        assert!(token.starts_with(&format!("{}.", jwt::header_b64())));
    }

    #[test]
    fn expires_on_text_is_local_time() {
        let (_dir, az) = install();
        // POSIX TZ string (no tzdata needed): local time is UTC+05:30.
        let json = stdout_json(&run(&az, "account get-access-token", "IST-5:30"));
        let local = time::OffsetDateTime::from_unix_timestamp(json["expires_on"].as_i64().unwrap())
            .unwrap()
            .to_offset(time::macros::offset!(+5:30));
        let text = json["expiresOn"].as_str().unwrap();
        // The CLI's zero-padded `%Y-%m-%d %H:%M:%S` (time's Display leaves the hour unpadded).
        let expected = local
            .format(time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute]:[second]"
            ))
            .unwrap();
        assert!(text.starts_with(&expected), "{text} vs {expected}");
        assert!(text.ends_with(".000000"));
    }

    #[test]
    fn flags_in_any_order_and_tenant_omits_subscription() {
        let (_dir, az) = install();
        az.set_lifetime(60);
        let before = now();
        let json = stdout_json(&run(
            &az,
            "account get-access-token -t 00000000-1111-2222-3333-444444444444 \
             --scope https://vault.azure.net/.default -o json",
            "UTC",
        ));
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "accessToken",
                "expiresOn",
                "expires_on",
                "tenant",
                "tokenType"
            ]
        );
        assert_eq!(json["tenant"], "00000000-1111-2222-3333-444444444444");
        assert!((before + 60..=now() + 60).contains(&json["expires_on"].as_i64().unwrap()));
        let claims = jwt::decode_claims(json["accessToken"].as_str().unwrap()).unwrap();
        assert_eq!(claims["aud"], "https://vault.azure.net");
        assert_eq!(claims["tid"], "00000000-1111-2222-3333-444444444444");

        // --opt=value, a repeated --scope (the last wins), a subscription by name.
        let json = stdout_json(&run(
            &az,
            &format!(
                "account get-access-token --output=json --scope https://a.example/.default \
                 --subscription {SUBSCRIPTION_NAME} --scope {ARM}"
            ),
            "UTC",
        ));
        assert_eq!(json["subscription"], DEFAULT_SUBSCRIPTION);
        let claims = jwt::decode_claims(json["accessToken"].as_str().unwrap()).unwrap();
        assert_eq!(claims["aud"], "https://management.azure.com");

        let first = stdout_json(&run(&az, "account get-access-token", "UTC"));
        let second = stdout_json(&run(&az, "account get-access-token", "UTC"));
        assert_ne!(first["accessToken"], second["accessToken"]);
        let uti = |v: &serde_json::Value| {
            jwt::decode_claims(v["accessToken"].as_str().unwrap()).unwrap()["uti"].clone()
        };
        assert_ne!(uti(&first), uti(&second));
    }

    #[test]
    fn usage_errors_match_the_cli() {
        let (_dir, az) = install();
        let cases = [
            (
                "account list",
                2,
                "az account: 'list' is not in the 'az account' command group. \
                 See 'az account --help'.\n",
            ),
            (
                "vm list",
                2,
                "az: 'vm' is not in the 'az' command group. See 'az --help'.\n",
            ),
            (
                "account get-access-token --bogus",
                2,
                "ERROR: unrecognized arguments: --bogus\n",
            ),
            (
                "account get-access-token --tenant",
                2,
                "ERROR: argument --tenant/-t: expected one argument\n",
            ),
            (
                "account get-access-token --tenant t --subscription s",
                1,
                "ERROR: Please specify only one of subscription and tenant, not both\n",
            ),
            (
                "account get-access-token --resource r --scope s",
                1,
                "ERROR: resource and scopes can't be provided at the same time.\n",
            ),
            (
                "account get-access-token --subscription nope",
                1,
                "ERROR: Subscription 'nope' not found. \
                 Check the spelling and casing and try again.\n",
            ),
        ];
        for (args, code, stderr) in cases {
            let output = run(&az, args, "UTC");
            assert_eq!(output.status.code(), Some(code), "{args}");
            assert_eq!(String::from_utf8_lossy(&output.stderr), stderr, "{args}");
            assert!(output.stdout.is_empty(), "{args}");
        }
        assert_eq!(az.invocations(), cases.len());
        assert_eq!(az.invocation_args()[0], "account list");
    }

    #[test]
    fn failure_modes() {
        let (_dir, az) = install();
        let get = "account get-access-token -o json";

        az.set_mode(Mode::NotLoggedIn);
        let output = run(&az, get, "UTC");
        assert_eq!(output.status.code(), Some(1));
        assert_eq!(output.stderr, format!("{NOT_LOGGED_IN}\n").as_bytes());

        az.set_mode(Mode::refresh_token_expired());
        let output = run(&az, &format!("{get} --scope {ARM}"), "UTC");
        assert_eq!(output.status.code(), Some(1));
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert!(
            stderr.starts_with("ERROR: AADSTS70043: The refresh token has expired or is invalid"),
            "{stderr}"
        );
        assert!(
            stderr.contains(" Trace ID: ")
                && stderr.contains(" Correlation ID: ")
                && stderr.contains(" Timestamp: ")
        );
        assert!(
            stderr.ends_with(&format!(
                "Interactive authentication is needed. Please run:\naz login --scope {ARM}\n"
            )),
            "{stderr}"
        );

        az.set_mode(Mode::FailAfter(1));
        assert!(run(&az, get, "UTC").status.success());
        for _ in 0..2 {
            let output = run(&az, get, "UTC");
            assert_eq!(output.status.code(), Some(1));
            assert!(output.stderr.starts_with(b"ERROR: HTTPSConnectionPool("));
        }
        az.set_mode(Mode::Ok);
        assert!(run(&az, get, "UTC").status.success());
        assert_eq!(az.invocations(), 6);
        assert_eq!(az.invocation_args()[5], get);
    }

    #[test]
    fn fail_after_is_exact_under_concurrency() {
        let (_dir, az) = install();
        az.set_mode(Mode::FailAfter(3));
        let children: Vec<_> = (0..8)
            .map(|_| {
                Command::new(az.script_path())
                    .args(["account", "get-access-token"])
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let successes = children
            .into_iter()
            .map(|mut child| child.wait().unwrap().success())
            .filter(|&ok| ok)
            .count();
        assert_eq!(successes, 3);
        assert_eq!(az.invocations(), 8);
    }

    #[test]
    fn delay_and_hang() {
        let (_dir, az) = install();
        az.set_delay(Duration::from_millis(300));
        let started = Instant::now();
        assert!(run(&az, "account get-access-token", "UTC").status.success());
        assert!(started.elapsed() >= Duration::from_millis(300));

        az.set_delay(Duration::ZERO);
        az.set_mode(Mode::Hang);
        let mut child = Command::new(az.script_path())
            .args(["account", "get-access-token"])
            .spawn()
            .unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        wait_for(|| az.live_hung_pids() == [pid]);
        // `exec sleep` keeps the PID, so killing the process we started ends the hang.
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(az.live_hung_pids().is_empty());
    }

    fn wait_for(condition: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !condition() {
            assert!(Instant::now() < deadline, "timed out");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// azure_identity's own executor, with the fake `az` first on the child's
    /// `PATH` (via `env`, which execs the real program), so the test needs no
    /// process-wide `PATH` change.
    #[derive(Debug)]
    struct WithPath {
        inner: Arc<dyn Executor>,
        path: OsString,
    }

    #[async_trait::async_trait]
    impl Executor for WithPath {
        async fn run(&self, program: &OsStr, args: &[&OsStr]) -> std::io::Result<Output> {
            let mut path = OsString::from("PATH=");
            path.push(&self.path);
            let mut env_args: Vec<&OsStr> = vec![&path, program];
            env_args.extend_from_slice(args);
            self.inner.run(OsStr::new("/usr/bin/env"), &env_args).await
        }
    }

    fn cli_credential(
        az: &FakeAz,
        tenant_id: Option<&str>,
        subscription: Option<&str>,
    ) -> Arc<AzureCliCredential> {
        AzureCliCredential::new(Some(AzureCliCredentialOptions {
            tenant_id: tenant_id.map(str::to_owned),
            subscription: subscription.map(str::to_owned),
            executor: Some(Arc::new(WithPath {
                inner: azure_identity::new_executor(),
                path: az.path_env(),
            })),
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn azure_cli_credential_gets_a_token() {
        let (_dir, az) = install();
        let before = now();
        let token = cli_credential(&az, None, None)
            .get_token(&[ARM], None)
            .await
            .unwrap();
        let expires_on = token.expires_on.unix_timestamp();
        assert!((before + 3600..=now() + 3600).contains(&expires_on));
        let claims = jwt::decode_claims(token.token.secret()).unwrap();
        assert_eq!(claims["aud"], "https://management.azure.com");

        let tenant = "11111111-2222-3333-4444-555555555555";
        cli_credential(&az, Some(tenant), None)
            .get_token(&[ARM], None)
            .await
            .unwrap();
        cli_credential(&az, None, Some(SUBSCRIPTION_NAME))
            .get_token(&[ARM], None)
            .await
            .unwrap();
        assert_eq!(
            az.invocation_args(),
            [
                format!("account get-access-token -o json --scope {ARM}"),
                format!("account get-access-token -o json --scope {ARM} --tenant {tenant}"),
                format!(
                    "account get-access-token -o json --scope {ARM} \
                     --subscription {SUBSCRIPTION_NAME}"
                ),
            ]
        );
    }

    #[tokio::test]
    async fn azure_cli_credential_reports_stderr() {
        let (_dir, az) = install();
        az.set_mode(Mode::NotLoggedIn);
        let error = cli_credential(&az, None, None)
            .get_token(&[ARM], None)
            .await
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "AzureCliCredential authentication failed. {NOT_LOGGED_IN}\n\n\
                 To troubleshoot, visit https://aka.ms/azsdk/rust/identity/troubleshoot#azure-cli"
            )
        );
    }

    #[tokio::test]
    async fn azure_cli_credential_leaves_a_hung_az_running_when_dropped() {
        let (_dir, az) = install();
        az.set_mode(Mode::Hang);
        let credential = cli_credential(&az, None, None);

        let outcome = tokio::time::timeout(
            Duration::from_millis(500),
            credential.get_token(&[ARM], None),
        )
        .await;

        assert!(outcome.is_err(), "no token from a hung az");
        wait_for(|| az.live_hung_pids().len() == 1);
        // azure_identity neither times out nor kills on drop: the hung `az` outlives
        // the future (FakeAz's Drop kills it).
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(az.live_hung_pids().len(), 1);
    }
}
