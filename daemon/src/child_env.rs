//! The environment of every process the daemon starts: credential tools (`az`,
//! `azd`, `pwsh`) and the browser opener.
//!
//! Why an allowlist: the daemon inherits the whole environment of whoever
//! started it (an editor, a CI job, a shell holding `AZURE_CLIENT_SECRET`), and a
//! child needs none of that: a tool needs its profile, locale, proxy and trusted
//! roots; a browser needs the display and desktop session. Anything not named
//! here, secret or not, stays out, so a new secret variable cannot leak by
//! default.
//!
//! [`build`] takes the variables to choose from as a parameter: today the
//! daemon's own (see [`tool_env`], [`browser_env`]); a requester's environment
//! can be passed instead without changing the rules.

use std::ffi::{OsStr, OsString};
use std::path::Path;

use azbroker_proto::{shim, ToolSpec};

/// What the child is, which decides the variables it may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildKind {
    /// `az`, `azd`, `pwsh`: runs to completion, prints a token.
    Tool,
    /// `$BROWSER` or the desktop opener: shows the sign-in page to the user.
    Browser,
}

/// Prefixes the browser keeps (locale categories).
const LOCALE_PREFIXES: &[&str] = &["LC_"];

/// The browser: display, desktop session (xdg-open picks the opener from it), input methods.
const BROWSER: &[&str] = &[
    "BROWSER",
    "DISPLAY",
    "WAYLAND_DISPLAY",
    "XAUTHORITY",
    "DBUS_SESSION_BUS_ADDRESS",
    "XDG_CURRENT_DESKTOP",
    "XDG_SESSION_TYPE",
    "XDG_SESSION_DESKTOP",
    "XDG_DATA_DIRS",
    "XDG_CONFIG_DIRS",
    "DESKTOP_SESSION",
    "GNOME_DESKTOP_SESSION_ID",
    "KDE_FULL_SESSION",
    "KDE_SESSION_VERSION",
    "XMODIFIERS",
    "GTK_IM_MODULE",
    "QT_IM_MODULE",
    // WSL: wslview and xdg-open reach the Windows browser through these.
    "WSL_DISTRO_NAME",
    "WSL_INTEROP",
    // macOS `open`.
    "__CF_USER_TEXT_ENCODING",
];

/// Whether a child of `kind` may see the variable `name`. `PATH` is not
/// decided here: [`build`] sets it.
pub fn is_allowed(kind: ChildKind, name: &OsStr) -> bool {
    let Some(name) = name.to_str() else {
        return false;
    };
    match kind {
        // The requester's tool variables: one list, shared with the clients that send them.
        ChildKind::Tool => azbroker_proto::tool::is_tool_variable(name),
        ChildKind::Browser => {
            azbroker_proto::tool::SESSION_VARIABLES.contains(&name)
                || BROWSER.contains(&name)
                || LOCALE_PREFIXES
                    .iter()
                    .any(|prefix| name.starts_with(prefix))
        }
    }
}

/// The whole environment of a child of `kind`: the allowed variables of
/// `source`, then `path` as `PATH` (when there is one), and for tools the
/// daemon-child marker that makes a stray `az` shim refuse (see
/// `azbroker_proto::shim`).
pub fn build(
    kind: ChildKind,
    source: impl IntoIterator<Item = (OsString, OsString)>,
    path: Option<&OsStr>,
) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = source
        .into_iter()
        .filter(|(name, _)| is_allowed(kind, name))
        .collect();
    if let Some(path) = path {
        env.push(("PATH".into(), path.to_owned()));
    }
    if kind == ChildKind::Tool {
        env.push((shim::DAEMON_CHILD_ENV.into(), "1".into()));
    }
    env
}

/// The environment of a credential tool, built from what the requester sent
/// (see `azbroker_proto::tool`): its allowed variables, and its `PATH`, cleaned
/// of shim directories again (a client may not know this daemon's shim) with
/// the executable's own directory first, so `sh -c "az ..."` runs exactly the
/// `az` the requester would have run. Never the daemon's own environment: the
/// daemon was started by whichever client came first.
pub fn tool_env(spec: &ToolSpec) -> Vec<(OsString, OsString)> {
    let requested = spec
        .env
        .iter()
        .filter(|(name, _)| name != "PATH")
        .map(|(name, value)| (OsString::from(name), OsString::from(value)));
    let mut dirs: Vec<std::path::PathBuf> = Vec::new();
    if let Some(dir) = spec
        .executable
        .as_deref()
        .and_then(|exe| Path::new(exe).parent())
    {
        dirs.push(dir.to_path_buf());
    }
    if let Some(path) = spec.var("PATH") {
        let (cleaned, _) = shim::path_without_shims(OsStr::new(path), own_shim().as_deref());
        for dir in std::env::split_paths(&cleaned) {
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
    }
    let path = std::env::join_paths(dirs).ok();
    build(ChildKind::Tool, requested, path.as_deref())
}

/// The shim binary installed beside this daemon, whose links mark a shim
/// directory even without the installer's marker file.
fn own_shim() -> Option<std::path::PathBuf> {
    let exe = std::env::current_exe().ok()?;
    Some(exe.parent()?.join(shim::SHIM_BINARY)).filter(|p| p.is_file())
}

/// The environment of the browser opener, from the daemon's own (its `PATH`
/// as is: a browser may be a script that needs it).
pub fn browser_env() -> Vec<(OsString, OsString)> {
    build(
        ChildKind::Browser,
        std::env::vars_os(),
        std::env::var_os("PATH").as_deref(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source() -> Vec<(OsString, OsString)> {
        [
            ("HOME", "/home/u"),
            ("LANG", "C.UTF-8"),
            ("LC_TIME", "de_DE.UTF-8"),
            ("https_proxy", "http://proxy:3128"),
            ("AZURE_CONFIG_DIR", "/home/u/.azure-work"),
            ("AZURE_CORE_COLLECT_TELEMETRY", "no"),
            ("DISPLAY", ":0"),
            ("PATH", "/should/not/pass/through"),
            ("AZURE_CLIENT_SECRET", "s3cret"),
            ("AZURE_CLIENT_CERTIFICATE_PASSWORD", "pw"),
            ("IDENTITY_HEADER", "h"),
            ("GITHUB_TOKEN", "t"),
            ("AZBROKER_DAEMON_CHILD", "0"),
            ("LD_PRELOAD", "/tmp/evil.so"),
        ]
        .into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect()
    }

    fn names(env: &[(OsString, OsString)]) -> Vec<&str> {
        env.iter().map(|(k, _)| k.to_str().unwrap()).collect()
    }

    #[test]
    fn a_tool_gets_only_allowed_variables_its_path_and_the_marker() {
        let env = build(ChildKind::Tool, source(), Some(OsStr::new("/usr/bin:/bin")));
        assert_eq!(
            names(&env),
            [
                "HOME",
                "LANG",
                "https_proxy",
                "AZURE_CONFIG_DIR",
                "AZURE_CORE_COLLECT_TELEMETRY",
                "PATH",
                "AZBROKER_DAEMON_CHILD",
            ]
        );
        assert!(env.contains(&("PATH".into(), "/usr/bin:/bin".into())));
        assert!(env.contains(&("AZBROKER_DAEMON_CHILD".into(), "1".into())));
    }

    #[test]
    fn a_browser_gets_the_display_but_no_tool_settings_or_marker() {
        let env = build(ChildKind::Browser, source(), None);
        assert_eq!(
            names(&env),
            ["HOME", "LANG", "LC_TIME", "https_proxy", "DISPLAY"]
        );
    }

    #[test]
    fn no_secret_passes_for_any_kind() {
        for kind in [ChildKind::Tool, ChildKind::Browser] {
            for secret in [
                "AZURE_CLIENT_SECRET",
                "AZURE_CLIENT_CERTIFICATE_PASSWORD",
                "IDENTITY_HEADER",
                "GITHUB_TOKEN",
                "LD_PRELOAD",
            ] {
                assert!(!is_allowed(kind, OsStr::new(secret)), "{secret}");
            }
        }
    }

    #[test]
    fn a_tool_runs_with_the_requesters_environment_and_its_own_directory_first() {
        let dir = tempfile::tempdir().unwrap();
        let shim_dir = dir.path().join("shim");
        std::fs::create_dir_all(&shim_dir).unwrap();
        std::fs::write(shim_dir.join(shim::MARKER_FILE), "").unwrap();
        let path = format!("/usr/bin:{}:/opt/az/bin:/bin", shim_dir.display());
        let spec = ToolSpec {
            executable: Some("/opt/az/bin/az".into()),
            profile_dir: Some("/home/u/.azure-work".into()),
            env: vec![
                ("HOME".into(), "/home/u".into()),
                ("AZURE_CONFIG_DIR".into(), "/home/u/.azure-work".into()),
                ("LD_PRELOAD".into(), "/tmp/evil.so".into()),
                ("PATH".into(), path),
            ],
        };
        let env = tool_env(&spec);
        assert_eq!(
            env,
            [
                ("HOME", "/home/u"),
                ("AZURE_CONFIG_DIR", "/home/u/.azure-work"),
                ("PATH", "/opt/az/bin:/usr/bin:/bin"),
                ("AZBROKER_DAEMON_CHILD", "1"),
            ]
            .map(|(k, v): (&str, &str)| (OsString::from(k), OsString::from(v)))
        );
    }
}
