//! systemd user units: written, enabled and started through `systemctl --user`.

use std::path::{Path, PathBuf};

use super::units;
use super::ServiceCommand;

const SOCKET_UNIT: &str = "azbrokerd.socket";
const SERVICE_UNIT: &str = "azbrokerd.service";

pub fn run(command: ServiceCommand) -> Result<(), String> {
    let dir = unit_dir()?;
    match command {
        ServiceCommand::Install {
            no_start,
            managed_identity_endpoint,
        } => install(&dir, no_start, managed_identity_endpoint),
        ServiceCommand::Uninstall => uninstall(&dir),
        ServiceCommand::Status => status(&dir),
    }
}

/// `$XDG_CONFIG_HOME/systemd/user`, else `~/.config/systemd/user`.
fn unit_dir() -> Result<PathBuf, String> {
    let config = non_empty_var("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| non_empty_var("HOME").map(|home| PathBuf::from(home).join(".config")))
        .ok_or("cannot find the user's configuration directory: set HOME or XDG_CONFIG_HOME")?;
    Ok(config.join("systemd").join("user"))
}

fn non_empty_var(name: &str) -> Option<std::ffi::OsString> {
    std::env::var_os(name).filter(|v| !v.is_empty())
}

/// Why no user service manager can be used here, if it cannot.
fn no_user_manager() -> Option<String> {
    let out = std::process::Command::new("systemctl")
        .args(["--user", "is-system-running"])
        .stdin(std::process::Stdio::null())
        .output();
    match out {
        Err(e) => Some(format!("cannot run systemctl: {e}")),
        Ok(out) => {
            let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
            // Degraded (a failed unit elsewhere) still runs ours.
            match state.as_str() {
                "running" | "degraded" | "starting" | "initializing" => None,
                "" => Some(String::from_utf8_lossy(&out.stderr).trim().to_string()),
                other => Some(format!("the user service manager is {other}")),
            }
        }
    }
}

fn systemctl(args: &[&str]) -> Result<(), String> {
    let status = std::process::Command::new("systemctl")
        .arg("--user")
        .args(args)
        .stdin(std::process::Stdio::null())
        .status()
        .map_err(|e| format!("cannot run systemctl: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "systemctl --user {} failed ({status})",
            args.join(" ")
        ))
    }
}

fn install(dir: &Path, no_start: bool, managed_identity: bool) -> Result<(), String> {
    let daemon = crate::beside_this_program("azbrokerd")?;
    let socket = azbroker_proto::paths::socket_path(nix::unistd::geteuid().as_raw());
    let runtime_dir = non_empty_var("XDG_RUNTIME_DIR").map(PathBuf::from);
    let socket_spec = units::socket_spec(&socket, runtime_dir.as_deref())?;
    let daemon_spec = units::unit_path(&daemon)?;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    write_unit(&dir.join(SOCKET_UNIT), &units::socket_unit(&socket_spec))?;
    write_unit(
        &dir.join(SERVICE_UNIT),
        &units::service_unit(&daemon_spec, &socket_spec, managed_identity),
    )?;
    eprintln!(
        "azbroker: wrote {SOCKET_UNIT} and {SERVICE_UNIT} in {} (daemon {}, socket {})",
        dir.display(),
        daemon.display(),
        socket.display()
    );
    if no_start {
        eprintln!(
            "azbroker: start it with: systemctl --user daemon-reload && systemctl --user enable --now {SOCKET_UNIT}"
        );
        return Ok(());
    }
    if let Some(why) = no_user_manager() {
        return Err(format!(
            "no systemd user manager is running here ({why}); the units are written but not \
             started. Clients keep starting azbrokerd themselves meanwhile"
        ));
    }
    stop_unmanaged_daemon();
    systemctl(&["daemon-reload"])?;
    systemctl(&["enable", "--now", SOCKET_UNIT])?;
    eprintln!("azbroker: {SOCKET_UNIT} is listening; the first client starts azbrokerd");
    Ok(())
}

/// A daemon a client started would keep the socket path; it stops so that
/// the service manager's socket takes its place.
fn stop_unmanaged_daemon() {
    let Ok(options) = azbroker_client::ClientOptions::from_env("azbroker-cli") else {
        return;
    };
    let options = azbroker_client::ClientOptions {
        autostart: false,
        ..options
    };
    let request = azbroker_proto::Request::Shutdown;
    if azbroker_client::blocking::request(&options, &request).is_ok() {
        eprintln!(
            "azbroker: stopped the running azbrokerd; the service manager starts the next one"
        );
        wait_until_gone(&options.socket);
    }
}

/// Waits (at most 5 s) until no daemon holds the lock beside `socket`: a
/// socket file may outlive its daemon (the service manager's does).
fn wait_until_gone(socket: &Path) {
    use nix::fcntl::{Flock, FlockArg};
    let lock = azbroker_proto::paths::sibling(socket, "lock");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        let Ok(file) = std::fs::File::open(&lock) else {
            return;
        };
        if Flock::lock(file, FlockArg::LockSharedNonblock).is_ok() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Writes `text` to `path` (unit files hold no secret; the umask decides the mode).
fn write_unit(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn uninstall(dir: &Path) -> Result<(), String> {
    match no_user_manager() {
        None => {
            // Either may be stopped or disabled already; carry on regardless.
            let _ = systemctl(&["disable", "--now", SOCKET_UNIT, SERVICE_UNIT]);
        }
        Some(why) => {
            eprintln!("azbroker: no systemd user manager ({why}); only removing the files")
        }
    }
    let mut removed = 0;
    for unit in [SOCKET_UNIT, SERVICE_UNIT] {
        let path = dir.join(unit);
        match std::fs::remove_file(&path) {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot remove {}: {e}", path.display())),
        }
    }
    if no_user_manager().is_none() {
        systemctl(&["daemon-reload"])?;
    }
    eprintln!(
        "azbroker: removed {removed} unit file(s) from {}; clients start azbrokerd themselves again",
        dir.display()
    );
    Ok(())
}

fn status(dir: &Path) -> Result<(), String> {
    for unit in [SOCKET_UNIT, SERVICE_UNIT] {
        let path = dir.join(unit);
        let state = if path.is_file() { "written" } else { "missing" };
        println!("{unit:<18} {state:<8} {}", path.display());
    }
    match no_user_manager() {
        Some(why) => {
            println!("service manager    none ({why}); clients start azbrokerd themselves");
            Ok(())
        }
        None => {
            // systemctl's own summary: enabled, active, the last log lines.
            let _ = std::process::Command::new("systemctl")
                .args(["--user", "status", "--no-pager", SOCKET_UNIT, SERVICE_UNIT])
                .stdin(std::process::Stdio::null())
                .status();
            Ok(())
        }
    }
}
