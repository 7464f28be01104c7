//! Socket activation: a listening socket handed over by the service manager
//! (systemd's `LISTEN_FDS` protocol, sd_listen_fds(3)) instead of one we bind.
//!
//! The manager owns that socket: it made the file and keeps listening between
//! daemon runs, so the daemon never binds, removes or replaces it.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

use nix::sys::socket::{getsockname, getsockopt, sockopt, SockType, UnixAddr};

/// The first passed descriptor (`SD_LISTEN_FDS_START`).
const FIRST_FD: RawFd = 3;

/// The variables of the protocol; removed once read so that nothing the
/// daemon runs (az, a browser opener) believes it was activated too.
const VARIABLES: [&str; 3] = ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"];

/// A validated activated socket.
#[derive(Debug)]
pub struct Activated {
    pub fd: OwnedFd,
    /// Where the manager bound it.
    pub path: PathBuf,
}

/// Takes the activated socket, if this process was given one, and removes the
/// protocol's variables from the environment.
///
/// Call it while the process has one thread: changing the environment is
/// unsound once another thread may read it.
pub fn take() -> Result<Option<Activated>, String> {
    let lookup = |name: &str| std::env::var(name).ok();
    let passed = passed_fds(lookup, std::process::id());
    for name in VARIABLES {
        std::env::remove_var(name);
    }
    if !passed? {
        return Ok(None);
    }
    // F_GETFD first: only an open descriptor may become an OwnedFd.
    nix::fcntl::fcntl(
        unsafe { BorrowedFd::borrow_raw(FIRST_FD) },
        nix::fcntl::FcntlArg::F_GETFD,
    )
    .map_err(|e| format!("socket activation: descriptor {FIRST_FD} is not open: {e}"))?;
    // SAFETY: the manager passed descriptor 3 to this process (LISTEN_PID is
    // ours) and nothing else in the process owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(FIRST_FD) };
    let path = check_listening_unix_stream(&fd)?;
    // Passed without close-on-exec; the tools the daemon runs must not hold it.
    nix::fcntl::fcntl(
        &fd,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .map_err(|e| format!("socket activation: cannot set close-on-exec: {e}"))?;
    Ok(Some(Activated { fd, path }))
}

/// Whether `LISTEN_PID`/`LISTEN_FDS` pass this process (`pid`) its socket.
/// Variables meant for another process (an inherited `LISTEN_PID`) mean no;
/// more than one socket is an error (the units azbroker writes pass one).
pub fn passed_fds(var: impl Fn(&str) -> Option<String>, pid: u32) -> Result<bool, String> {
    let (Some(listen_pid), Some(listen_fds)) = (var("LISTEN_PID"), var("LISTEN_FDS")) else {
        return Ok(false);
    };
    let number = |name: &str, value: &str| {
        value
            .trim()
            .parse::<u32>()
            .map_err(|_| format!("socket activation: {name}={value:?} is not a number"))
    };
    if number("LISTEN_PID", &listen_pid)? != pid {
        return Ok(false);
    }
    match number("LISTEN_FDS", &listen_fds)? {
        0 => Ok(false),
        1 => Ok(true),
        n => Err(format!(
            "socket activation passed {n} sockets{}; azbrokerd listens on exactly one \
             (one ListenStream= in azbrokerd.socket)",
            var("LISTEN_FDNAMES")
                .map(|names| format!(" ({names})"))
                .unwrap_or_default()
        )),
    }
}

/// The path of `fd` if it is a listening Unix stream socket bound to a file.
pub fn check_listening_unix_stream(fd: &OwnedFd) -> Result<PathBuf, String> {
    let fail = |what: String| format!("socket activation: descriptor {FIRST_FD} {what}");
    let kind =
        getsockopt(fd, sockopt::SockType).map_err(|e| fail(format!("is not a socket: {e}")))?;
    if kind != SockType::Stream {
        return Err(fail(format!(
            "is a {kind:?} socket, not a stream socket (ListenStream=)"
        )));
    }
    let listening =
        getsockopt(fd, sockopt::AcceptConn).map_err(|e| fail(format!("cannot be checked: {e}")))?;
    if !listening {
        return Err(fail("is not listening (Accept=no is needed)".into()));
    }
    let address: UnixAddr =
        getsockname(fd.as_raw_fd()).map_err(|e| fail(format!("is not a Unix socket: {e}")))?;
    address.path().map(PathBuf::from).ok_or_else(|| {
        fail(
            "is not bound to a file (an abstract or unnamed socket); clients connect to a path"
                .into(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};

    fn vars<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn only_variables_for_this_process_with_one_socket_activate_it() {
        let ours = [("LISTEN_PID", "42"), ("LISTEN_FDS", "1")];
        assert_eq!(passed_fds(vars(&ours), 42), Ok(true));
        // Inherited from a parent that was activated.
        assert_eq!(passed_fds(vars(&ours), 43), Ok(false));
        assert_eq!(passed_fds(vars(&[]), 42), Ok(false));
        assert_eq!(passed_fds(vars(&[("LISTEN_FDS", "1")]), 42), Ok(false));
        let none = [("LISTEN_PID", "42"), ("LISTEN_FDS", "0")];
        assert_eq!(passed_fds(vars(&none), 42), Ok(false));
    }

    #[test]
    fn two_sockets_or_junk_are_errors() {
        let two = [
            ("LISTEN_PID", "42"),
            ("LISTEN_FDS", "2"),
            ("LISTEN_FDNAMES", "a:b"),
        ];
        let err = passed_fds(vars(&two), 42).unwrap_err();
        assert!(err.contains("passed 2 sockets (a:b)"), "{err}");
        let junk = [("LISTEN_PID", "me"), ("LISTEN_FDS", "1")];
        assert!(passed_fds(vars(&junk), 42)
            .unwrap_err()
            .contains("LISTEN_PID=\"me\""));
    }

    #[test]
    fn a_listening_unix_stream_socket_is_accepted_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let fd = OwnedFd::from(listener);
        assert_eq!(check_listening_unix_stream(&fd).unwrap(), path);
    }

    #[test]
    fn datagram_unbound_and_non_socket_descriptors_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let datagram = UnixDatagram::bind(dir.path().join("d.sock")).unwrap();
        let err = check_listening_unix_stream(&OwnedFd::from(datagram)).unwrap_err();
        assert!(err.contains("not a stream socket"), "{err}");

        let (stream, _peer) = UnixStream::pair().unwrap();
        let err = check_listening_unix_stream(&OwnedFd::from(stream)).unwrap_err();
        assert!(err.contains("not listening"), "{err}");

        let file = std::fs::File::open("/dev/null").unwrap();
        let err = check_listening_unix_stream(&OwnedFd::from(file)).unwrap_err();
        assert!(err.contains("not a socket"), "{err}");
    }
}
