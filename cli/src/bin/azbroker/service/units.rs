//! The text of the systemd user units, as pure functions of the paths they
//! name (so a test can read them without a service manager).
//!
//! `azbrokerd.socket` owns the socket: systemd creates it (0600, in a 0700
//! directory) and keeps listening while the daemon is stopped; the first
//! connection starts `azbrokerd.service`, which serves the passed socket.

use std::path::Path;

/// The socket as clients compute it when `XDG_RUNTIME_DIR` decides (`%t` is
/// that directory for a user manager; see `azbroker_proto::paths::socket_path`).
pub const RUNTIME_SOCKET: &str = "%t/azbroker/azbroker.sock";

/// How the units name the socket: [`RUNTIME_SOCKET`] when `socket` is the
/// runtime directory's default, else `socket` itself (e.g. `AZBROKER_SOCKET`).
pub fn socket_spec(socket: &Path, runtime_dir: Option<&Path>) -> Result<String, String> {
    let default = runtime_dir.map(|dir| dir.join("azbroker").join("azbroker.sock"));
    if default.as_deref() == Some(socket) {
        return Ok(RUNTIME_SOCKET.to_string());
    }
    unit_path(socket)
}

/// An absolute path written into a unit: `%` doubled (systemd's specifier
/// escape); whitespace, quotes, backslashes and control characters refused
/// rather than escaped, as no sensible install path has them.
pub fn unit_path(path: &Path) -> Result<String, String> {
    let text = path
        .to_str()
        .ok_or_else(|| format!("{} is not valid UTF-8", path.display()))?;
    if !path.is_absolute() {
        return Err(format!("{text} is not an absolute path"));
    }
    if text
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '"' | '\'' | '\\'))
    {
        return Err(format!(
            "{text:?} has a space, quote, backslash or control character; install azbroker \
             under a plain path to run it as a service"
        ));
    }
    Ok(text.replace('%', "%%"))
}

/// `azbrokerd.socket`, listening on `socket` (a [`socket_spec`]).
pub fn socket_unit(socket: &str) -> String {
    format!(
        "\
# Written by `azbroker service install`; `azbroker service uninstall` removes it.
[Unit]
Description=azbroker token broker socket

[Socket]
ListenStream={socket}
SocketMode=0600
DirectoryMode=0700
RemoveOnStop=yes

[Install]
WantedBy=sockets.target
"
    )
}

/// `azbrokerd.service`, running `daemon` (a [`unit_path`]) on `socket`, with
/// the managed-identity endpoint when `managed_identity` says so.
///
/// Hardening that leaves alone what the daemon's tools need (az, azd, pwsh
/// and the browser opener read and write the user's home, reach the network
/// and may use namespaces, as Chromium's sandbox does): no ProtectHome,
/// PrivateTmp, ProtectSystem, RestrictNamespaces or MemoryDenyWriteExecute
/// (.NET and Node JIT). `KillMode=process`: a browser the daemon opened for a
/// login belongs to the user and outlives a daemon restart.
pub fn service_unit(daemon: &str, socket: &str, managed_identity: bool) -> String {
    let endpoint = if managed_identity {
        " --managed-identity-endpoint"
    } else {
        ""
    };
    format!(
        "\
# Written by `azbroker service install`; `azbroker service uninstall` removes it.
[Unit]
Description=azbroker: Entra ID tokens for every tool of this user session
Requires=azbrokerd.socket
After=azbrokerd.socket

[Service]
Type=notify
ExecStart={daemon} --foreground --socket {socket}{endpoint}
Restart=on-failure
KillMode=process
UMask=0077
LimitCORE=0
NoNewPrivileges=yes
LockPersonality=yes
RestrictSUIDSGID=yes
RestrictRealtime=yes
SystemCallArchitectures=native

[Install]
Also=azbrokerd.socket
"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn the_runtime_default_socket_is_written_as_percent_t() {
        let runtime = PathBuf::from("/run/user/1000");
        let socket = runtime.join("azbroker/azbroker.sock");
        assert_eq!(
            socket_spec(&socket, Some(&runtime)).unwrap(),
            RUNTIME_SOCKET
        );
        // AZBROKER_SOCKET elsewhere: the path itself, specifiers escaped.
        let custom = PathBuf::from("/home/u/100%/a.sock");
        assert_eq!(
            socket_spec(&custom, Some(&runtime)).unwrap(),
            "/home/u/100%%/a.sock"
        );
        assert_eq!(
            socket_spec(&socket, None).unwrap(),
            "/run/user/1000/azbroker/azbroker.sock"
        );
    }

    #[test]
    fn paths_a_unit_cannot_hold_plainly_are_refused() {
        for bad in [
            "relative/azbrokerd",
            "/opt/my tools/azbrokerd",
            "/a\"b",
            "/a\nb",
        ] {
            assert!(unit_path(Path::new(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_units_activate_the_daemon_on_the_clients_socket() {
        let socket = socket_unit(RUNTIME_SOCKET);
        for line in [
            "ListenStream=%t/azbroker/azbroker.sock",
            "SocketMode=0600",
            "DirectoryMode=0700",
            "WantedBy=sockets.target",
        ] {
            assert!(socket.lines().any(|l| l == line), "{line} in\n{socket}");
        }
        let service = service_unit("/opt/azbroker/bin/azbrokerd", RUNTIME_SOCKET, false);
        for line in [
            "Type=notify",
            "ExecStart=/opt/azbroker/bin/azbrokerd --foreground --socket %t/azbroker/azbroker.sock",
            "Requires=azbrokerd.socket",
            "NoNewPrivileges=yes",
            "Also=azbrokerd.socket",
        ] {
            assert!(service.lines().any(|l| l == line), "{line} in\n{service}");
        }
        let with_endpoint = service_unit("/a/azbrokerd", RUNTIME_SOCKET, true);
        assert!(with_endpoint.lines().any(|l| l
            == "ExecStart=/a/azbrokerd --foreground --socket %t/azbroker/azbroker.sock \
                --managed-identity-endpoint"));
        for breaks_the_tools in [
            "ProtectHome",
            "PrivateTmp",
            "PrivateNetwork",
            "ProtectSystem",
        ] {
            assert!(!service.contains(breaks_the_tools), "{breaks_the_tools}");
        }
    }
}
