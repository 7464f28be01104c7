//! Reads a small file that a client names (a certificate, a federated token
//! file) or that the daemon keeps (the accounts file) without letting the file
//! hang the daemon.
//!
//! A path may name a FIFO, a device or a socket. Opening a FIFO for reading
//! blocks until some writer appears, and a device may never stop giving bytes:
//! either once froze the daemon. So the path is opened non-blocking
//! (`O_NONBLOCK`: a FIFO opens at once; `O_NOCTTY`: a terminal never becomes
//! the daemon's), the *opened* descriptor must be a regular file (`fstat`, so
//! swapping the path after a check gains nothing), and at most `max_len` bytes
//! are read. A `stat` before the open refuses most non-files without opening
//! them at all (opening some devices has side effects). Symlinks are followed:
//! Kubernetes projects its token file through one.
//!
//! A regular file on a local disk reads at once, but a hung network file
//! system blocks even that, so [`read`] runs on the blocking pool, at most
//! [`MAX_READING`] files at a time, and gives up after [`READ_TIMEOUT`]: a
//! stuck file system costs a few blocking threads, never a runtime worker or
//! the whole pool.

use std::fmt;
use std::fs::{File, FileType, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;
use std::time::Duration;

use tokio::sync::Semaphore;

/// Files read at once on the blocking pool; a read stuck in the kernel keeps
/// its slot, so stuck reads never hold more threads than this.
pub const MAX_READING: usize = 8;
/// How long [`read`] waits (for a slot and for the read) before giving up.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

static READING: Semaphore = Semaphore::const_new(MAX_READING);

/// Why a file was not read. Shown after the path, e.g.
/// `AZURE_FEDERATED_TOKEN_FILE /x: it is a FIFO (named pipe), not a regular file`.
#[derive(Debug)]
pub enum FileError {
    /// Opening or reading failed (`NotFound`, permissions, ...).
    Io(std::io::Error),
    /// The path names something else than a regular file: what it is.
    NotRegular(&'static str),
    /// The file holds more than this many bytes.
    TooLarge(u64),
    /// The read did not finish within [`READ_TIMEOUT`].
    TimedOut,
}

impl FileError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, FileError::Io(e) if e.kind() == std::io::ErrorKind::NotFound)
    }
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FileError::Io(e) => write!(f, "{e}"),
            FileError::NotRegular(kind) => write!(f, "it is {kind}, not a regular file"),
            FileError::TooLarge(limit) => write!(f, "it is larger than {}", size(*limit)),
            FileError::TimedOut => write!(
                f,
                "it could not be read within {} s (a hung file system?)",
                READ_TIMEOUT.as_secs()
            ),
        }
    }
}

impl std::error::Error for FileError {}

/// Reads at most `max_len` bytes of the regular file at `path`, on the
/// blocking pool, bounded in concurrency and time (see the module's doc).
pub async fn read(path: &Path, max_len: u64) -> Result<Vec<u8>, FileError> {
    let path = path.to_path_buf();
    let work = async move {
        let permit = READING.acquire().await.expect("never closed");
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            read_blocking(&path, max_len)
        })
        .await
    };
    match tokio::time::timeout(READ_TIMEOUT, work).await {
        Ok(Ok(result)) => result,
        Ok(Err(join)) => Err(FileError::Io(std::io::Error::other(join.to_string()))),
        Err(_) => Err(FileError::TimedOut),
    }
}

/// [`read`] for a caller already on a thread of its own (it may block there).
pub fn read_blocking(path: &Path, max_len: u64) -> Result<Vec<u8>, FileError> {
    let before = std::fs::metadata(path).map_err(FileError::Io)?;
    refuse_unless_regular(before.file_type())?;
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY)
        .open(path)
        .map_err(FileError::Io)?;
    let opened = file.metadata().map_err(FileError::Io)?;
    refuse_unless_regular(opened.file_type())?;
    read_capped(file, max_len)
}

fn read_capped(file: File, max_len: u64) -> Result<Vec<u8>, FileError> {
    let mut bytes = Vec::new();
    file.take(max_len + 1)
        .read_to_end(&mut bytes)
        .map_err(FileError::Io)?;
    if bytes.len() as u64 > max_len {
        return Err(FileError::TooLarge(max_len));
    }
    Ok(bytes)
}

fn refuse_unless_regular(kind: FileType) -> Result<(), FileError> {
    match not_regular(kind) {
        Some(what) => Err(FileError::NotRegular(what)),
        None => Ok(()),
    }
}

/// What a file type is, in words, unless it is a regular file.
fn not_regular(kind: FileType) -> Option<&'static str> {
    if kind.is_file() {
        None
    } else if kind.is_fifo() {
        Some("a FIFO (named pipe)")
    } else if kind.is_char_device() {
        Some("a character device")
    } else if kind.is_block_device() {
        Some("a block device")
    } else if kind.is_socket() {
        Some("a socket")
    } else if kind.is_dir() {
        Some("a directory")
    } else if kind.is_symlink() {
        Some("a symbolic link")
    } else {
        Some("not a file")
    }
}

/// `1 MiB`, `64 KiB`, or bytes.
fn size(bytes: u64) -> String {
    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * KIB;
    if bytes >= MIB && bytes.checked_rem(MIB) == Some(0) {
        format!("{} MiB", bytes / MIB)
    } else if bytes >= KIB && bytes.checked_rem(KIB) == Some(0) {
        format!("{} KiB", bytes / KIB)
    } else {
        format!("{bytes} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(result: Result<Vec<u8>, FileError>) -> String {
        result.expect_err("must be refused").to_string()
    }

    #[tokio::test]
    async fn reads_a_regular_file_and_a_symlink_to_one() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "abc").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert_eq!(read(&file, 3).await.unwrap(), b"abc");
        assert_eq!(read(&link, 3).await.unwrap(), b"abc");
    }

    #[tokio::test]
    async fn refuses_a_fifo_without_waiting_for_a_writer() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert_eq!(
            message(read(&fifo, 10).await),
            "it is a FIFO (named pipe), not a regular file"
        );
        // The open itself must not block: this thread would hang if it did.
        assert!(matches!(
            read_blocking(&fifo, 10),
            Err(FileError::NotRegular("a FIFO (named pipe)"))
        ));
    }

    #[tokio::test]
    async fn refuses_devices_directories_and_sockets() {
        assert_eq!(
            message(read(Path::new("/dev/zero"), 10).await),
            "it is a character device, not a regular file"
        );
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            message(read(dir.path(), 10).await),
            "it is a directory, not a regular file"
        );
        let socket = dir.path().join("socket");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        assert_eq!(
            message(read(&socket, 10).await),
            "it is a socket, not a regular file"
        );
    }

    #[tokio::test]
    async fn caps_the_size_and_names_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("big");
        std::fs::write(&file, vec![b'a'; 64 * 1024 + 1]).unwrap();
        assert_eq!(
            message(read(&file, 64 * 1024).await),
            "it is larger than 64 KiB"
        );
        assert_eq!(read(&file, 64 * 1024 + 1).await.unwrap().len(), 65537);
        assert!(read(&dir.path().join("missing"), 10)
            .await
            .unwrap_err()
            .is_not_found());
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(size(1024 * 1024), "1 MiB");
        assert_eq!(size(64 * 1024), "64 KiB");
        assert_eq!(size(1000), "1000 bytes");
    }

    #[tokio::test]
    async fn many_fifos_at_once_do_not_exhaust_the_blocking_pool() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let reads: Vec<_> = (0..600)
            .map(|_| {
                tokio::spawn({
                    let fifo = fifo.clone();
                    async move { read(&fifo, 10).await }
                })
            })
            .collect();
        // Each is refused by its stat; none waits for a writer (a wait
        // would end in TimedOut, not NotRegular).
        for handle in reads {
            assert!(matches!(
                handle.await.unwrap(),
                Err(FileError::NotRegular(_))
            ));
        }
    }
}
