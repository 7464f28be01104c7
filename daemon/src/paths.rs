//! Keeps the daemon's files private: the socket's directory belongs to the
//! daemon's user and only it may write there; the socket is 0600, the log and
//! lock files 0600 and never opened through a symlink.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use azbroker_proto::paths::{socket_dir_problem, DirProblem};

/// Creates `dir` (and missing parents) as 0700, or accepts an existing one
/// that belongs to us and that nobody else may write to. Never changes the
/// mode of a directory: one we did not create may be shared on purpose, so a
/// too open one is refused with the fix instead.
pub fn ensure_private_dir(dir: &Path) -> io::Result<()> {
    match fs::symlink_metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?,
        Err(e) => return Err(e),
        Ok(_) => {}
    }
    // Judged after creating too: another user may have won a race to it.
    let meta = fs::symlink_metadata(dir)?;
    let me = nix::unistd::geteuid().as_raw();
    match socket_dir_problem(meta.is_dir(), meta.uid(), meta.mode(), me) {
        None => Ok(()),
        Some(DirProblem::NotADirectory) => Err(io::Error::other(format!(
            "{} is not a directory (a symbolic link is not followed)",
            dir.display()
        ))),
        Some(DirProblem::NotOwned { owner }) => Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} belongs to uid {owner}, not to this user (uid {me}); refusing to put \
                 the socket there. Choose another directory (AZBROKER_SOCKET or --socket)",
                dir.display()
            ),
        )),
        Some(DirProblem::Writable { mode }) => Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is writable by other users (mode {mode:04o}), who could replace the \
                 socket; refusing it. Make it private (chmod go-w {}) or choose another \
                 directory (AZBROKER_SOCKET or --socket)",
                dir.display(),
                dir.display()
            ),
        )),
    }
}

/// Opens (creating as 0600) a file only this user may read. A symbolic link
/// there is not followed (`O_NOFOLLOW`), and only a regular file of ours is
/// accepted (`O_NONBLOCK` keeps a FIFO from hanging the open).
pub fn open_private(path: &Path, append: bool) -> io::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .append(append)
        .write(true)
        .read(!append)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| explain_symlink(path, e))?;
    let meta = file.metadata()?;
    let me = nix::unistd::geteuid().as_raw();
    if !meta.is_file() || meta.uid() != me {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is not a regular file of this user (uid {me}); refusing it",
                path.display()
            ),
        ));
    }
    // An existing file keeps its mode on open; make sure it is private.
    file.set_permissions(fs::Permissions::from_mode(0o600))?;
    Ok(file)
}

/// `O_NOFOLLOW` answers a symlink with `ELOOP`; say what it means.
fn explain_symlink(path: &Path, e: io::Error) -> io::Error {
    if e.raw_os_error() == Some(nix::libc::ELOOP) {
        io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is a symbolic link; refusing to follow it (remove it)",
                path.display()
            ),
        )
    } else {
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_private_dirs_and_never_changes_an_existing_dirs_mode() {
        let base = std::env::temp_dir().join(format!("azbroker-paths-{}", std::process::id()));
        let dir = base.join("a/b");
        ensure_private_dir(&dir).unwrap();
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        // Readable by others: accepted as it is.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        ensure_private_dir(&dir).unwrap();
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o777, 0o755);
        // Writable by others: refused, and left as it is.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
        let refused = ensure_private_dir(&dir).unwrap_err().to_string();
        assert!(refused.contains("writable by other users"), "{refused}");
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o777, 0o777);
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
        let file = dir.join("f");
        open_private(&file, true).unwrap();
        assert_eq!(fs::metadata(&file).unwrap().mode() & 0o777, 0o600);
        fs::remove_dir_all(base).unwrap();
    }

    #[test]
    fn private_files_are_never_opened_through_a_symlink() {
        let base = std::env::temp_dir().join(format!("azbroker-link-{}", std::process::id()));
        fs::create_dir_all(&base).unwrap();
        let target = base.join("target");
        let link = base.join("lock");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let refused = open_private(&link, false).unwrap_err().to_string();
        assert!(refused.contains("symbolic link"), "{refused}");
        assert!(!target.exists());
        let dir_link = base.join("dir-link");
        std::os::unix::fs::symlink(&base, &dir_link).unwrap();
        assert!(ensure_private_dir(&dir_link).is_err());
        fs::remove_dir_all(base).unwrap();
    }
}
