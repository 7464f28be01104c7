//! Where a client and the daemon meet: the socket path, and the files beside it.
//!
//! Part of the contract because both sides must compute the same answer from
//! the same environment. The daemon creates and verifies the directory; a
//! client only reads these paths.

use std::path::PathBuf;

/// File name of the socket inside its directory.
pub const SOCKET_FILE: &str = "azbroker.sock";

/// The socket path: `$AZBROKER_SOCKET`, else `$XDG_RUNTIME_DIR/azbroker/azbroker.sock`,
/// else `<temp dir>/azbroker-<uid>/azbroker.sock`.
pub fn socket_path(uid: u32) -> PathBuf {
    if let Some(path) = non_empty_var("AZBROKER_SOCKET") {
        return PathBuf::from(path);
    }
    if let Some(runtime) = non_empty_var("XDG_RUNTIME_DIR") {
        return PathBuf::from(runtime).join("azbroker").join(SOCKET_FILE);
    }
    std::env::temp_dir()
        .join(format!("azbroker-{uid}"))
        .join(SOCKET_FILE)
}

/// A lock file beside the socket: `<socket>.<suffix>`, so two daemons with
/// different sockets never contend.
pub fn sibling(socket: &std::path::Path, suffix: &str) -> PathBuf {
    let mut name = socket.file_name().unwrap_or_default().to_os_string();
    name.push(".");
    name.push(suffix);
    socket.with_file_name(name)
}

/// The user's state directory for the daemon's log:
/// `$XDG_STATE_HOME/azbroker`, else `~/.local/state/azbroker`.
pub fn state_dir() -> Option<PathBuf> {
    if let Some(state) = non_empty_var("XDG_STATE_HOME") {
        return Some(PathBuf::from(state).join("azbroker"));
    }
    let home = non_empty_var("HOME")?;
    Some(PathBuf::from(home).join(".local/state/azbroker"))
}

fn non_empty_var(name: &str) -> Option<std::ffi::OsString> {
    std::env::var_os(name).filter(|v| !v.is_empty())
}
