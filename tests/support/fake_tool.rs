//! What the fake `az`, `azd` and `pwsh` scripts share: an executable on
//! `PATH` driven by files in a control directory (mode, delay, lifetime, ...),
//! an invocation log, the signed-in test user, and cleanup of processes left
//! hanging.
//!
//! Why scripts and not Rust binaries: the broker (like `azure_identity`) runs
//! them through `/bin/sh -c "cd /bin && <tool> ..."`, finding them on `PATH`,
//! so a double must be an executable file on `PATH` that works from `/bin`. A
//! script needs no build step, and its control directory path is embedded
//! absolutely. The scripts are POSIX `sh` (dash) and use only `printf`,
//! coreutils and `/proc/sys/kernel/random/uuid`: GNU/Linux is assumed
//! (`date +%N`, `date -d @N`).

use crate::jwt;
use std::ffi::OsString;
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
/// Object ID (`oid`) of the signed-in test user.
pub const USER_OID: &str = "0e1d2c3b-0000-4000-8000-00000000f00d";
/// `upn` of the signed-in test user.
pub const USER_UPN: &str = "testuser@contoso.example";

/// An installed fake tool. Dropping it kills invocations still hanging.
#[derive(Debug)]
pub struct FakeTool {
    script: PathBuf,
    control: PathBuf,
}

impl FakeTool {
    /// Writes `dir/<name>` from `template` (placeholders `@CTL@`, `@HEADER@`,
    /// `@TENANT@`, `@OID@`, `@UPN@`, `@HANG_SECS@`, `@BACKDATE@` filled in)
    /// and its control directory `dir/.<name>-control` (mode `ok`, lifetime
    /// [`DEFAULT_LIFETIME_SECS`], no delay, an empty invocation log).
    ///
    /// # Panics
    /// If the files cannot be written.
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
            .replace("@CTL@", &sh_quote(control))
            .replace("@HEADER@", &jwt::header_b64())
            .replace("@TENANT@", DEFAULT_TENANT)
            .replace("@OID@", USER_OID)
            .replace("@UPN@", USER_UPN)
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

    /// The directory holding the script, to put on `PATH`.
    pub fn dir(&self) -> &Path {
        self.script.parent().expect("the script is in a directory")
    }

    /// This process's `PATH` with [`dir`](Self::dir) in front, for the
    /// environment of the process under test.
    pub fn path_env(&self) -> OsString {
        let inherited = std::env::var_os("PATH").unwrap_or_default();
        let paths = std::iter::once(self.dir().to_owned()).chain(std::env::split_paths(&inherited));
        std::env::join_paths(paths).expect("PATH entries contain no ':'")
    }

    /// The control directory (mode, lifetime, delay, invocation log, ...).
    pub fn control_dir(&self) -> &Path {
        &self.control
    }

    /// Replaces a control file atomically, so the script never reads half of it.
    pub fn write(&self, name: &str, contents: &str) {
        write_atomically(&self.control.join(name), contents);
    }

    /// A control file's contents, `None` if it does not exist (yet).
    pub fn read(&self, name: &str) -> Option<Vec<u8>> {
        std::fs::read(self.control.join(name)).ok()
    }

    pub fn set_delay(&self, delay: Duration) {
        self.write("delay_ms", &delay.as_millis().to_string());
    }

    pub fn set_lifetime(&self, secs: u64) {
        self.write("lifetime", &secs.to_string());
    }

    /// Number of runs so far (any command, any outcome).
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

    /// PIDs of runs that hang (`exec sleep`) and are still alive, e.g. to check
    /// that the broker killed the tool it gave up on (not just `/bin/sh`).
    pub fn live_hung_pids(&self) -> Vec<i32> {
        std::fs::read_to_string(self.control.join("hung.pids"))
            .unwrap_or_default()
            .lines()
            .filter_map(|line| line.trim().parse().ok())
            .filter(|&pid| is_running_sleep(pid))
            .collect()
    }
}

/// Kills the runs still hanging, so a test never leaks sleepers; the files
/// stay (the test's temporary directory owns them).
impl Drop for FakeTool {
    fn drop(&mut self) {
        for pid in self.live_hung_pids() {
            // Only our own `exec sleep` survivors: is_running_sleep checked the name.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Quotes `s` for a POSIX shell.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
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

/// Whether `pid` is a live (not zombie) process named `sleep`: guards
/// against signalling a recycled PID.
fn is_running_sleep(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "<pid> (<comm>) <state> ..."; comm may contain spaces, so split on the last ')'.
    let Some((head, tail)) = stat.rsplit_once(')') else {
        return false;
    };
    let comm = head.split_once('(').map_or("", |(_, c)| c);
    let state = tail.trim_start().chars().next();
    comm == "sleep" && !matches!(state, Some('Z' | 'X'))
}

/// Shell functions the scripts use: logging, delay, hang, token minting.
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
    claims=$(printf '{"aud":"%s","iss":"https://sts.windows.net/%s/","iat":%s,"nbf":%s,"exp":%s,"appid":"%s","idtyp":"user","name":"Test User","oid":"@OID@","tid":"%s","upn":"@UPN@","uti":"%s","ver":"1.0"}' \
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
