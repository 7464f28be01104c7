//! macOS: a launchd agent that keeps `azbrokerd` running for the user.
//! UNTESTED: written from launchd.plist(5), never run on a Mac by this
//! project's tests. launchd's own socket passing (launch_activate_socket) is
//! not implemented, so the agent starts the daemon at login and it binds its
//! socket itself.

use std::path::{Path, PathBuf};

use super::ServiceCommand;

const LABEL: &str = "dev.azbroker.azbrokerd";

pub fn run(command: ServiceCommand) -> Result<(), String> {
    let home = std::env::var_os("HOME").ok_or("HOME is not set")?;
    let plist = PathBuf::from(home)
        .join("Library/LaunchAgents")
        .join(format!("{LABEL}.plist"));
    let domain = format!("gui/{}", nix::unistd::geteuid().as_raw());
    match command {
        ServiceCommand::Install {
            no_start,
            managed_identity_endpoint,
        } => {
            let daemon = crate::beside_this_program("azbrokerd")?;
            let socket = azbroker_proto::paths::socket_path(nix::unistd::geteuid().as_raw());
            if let Some(dir) = plist.parent() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            }
            std::fs::write(
                &plist,
                agent_plist(&daemon, &socket, managed_identity_endpoint),
            )
            .map_err(|e| format!("cannot write {}: {e}", plist.display()))?;
            eprintln!("azbroker: wrote {} (untested on macOS)", plist.display());
            if !no_start {
                launchctl(&["bootstrap", &domain, &plist.to_string_lossy()])?;
            }
            Ok(())
        }
        ServiceCommand::Uninstall => {
            let _ = launchctl(&["bootout", &format!("{domain}/{LABEL}")]);
            match std::fs::remove_file(&plist) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(format!("cannot remove {}: {e}", plist.display()))
                }
                _ => Ok(()),
            }
        }
        ServiceCommand::Status => {
            let state = if plist.is_file() {
                "written"
            } else {
                "missing"
            };
            println!("{LABEL} {state} {}", plist.display());
            let _ = launchctl(&["print", &format!("{domain}/{LABEL}")]);
            Ok(())
        }
    }
}

fn launchctl(args: &[&str]) -> Result<(), String> {
    let status = std::process::Command::new("launchctl")
        .args(args)
        .status()
        .map_err(|e| format!("cannot run launchctl: {e}"))?;
    status
        .success()
        .then_some(())
        .ok_or_else(|| format!("launchctl {} failed ({status})", args.join(" ")))
}

/// The agent's property list: run `daemon --socket socket` (logging to its
/// file in the state directory) at login, and again if it fails.
pub fn agent_plist(daemon: &Path, socket: &Path, managed_identity: bool) -> String {
    let escape = |path: &Path| {
        path.to_string_lossy()
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
  <key>Label</key><string>{LABEL}</string>
  <key>ProgramArguments</key>
  <array>
    <string>{daemon}</string>
    <string>--socket</string>
    <string>{socket}</string>{endpoint}
  </array>
  <key>RunAtLoad</key><true/>
  <key>KeepAlive</key><dict><key>SuccessfulExit</key><false/></dict>
  <key>ProcessType</key><string>Background</string>
</dict>
</plist>
"#,
        endpoint = if managed_identity {
            "\n    <string>--managed-identity-endpoint</string>"
        } else {
            ""
        },
        daemon = escape(daemon),
        socket = escape(socket),
    )
}
