//! Whether what sits at the socket path is this user's own daemon.
//!
//! The Hello carries the chain's secrets and the reply is a token the caller
//! will use, so every client checks before it sends a byte: the socket's
//! directory belongs to this user and nobody else may write to it, the socket
//! file (not followed if a symlink) belongs to this user, and the connected
//! peer runs as this user (`SO_PEERCRED`; `getpeereid` on macOS). A failed
//! check is final: no retry, no daemon started around it.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use azbroker_proto::paths::{socket_dir_problem, socket_path_problem, DirProblem};

use crate::ClientError;

/// What the socket path holds, once it passed the checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// No directory or no socket yet: nothing to connect to, a daemon may be started.
    Nothing,
    /// A socket file of this user in a directory of this user.
    Socket,
}

/// Checks the socket's directory and the socket file before connecting.
pub fn check_path(socket: &Path) -> Result<Found, ClientError> {
    if let Some(problem) = socket_path_problem(socket) {
        return Err(ClientError::Connect(problem));
    }
    if check_dir(socket_dir(socket)?)? == Found::Nothing {
        return Ok(Found::Nothing);
    }
    let meta = match std::fs::symlink_metadata(socket) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Found::Nothing),
        Err(e) => return Err(ClientError::Connect(format!("{}: {e}", socket.display()))),
    };
    let me = euid();
    if meta.file_type().is_symlink() {
        return Err(untrusted(
            socket,
            format!(
                "{} is a symbolic link, which azbrokerd's socket never is",
                socket.display()
            ),
            "Remove it after checking who created it",
        ));
    }
    if meta.uid() != me {
        return Err(untrusted(
            socket,
            format!(
                "{} belongs to {}, not to you ({})",
                socket.display(),
                user(meta.uid()),
                user(me)
            ),
            "Remove it after checking who created it (only root can put another user's \
             file in a directory of yours)",
        ));
    }
    Ok(Found::Socket)
}

/// Checks the socket's directory (`lstat`: a symlink is refused): it belongs to
/// this user and is not writable by group or others.
pub fn check_dir(dir: &Path) -> Result<Found, ClientError> {
    let meta = match std::fs::symlink_metadata(dir) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Found::Nothing),
        Err(e) => return Err(ClientError::Connect(format!("{}: {e}", dir.display()))),
    };
    let me = euid();
    let (why, fix) = match socket_dir_problem(meta.is_dir(), meta.uid(), meta.mode(), me) {
        None => return Ok(Found::Socket),
        Some(DirProblem::NotADirectory) => (
            format!(
                "{} is not a directory (a symbolic link is not followed)",
                dir.display()
            ),
            "Remove it, or choose another socket path with AZBROKER_SOCKET".to_string(),
        ),
        Some(DirProblem::NotOwned { owner }) => (
            format!(
                "the socket's directory {} belongs to {}, not to you ({}), so whoever \
                 listens there could pose as azbrokerd",
                dir.display(),
                user(owner),
                user(me)
            ),
            "Have it removed (its owner or an administrator), or choose a socket path of \
             your own with AZBROKER_SOCKET (or set XDG_RUNTIME_DIR)"
                .to_string(),
        ),
        Some(DirProblem::Writable { mode }) => (
            format!(
                "the socket's directory {} is writable by other users (mode {mode:04o}), \
                 who could replace the socket",
                dir.display()
            ),
            format!(
                "Make it private (chmod go-w {}), or choose another socket path with \
                 AZBROKER_SOCKET",
                dir.display()
            ),
        ),
    };
    Err(untrusted(dir, why, &fix))
}

/// Checks that the process at the other end of `stream` runs as this user.
pub fn check_peer(stream: impl AsFd, socket: &Path) -> Result<(), ClientError> {
    let me = euid();
    match peer_uid(stream) {
        Ok(uid) if uid == me => Ok(()),
        Ok(uid) => Err(untrusted(
            socket,
            format!(
                "the process listening on {} runs as {}, not as you ({}): it is not your azbrokerd",
                socket.display(),
                user(uid),
                user(me)
            ),
            "Find out who runs it; remove the socket and start azbrokerd again",
        )),
        Err(e) => Err(untrusted(
            socket,
            format!("cannot learn who listens on {}: {e}", socket.display()),
            "Choose another socket path with AZBROKER_SOCKET",
        )),
    }
}

/// Opens (creating as 0600) a lock file in a checked directory, never through
/// a symlink, and only when it is a regular file of this user.
pub fn open_lock_file(path: &Path) -> Result<File, ClientError> {
    let refuse =
        |why: String| ClientError::Untrusted(format!("refusing {}: {why}", path.display()));
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(nix::libc::ELOOP) {
                refuse("it is a symbolic link, which is never followed; remove it".into())
            } else {
                ClientError::Connect(format!("{}: {e}", path.display()))
            }
        })?;
    let meta = file
        .metadata()
        .map_err(|e| ClientError::Connect(format!("{}: {e}", path.display())))?;
    if !meta.is_file() || meta.uid() != euid() {
        return Err(refuse(format!(
            "it is not a regular file of yours ({})",
            user(euid())
        )));
    }
    Ok(file)
}

/// The directory the socket lives in.
pub fn socket_dir(socket: &Path) -> Result<&Path, ClientError> {
    socket
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .ok_or_else(|| {
            ClientError::Connect(format!(
                "{} has no parent directory (use an absolute path)",
                socket.display()
            ))
        })
}

fn untrusted(path: &Path, why: String, fix: &str) -> ClientError {
    ClientError::Untrusted(format!(
        "refusing to talk to {}: {why}. {fix}.",
        path.display()
    ))
}

fn euid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// `uid 1000 (alice)`, or `uid 1000` when the name cannot be found.
fn user(uid: u32) -> String {
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(user)) => format!("uid {uid} ({})", user.name),
        _ => format!("uid {uid}"),
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn peer_uid(stream: impl AsFd) -> io::Result<u32> {
    let creds = nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials)?;
    Ok(creds.uid())
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn peer_uid(stream: impl AsFd) -> io::Result<u32> {
    let (uid, _gid) = nix::unistd::getpeereid(stream)?;
    Ok(uid.as_raw())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("azbroker-trust-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        dir
    }

    #[test]
    fn a_missing_directory_or_socket_is_nothing_to_connect_to() {
        let dir = scratch("missing");
        assert_eq!(
            check_path(&dir.join("none/azbroker.sock")).unwrap(),
            Found::Nothing
        );
        assert_eq!(
            check_path(&dir.join("azbroker.sock")).unwrap(),
            Found::Nothing
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn an_open_directory_or_a_symlinked_socket_is_refused() {
        let dir = scratch("open");
        let socket = dir.join("azbroker.sock");
        std::os::unix::fs::symlink("/nonexistent", &socket).unwrap();
        let refused = check_path(&socket).unwrap_err().to_string();
        assert!(refused.contains("symbolic link"), "{refused}");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let refused = check_path(&socket).unwrap_err().to_string();
        assert!(
            refused.contains("writable by other users") && refused.contains("0777"),
            "{refused}"
        );
        // Readable is fine.
        std::fs::remove_file(&socket).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(check_path(&socket).unwrap(), Found::Nothing);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn lock_files_are_never_opened_through_a_symlink() {
        let dir = scratch("lock");
        let target = dir.join("target");
        let lock = dir.join("azbroker.sock.autostart.lock");
        std::os::unix::fs::symlink(&target, &lock).unwrap();
        let refused = open_lock_file(&lock).unwrap_err().to_string();
        assert!(refused.contains("symbolic link"), "{refused}");
        assert!(!target.exists());
        std::fs::remove_file(&lock).unwrap();
        open_lock_file(&lock).unwrap();
        assert_eq!(
            std::fs::metadata(&lock).unwrap().permissions().mode() & 0o777,
            0o600
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_peer_must_be_this_user() {
        let (ours, _theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        check_peer(&ours, Path::new("/x.sock")).unwrap();
    }
}
