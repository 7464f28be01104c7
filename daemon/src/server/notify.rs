//! Readiness and stopping reported to the service manager (sd_notify(3)):
//! one datagram to `$NOTIFY_SOCKET` when that is set, else nothing. With
//! `Type=notify`, systemd counts the daemon as started only after `READY=1`.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;

/// Where to report, read once at start (and removed from the environment so
/// the tools the daemon runs do not report in its name).
#[derive(Debug, Clone)]
pub struct Notifier {
    socket: Option<NotifySocket>,
}

#[derive(Debug, Clone)]
enum NotifySocket {
    Path(PathBuf),
    /// `@name`: Linux's abstract namespace.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    Abstract(Vec<u8>),
}

impl Notifier {
    /// Reads and removes `NOTIFY_SOCKET`. Call it while the process has one thread.
    pub fn from_env() -> Notifier {
        let value = std::env::var_os("NOTIFY_SOCKET");
        std::env::remove_var("NOTIFY_SOCKET");
        Notifier::at(value.map(PathBuf::from))
    }

    /// A notifier that reports to `socket` (`None`: nowhere).
    pub fn at(socket: Option<PathBuf>) -> Notifier {
        let socket = socket
            .filter(|path| !path.as_os_str().is_empty())
            .map(|path| {
                #[cfg(any(target_os = "linux", target_os = "android"))]
                {
                    use std::os::unix::ffi::OsStrExt;
                    if let Some(name) = path.as_os_str().as_bytes().strip_prefix(b"@") {
                        return NotifySocket::Abstract(name.to_vec());
                    }
                }
                NotifySocket::Path(path)
            });
        Notifier { socket }
    }

    /// `READY=1`: the socket is served from now on.
    pub fn ready(&self, status: &str) {
        self.send(&format!(
            "READY=1\nMAINPID={}\nSTATUS={status}\n",
            std::process::id()
        ));
    }

    /// `STOPPING=1`: shutting down on request.
    pub fn stopping(&self) {
        self.send("STOPPING=1\n");
    }

    /// Best effort: a manager that cannot be told is logged, not fatal.
    fn send(&self, message: &str) {
        let Some(socket) = &self.socket else {
            return;
        };
        if let Err(e) = send_to(socket, message.as_bytes()) {
            tracing::warn!(error = %e, "cannot notify the service manager");
        }
    }
}

fn send_to(socket: &NotifySocket, message: &[u8]) -> std::io::Result<()> {
    let datagram = UnixDatagram::unbound()?;
    match socket {
        NotifySocket::Path(path) => datagram.send_to(message, path)?,
        #[cfg(any(target_os = "linux", target_os = "android"))]
        NotifySocket::Abstract(name) => {
            #[cfg(target_os = "android")]
            use std::os::android::net::SocketAddrExt;
            #[cfg(target_os = "linux")]
            use std::os::linux::net::SocketAddrExt;
            let address = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            datagram.send_to_addr(message, &address)?
        }
    };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_and_stopping_reach_the_notify_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let manager = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier::at(Some(path));
        notifier.ready("serving");
        notifier.stopping();
        let mut buf = [0u8; 256];
        let n = manager.recv(&mut buf).unwrap();
        let ready = String::from_utf8_lossy(&buf[..n]).into_owned();
        assert!(ready.starts_with("READY=1\n"), "{ready}");
        assert!(ready.contains(&format!("MAINPID={}\n", std::process::id())));
        assert!(ready.contains("STATUS=serving\n"));
        let n = manager.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1\n");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn an_abstract_notify_socket_is_reached_too() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("azbroker-notify-test-{}", std::process::id());
        let address = std::os::unix::net::SocketAddr::from_abstract_name(&name).unwrap();
        let manager = UnixDatagram::bind_addr(&address).unwrap();
        Notifier::at(Some(PathBuf::from(format!("@{name}")))).ready("up");
        let mut buf = [0u8; 256];
        let n = manager.recv(&mut buf).unwrap();
        assert!(buf[..n].starts_with(b"READY=1\n"));
    }
}
