//! What the fake `azd` and `pwsh` scripts share: an executable on `PATH`
//! driven by files in a control directory (mode, delay, lifetime, Az.Accounts
//! version), an invocation log, and cleanup of processes left hanging.
//!
//! The scripts are POSIX `sh` (dash) with coreutils, like the fake `az`.

use crate::jwt;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How long a hanging fake sleeps: far beyond any limit the broker uses.
pub const HANG_SECS: u64 = 600;
/// Token lifetime unless a test sets another.
pub const DEFAULT_LIFETIME_SECS: u64 = 3600;
/// Tenant of the signed-in test user unless a tenant is asked for.
pub const DEFAULT_TENANT: &str = "a1b2c3d4-0000-4000-8000-00000000a2b1";

/// An installed fake tool. Dropping it kills invocations still hanging.
#[derive(Debug)]
pub struct FakeTool {
    script: PathBuf,
    control: PathBuf,
}

impl FakeTool {
    /// Writes `dir/<name>` from `template` (placeholders `@CTL@`, `@HEADER@`,
    /// `@TENANT@`, `@HANG_SECS@`, `@BACKDATE@` filled in) and its control directory.
    pub fn install(dir: &Path, name: &str, template: &str) -> FakeTool {
        let dir = std::fs::canonicalize(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let control = dir.join(format!(".{name}-control"));
        std::fs::create_dir_all(&control).unwrap_or_else(|e| panic!("{}: {e}", control.display()));
        let tool = FakeTool {
            script: dir.join(name),
            control,
        };
        tool.write("mode", "ok");
        tool.write("lifetime", &DEFAULT_LIFETIME_SECS.to_string());
        tool.write("delay_ms", "0");
        tool.write("invocations.log", "");
        let control = tool.control.to_str().expect("UTF-8 path");
        let text = template
            .replace("@CTL@", &format!("'{}'", control.replace('\'', r"'\''")))
            .replace("@HEADER@", &jwt::header_b64())
            .replace("@TENANT@", DEFAULT_TENANT)
            .replace("@HANG_SECS@", &HANG_SECS.to_string())
            .replace("@BACKDATE@", &jwt::BACKDATE_SECS.to_string());
        write_atomically(&tool.script, &text);
        std::fs::set_permissions(&tool.script, std::fs::Permissions::from_mode(0o755))
            .unwrap_or_else(|e| panic!("{}: {e}", tool.script.display()));
        tool
    }

    pub fn script_path(&self) -> &Path {
        &self.script
    }

    /// Replaces a control file atomically.
    pub fn write(&self, name: &str, contents: &str) {
        write_atomically(&self.control.join(name), contents);
    }

    pub fn set_delay(&self, delay: Duration) {
        self.write("delay_ms", &delay.as_millis().to_string());
    }

    pub fn set_lifetime(&self, secs: u64) {
        self.write("lifetime", &secs.to_string());
    }

    /// Number of runs so far.
    pub fn invocations(&self) -> usize {
        self.invocation_args().len()
    }

    /// What each run was asked, oldest first (the script decides what it logs).
    pub fn invocation_args(&self) -> Vec<String> {
        std::fs::read_to_string(self.control.join("invocations.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// PIDs of runs that hang (`exec sleep`) and are still alive.
    pub fn live_hung_pids(&self) -> Vec<i32> {
        std::fs::read_to_string(self.control.join("hung.pids"))
            .unwrap_or_default()
            .lines()
            .filter_map(|line| line.trim().parse().ok())
            .filter(|&pid| is_running_sleep(pid))
            .collect()
    }
}

impl Drop for FakeTool {
    fn drop(&mut self) {
        for pid in self.live_hung_pids() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

fn write_atomically(path: &Path, contents: &str) {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let unique = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut temp = path.as_os_str().to_owned();
    temp.push(format!(".tmp.{}.{unique}", std::process::id()));
    std::fs::write(&temp, contents)
        .and_then(|()| std::fs::rename(&temp, path))
        .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// Whether `pid` is a live process named `sleep` (guards against recycled PIDs).
fn is_running_sleep(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let Some((head, tail)) = stat.rsplit_once(')') else {
        return false;
    };
    let comm = head.split_once('(').map_or("", |(_, c)| c);
    let state = tail.trim_start().chars().next();
    comm == "sleep" && !matches!(state, Some('Z' | 'X'))
}

/// Shell functions both scripts use: logging, delay, hang, token minting.
/// `set_expiry` sets `$iat` and `$exp` (call it in the main shell, not in
/// `$(...)`); `mint_token AUD TID` then prints a JWT-shaped user token.
pub const COMMON_SH: &str = r#"
b64url() { base64 | tr -d '\n=' | tr '+/' '-_'; }
uuid() { cat /proc/sys/kernel/random/uuid; }
log_invocation() { printf '%s\n' "$1" | tr -d '\r' >>"$CTL/invocations.log"; }
apply_delay() {
    delay_ms=$(cat "$CTL/delay_ms" 2>/dev/null)
    case $delay_ms in '' | *[!0-9]*) delay_ms=0 ;; esac
    if [ "$delay_ms" -gt 0 ]; then
        sleep "$((delay_ms / 1000)).$(printf '%03d' $((delay_ms % 1000)))"
    fi
}
hang() {
    printf '%s\n' "$$" >>"$CTL/hung.pids"
    exec sleep @HANG_SECS@
}
set_expiry() {
    lifetime=$(cat "$CTL/lifetime" 2>/dev/null)
    case $lifetime in '' | *[!0-9]*) lifetime=3600 ;; esac
    now=$(date +%s)
    iat=$((now - @BACKDATE@))
    exp=$((now + lifetime))
}
mint_token() {
    claims=$(printf '{"aud":"%s","iss":"https://sts.windows.net/%s/","iat":%s,"nbf":%s,"exp":%s,"appid":"%s","idtyp":"user","name":"Test User","oid":"0e1d2c3b-0000-4000-8000-00000000f00d","tid":"%s","upn":"testuser@contoso.example","uti":"%s","ver":"1.0"}' \
        "$1" "$2" "$iat" "$iat" "$exp" "$APP_ID" "$2" "$(head -c 16 /dev/urandom | b64url)")
    printf '%s.%s.%s' '@HEADER@' "$(printf '%s' "$claims" | b64url)" "$(head -c 256 /dev/urandom | b64url)"
}
# The v1 audience of a scope: minus "/.default", or minus its permission.
audience() {
    case $1 in
    */.default) printf '%s' "${1%/.default}" ;;
    *://*/*) printf '%s' "${1%/*}" ;;
    *) printf '%s' "$1" ;;
    esac
}
"#;
