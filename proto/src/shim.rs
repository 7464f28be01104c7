//! The `az` shim's recursion guard, shared by the shim and the daemon.
//!
//! The shim (`azbroker-az-shim`, installed as `az`) answers
//! `az account get-access-token` from the broker, and the daemon's AzureCli
//! credential itself runs `az account get-access-token`. Were the daemon's
//! `az` the shim, a token request would call itself. Two independent rules
//! prevent that:
//! 1. the daemon gives its child processes a `PATH` without shim directories
//!    ([`path_without_shims`]), so the tools it runs are the real ones;
//! 2. it marks those children with [`DAEMON_CHILD_ENV`], and a shim that is
//!    reached anyway (say, copied by hand into `/usr/local/bin`) refuses.
//!
//! A shim directory is one holding [`MARKER_FILE`] (written by
//! `azbroker shim install`), or one whose `az` is the very file of the shim
//! binary (a link to it, or a hard link).

use std::ffi::{OsStr, OsString};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Set (to `1`) for every child process of the daemon.
pub const DAEMON_CHILD_ENV: &str = "AZBROKER_DAEMON_CHILD";
/// File name of the marker `azbroker shim install` writes beside `az`.
pub const MARKER_FILE: &str = ".azbroker-shim";
/// File name of the shim binary, beside `azbroker` and `azbrokerd`.
pub const SHIM_BINARY: &str = "azbroker-az-shim";

/// Whether `dir` is a shim directory (see the module docs). `shim_binary` is
/// the shim's own file when known, to recognise an unmarked link to it.
pub fn is_shim_dir(dir: &Path, shim_binary: Option<&Path>) -> bool {
    is_shim_dir_of(dir, file_id(shim_binary))
}

/// The device and inode of `path`, which identify a file whatever links name it.
fn file_id(path: Option<&Path>) -> Option<(u64, u64)> {
    let meta = std::fs::metadata(path?).ok()?;
    Some((meta.dev(), meta.ino()))
}

/// [`is_shim_dir`] with the shim binary's file already identified: a walk
/// over a whole `PATH` looks at the binary once, not once per entry.
fn is_shim_dir_of(dir: &Path, shim: Option<(u64, u64)>) -> bool {
    if dir.join(MARKER_FILE).is_file() {
        return true;
    }
    shim.is_some_and(|shim| file_id(Some(&dir.join("az"))) == Some(shim))
}

/// `path` (a `PATH` value) without shim directories and without relative
/// entries (which name a different directory in every working directory, and
/// credential tools run from `/bin`). Returns the new value and the shim
/// directories it removed.
pub fn path_without_shims(path: &OsStr, shim_binary: Option<&Path>) -> (OsString, Vec<PathBuf>) {
    let mut removed = Vec::new();
    let shim_id = file_id(shim_binary);
    let kept: Vec<PathBuf> = std::env::split_paths(path)
        .filter(|dir| dir.is_absolute())
        .filter(|dir| {
            let shim = is_shim_dir_of(dir, shim_id);
            if shim {
                removed.push(dir.clone());
            }
            !shim
        })
        .collect();
    // Entries came out of a PATH, so they hold no separator and join cleanly.
    let joined = std::env::join_paths(kept).unwrap_or_default();
    (joined, removed)
}

/// The first executable `az` on `path` that is not a shim: the real Azure CLI.
pub fn find_real_az(path: &OsStr, shim_binary: Option<&Path>) -> Option<PathBuf> {
    let shim_id = file_id(shim_binary);
    std::env::split_paths(path)
        .filter(|dir| dir.is_absolute() && !is_shim_dir_of(dir, shim_id))
        .map(|dir| dir.join("az"))
        .find(|az| is_executable_file(az))
}

fn is_executable_file(path: &Path) -> bool {
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    struct Dirs(PathBuf);

    impl Dirs {
        fn new(name: &str) -> Dirs {
            let base =
                std::env::temp_dir().join(format!("azbroker-shim-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&base);
            std::fs::create_dir_all(&base).unwrap();
            Dirs(base)
        }

        fn dir_with_az(&self, name: &str) -> PathBuf {
            let dir = self.0.join(name);
            std::fs::create_dir_all(&dir).unwrap();
            let az = dir.join("az");
            std::fs::write(&az, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(&az, std::fs::Permissions::from_mode(0o755)).unwrap();
            dir
        }
    }

    impl Drop for Dirs {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn join(dirs: &[&Path]) -> OsString {
        std::env::join_paths(dirs).unwrap()
    }

    #[test]
    fn marked_and_linked_shim_dirs_are_removed_from_path() {
        let dirs = Dirs::new("path");
        let marked = dirs.dir_with_az("marked");
        std::fs::write(marked.join(MARKER_FILE), "").unwrap();
        let binary = dirs.dir_with_az("bin").join("az");
        let linked = dirs.0.join("linked");
        std::fs::create_dir_all(&linked).unwrap();
        std::os::unix::fs::symlink(&binary, linked.join("az")).unwrap();
        let real = dirs.dir_with_az("real");

        let path = join(&[&marked, &linked, Path::new("relative"), &real]);
        let (cleaned, removed) = path_without_shims(&path, Some(&binary));
        assert_eq!(cleaned, join(&[&real]));
        assert_eq!(removed, [marked.clone(), linked.clone()]);
        assert_eq!(find_real_az(&path, Some(&binary)), Some(real.join("az")));
        // Without knowing the binary, only the marker identifies a shim.
        assert_eq!(find_real_az(&path, None), Some(linked.join("az")));
    }

    #[test]
    fn no_real_az_is_none() {
        let dirs = Dirs::new("none");
        let marked = dirs.dir_with_az("marked");
        std::fs::write(marked.join(MARKER_FILE), "").unwrap();
        let not_executable = dirs.0.join("plain");
        std::fs::create_dir_all(&not_executable).unwrap();
        std::fs::write(not_executable.join("az"), "").unwrap();
        assert_eq!(find_real_az(&join(&[&marked, &not_executable]), None), None);
    }
}
