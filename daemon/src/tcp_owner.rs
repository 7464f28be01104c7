//! Which user owns the other end of a loopback TCP connection, and the one
//! rule every loopback listener of the daemon applies with it: a connection
//! is served only when its socket belongs to the daemon's own user.
//!
//! A TCP listener, unlike a Unix socket, tells nothing about its peer. But on
//! loopback both ends live in this kernel, and on Linux `/proc/net/tcp` (and
//! `tcp6`) lists every socket of this network namespace with its owner's uid:
//! the client's socket is the row whose local address is our peer's and whose
//! remote address is our own.
//!
//! Elsewhere (macOS) there is no such table, so no connection can be refused
//! by owner; each listener's own secret is the guard there (the
//! managed-identity header; the login's `state`, which macOS shows only to the
//! process's own user and root, unlike Linux's world-readable
//! `/proc/*/cmdline`).

#[cfg(target_os = "linux")]
use std::io::{self, BufRead, BufReader};
#[cfg(target_os = "linux")]
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
#[cfg(target_os = "linux")]
use std::path::Path;

use tokio::net::TcpStream;

/// The peer's socket as the kernel's table lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerSocket {
    pub uid: u32,
    /// The socket's inode: which process holds it can be found from it.
    pub inode: u64,
}

/// The peer's socket when the peer of `stream` belongs to this process's
/// (effective) user; else why not, in words without anything the peer chose
/// (uids only). Call it before reading a byte of the connection.
#[cfg(target_os = "linux")]
pub async fn require_own_user(stream: &TcpStream) -> Result<Option<PeerSocket>, String> {
    let peer = stream.peer_addr().map_err(|e| e.to_string())?;
    let local = stream.local_addr().map_err(|e| e.to_string())?;
    let me = nix::unistd::geteuid().as_raw();
    // Reading /proc is blocking file I/O, and the table can be long.
    let owner = tokio::task::spawn_blocking(move || owner_of(peer, local))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot read the kernel's socket table: {e}"))?;
    match owner {
        Some(socket) if socket.uid == me => Ok(Some(socket)),
        Some(socket) => Err(format!(
            "the peer belongs to uid {}, not to uid {me}",
            socket.uid
        )),
        None => Err("the peer's socket is not in the kernel's socket table".into()),
    }
}

/// Without a socket table every peer passes (see the module's note).
#[cfg(not(target_os = "linux"))]
pub async fn require_own_user(_: &TcpStream) -> Result<Option<PeerSocket>, String> {
    Ok(None)
}

/// Longest [`holder`] looks: a user with a great many open files makes the
/// scan slow, and a peer must not wait on it for long.
#[cfg(target_os = "linux")]
const HOLDER_BUDGET: std::time::Duration = std::time::Duration::from_secs(2);

/// The process of this user that holds `socket`, found by its inode among
/// the open files of the user's processes (the first that holds it: a socket
/// shared across a fork belongs to both). `None` when none does any more, or
/// the scan ran out of [`HOLDER_BUDGET`] (logged: the peer is then asked for
/// as a process under no exec). Blocking: many small reads of `/proc`.
#[cfg(target_os = "linux")]
pub fn holder(socket: PeerSocket) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let started = std::time::Instant::now();
    let link = format!("socket:[{}]", socket.inode);
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        if started.elapsed() > HOLDER_BUDGET {
            tracing::warn!(
                budget_secs = HOLDER_BUDGET.as_secs(),
                "cannot tell which process holds a loopback peer's socket in time; it is asked for as a process under no azbroker exec"
            );
            return None;
        }
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        // Another user's process cannot hold our user's socket; its fds are closed to us anyway.
        if entry.metadata().map(|m| m.uid()).ok() != Some(socket.uid) {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|target| target.as_os_str() == link.as_str())
            {
                return Some(pid);
            }
        }
    }
    None
}

#[cfg(not(target_os = "linux"))]
pub fn holder(_: PeerSocket) -> Option<u32> {
    None
}

/// The socket at `peer` that is connected to `local`, or `None` when no such
/// socket is listed (the peer already went away).
#[cfg(target_os = "linux")]
pub fn owner_of(peer: SocketAddr, local: SocketAddr) -> io::Result<Option<PeerSocket>> {
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        match find_in_table(Path::new(table), peer, local) {
            Ok(Some(socket)) => return Ok(Some(socket)),
            Ok(None) => {}
            // A kernel without IPv6 has no tcp6 table.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

#[cfg(target_os = "linux")]
fn find_in_table(
    table: &Path,
    peer: SocketAddr,
    local: SocketAddr,
) -> io::Result<Option<PeerSocket>> {
    let reader = BufReader::new(std::fs::File::open(table)?);
    // The first line is the column header.
    for line in reader.lines().skip(1) {
        if let Some(socket) = match_row(&line?, peer, local) {
            return Ok(Some(socket));
        }
    }
    Ok(None)
}

#[cfg(target_os = "linux")]
/// A row is `sl local rem st tx:rx tr:when retrnsmt uid timeout inode ...`;
/// returns the uid and inode when `local` and `rem` are `peer` and `ours`.
fn match_row(row: &str, peer: SocketAddr, ours: SocketAddr) -> Option<PeerSocket> {
    let mut fields = row.split_whitespace();
    let _slot = fields.next()?;
    let row_local = parse_address(fields.next()?)?;
    let row_remote = parse_address(fields.next()?)?;
    if !same(row_local, peer) || !same(row_remote, ours) {
        return None;
    }
    let uid = fields.nth(4)?.parse().ok()?;
    let inode = fields.nth(1)?.parse().ok()?;
    Some(PeerSocket { uid, inode })
}

#[cfg(target_os = "linux")]
/// `0100007F:1F90` (IPv4) or 32 hex digits `:PORT` (IPv6). The kernel prints
/// each 32-bit word of the address as a native-endian integer, so the bytes
/// come back with `to_ne_bytes`; the port is printed in host order.
fn parse_address(text: &str) -> Option<SocketAddr> {
    let (addr, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(
            u32::from_str_radix(addr, 16).ok()?.to_ne_bytes(),
        )),
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_mut(4).enumerate() {
                let word = u32::from_str_radix(addr.get(i * 8..i * 8 + 8)?, 16).ok()?;
                chunk.copy_from_slice(&word.to_ne_bytes());
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(target_os = "linux")]
/// Equal addresses, counting an IPv4-mapped IPv6 address as its IPv4 one.
fn same(a: SocketAddr, b: SocketAddr) -> bool {
    fn canonical(ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map(IpAddr::V4)
                .unwrap_or(IpAddr::V6(v6)),
            v4 => v4,
        }
    }
    a.port() == b.port() && canonical(a.ip()) == canonical(b.ip())
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn parses_kernel_rows() {
        let local = format!(
            "{:08X}",
            u32::from_ne_bytes(Ipv4Addr::new(127, 0, 0, 1).octets())
        );
        let row = format!(
            "   3: {local}:D431 {local}:A0F5 01 00000000:00000000 00:00000000 00000000  1000        0 123456 1 0000000000000000 20 4 30 10 -1"
        );
        assert_eq!(
            match_row(&row, addr("127.0.0.1:54321"), addr("127.0.0.1:41205")),
            Some(PeerSocket {
                uid: 1000,
                inode: 123456
            })
        );
        assert_eq!(
            match_row(&row, addr("127.0.0.1:41205"), addr("127.0.0.1:54321")),
            None
        );
        let mapped: String = Ipv4Addr::new(127, 0, 0, 1)
            .to_ipv6_mapped()
            .octets()
            .chunks(4)
            .map(|w| format!("{:08X}", u32::from_ne_bytes(w.try_into().unwrap())))
            .collect();
        let row6 = format!(
            "   0: {mapped}:D431 {mapped}:A0F5 01 00000000:00000000 00:00000000 00000000     0        0 1 1 0 20 4 30 10 -1"
        );
        assert_eq!(
            match_row(&row6, addr("127.0.0.1:54321"), addr("127.0.0.1:41205")),
            Some(PeerSocket { uid: 0, inode: 1 })
        );
        assert_eq!(
            match_row("garbage", addr("127.0.0.1:1"), addr("127.0.0.1:2")),
            None
        );
    }

    #[test]
    fn finds_the_owner_of_a_real_loopback_connection() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (_server, peer) = listener.accept().unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        let me = nix::unistd::geteuid().as_raw();
        let socket = owner_of(peer, listener.local_addr().unwrap())
            .unwrap()
            .expect("listed");
        assert_eq!(socket.uid, me);
        // This process holds the client's end.
        assert_eq!(holder(socket), Some(std::process::id()));
        drop(client);
    }
}
