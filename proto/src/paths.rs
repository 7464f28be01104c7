//! Where a client and the daemon meet: the socket path, and the files beside it.
//!
//! Part of the contract because both sides must compute the same answer from
//! the same environment, and judge the socket's directory by the same rule.
//! The daemon creates the directory; a client checks it before it connects.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// File name of the socket inside its directory.
pub const SOCKET_FILE: &str = "azbroker.sock";

/// The longest socket path the kernel takes: `sun_path` holds 108 bytes on
/// Linux (104 on the BSDs and macOS), the terminating NUL included.
pub const MAX_SOCKET_PATH_LEN: usize = if cfg!(any(target_os = "linux", target_os = "android")) {
    107
} else {
    103
};

/// The socket path: `$AZBROKER_SOCKET`, else `$XDG_RUNTIME_DIR/azbroker/azbroker.sock`,
/// else `$XDG_STATE_HOME/azbroker/azbroker.sock` (`~/.local/state/azbroker/...`),
/// and only when none of those is set `<temp dir>/azbroker-<uid>/azbroker.sock`.
///
/// The fallback is the user's own state directory, not the shared, sticky
/// temp dir, where another user could create the directory first (clients
/// refuse a directory that is not theirs, but that would still lock them out).
pub fn socket_path(uid: u32) -> PathBuf {
    socket_path_from(non_empty_var, uid)
}

/// [`socket_path`] as a pure function of an environment lookup.
pub fn socket_path_from(var: impl Fn(&str) -> Option<OsString>, uid: u32) -> PathBuf {
    if let Some(path) = var("AZBROKER_SOCKET") {
        return PathBuf::from(path);
    }
    if let Some(runtime) = var("XDG_RUNTIME_DIR") {
        return PathBuf::from(runtime).join("azbroker").join(SOCKET_FILE);
    }
    if let Some(state) = state_dir_from(&var) {
        return state.join(SOCKET_FILE);
    }
    std::env::temp_dir()
        .join(format!("azbroker-{uid}"))
        .join(SOCKET_FILE)
}

/// Why `socket` cannot be a Unix socket path (too long), with the fix; both
/// sides say it before the kernel would answer with a bare `EINVAL`.
pub fn socket_path_problem(socket: &Path) -> Option<String> {
    let len = socket.as_os_str().len();
    (len > MAX_SOCKET_PATH_LEN).then(|| {
        format!(
            "the socket path {} is {len} bytes long; a Unix socket path may have at most \
             {MAX_SOCKET_PATH_LEN}. Set AZBROKER_SOCKET to a shorter path (or XDG_RUNTIME_DIR, \
             e.g. /run/user/<uid>)",
            socket.display()
        )
    })
}

/// What is wrong with an existing directory as the home of the socket (and of
/// the lock files beside it), by the rule both sides apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirProblem {
    /// A symbolic link (not followed) or anything else but a directory.
    NotADirectory,
    /// Owned by another user, who could replace the socket.
    NotOwned { owner: u32 },
    /// Writable by group or others (`mode` is its permission bits), who could
    /// replace the socket. Merely readable is fine: the socket is 0600 and
    /// clients check the peer.
    Writable { mode: u32 },
}

/// Judges a directory from its `lstat` (`is_dir` false for a symlink).
pub fn socket_dir_problem(is_dir: bool, owner: u32, mode: u32, me: u32) -> Option<DirProblem> {
    if !is_dir {
        Some(DirProblem::NotADirectory)
    } else if owner != me {
        Some(DirProblem::NotOwned { owner })
    } else if mode & 0o022 != 0 {
        Some(DirProblem::Writable {
            mode: mode & 0o7777,
        })
    } else {
        None
    }
}

/// A lock file beside the socket: `<socket>.<suffix>`, so two daemons with
/// different sockets never contend.
pub fn sibling(socket: &Path, suffix: &str) -> PathBuf {
    let mut name = socket.file_name().unwrap_or_default().to_os_string();
    name.push(".");
    name.push(suffix);
    socket.with_file_name(name)
}

/// The user's state directory for the daemon's log (and the fallback socket):
/// `$XDG_STATE_HOME/azbroker`, else `~/.local/state/azbroker`.
pub fn state_dir() -> Option<PathBuf> {
    state_dir_from(&|name: &str| non_empty_var(name))
}

fn state_dir_from(var: &impl Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    if let Some(state) = var("XDG_STATE_HOME") {
        return Some(PathBuf::from(state).join("azbroker"));
    }
    let home = var("HOME")?;
    Some(PathBuf::from(home).join(".local/state/azbroker"))
}

fn non_empty_var(name: &str) -> Option<OsString> {
    std::env::var_os(name).filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path_with(vars: &[(&str, &str)]) -> PathBuf {
        socket_path_from(
            |name| {
                vars.iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| OsString::from(v))
            },
            1000,
        )
    }

    #[test]
    fn socket_path_prefers_explicit_then_runtime_then_state_dir() {
        let all = [
            ("AZBROKER_SOCKET", "/s/a.sock"),
            ("XDG_RUNTIME_DIR", "/run/user/1000"),
            ("XDG_STATE_HOME", "/h/state"),
            ("HOME", "/h"),
        ];
        assert_eq!(path_with(&all), Path::new("/s/a.sock"));
        assert_eq!(
            path_with(&all[1..]),
            Path::new("/run/user/1000/azbroker/azbroker.sock")
        );
        assert_eq!(
            path_with(&all[2..]),
            Path::new("/h/state/azbroker/azbroker.sock")
        );
        assert_eq!(
            path_with(&all[3..]),
            Path::new("/h/.local/state/azbroker/azbroker.sock")
        );
        // Nothing private to go by: the temp dir, which clients verify.
        assert_eq!(
            path_with(&[]),
            std::env::temp_dir().join("azbroker-1000/azbroker.sock")
        );
    }

    #[test]
    fn too_long_socket_paths_are_named_with_the_fix() {
        let fits = PathBuf::from(format!("/{}", "a".repeat(MAX_SOCKET_PATH_LEN - 1)));
        assert_eq!(socket_path_problem(&fits), None);
        let long = PathBuf::from(format!("/{}", "a".repeat(MAX_SOCKET_PATH_LEN)));
        let problem = socket_path_problem(&long).unwrap();
        assert!(problem.contains(&long.display().to_string()), "{problem}");
        assert!(
            problem.contains(&format!("{} bytes", MAX_SOCKET_PATH_LEN + 1)),
            "{problem}"
        );
        assert!(problem.contains("AZBROKER_SOCKET"), "{problem}");
    }

    #[test]
    fn socket_dirs_must_be_ours_and_closed_to_writers() {
        let me = 1000;
        assert_eq!(socket_dir_problem(true, me, 0o700, me), None);
        // Readable by others is fine: the socket is 0600 and the peer is checked.
        assert_eq!(socket_dir_problem(true, me, 0o755, me), None);
        assert_eq!(
            socket_dir_problem(true, me, 0o775, me),
            Some(DirProblem::Writable { mode: 0o775 })
        );
        assert_eq!(
            socket_dir_problem(true, me, 0o1777, me),
            Some(DirProblem::Writable { mode: 0o1777 })
        );
        assert_eq!(
            socket_dir_problem(true, 65534, 0o700, me),
            Some(DirProblem::NotOwned { owner: 65534 })
        );
        assert_eq!(
            socket_dir_problem(false, me, 0o700, me),
            Some(DirProblem::NotADirectory)
        );
    }
}
