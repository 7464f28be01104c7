//! `azbroker service install|uninstall|status`: run `azbrokerd` under the
//! user's service manager (systemd user units with socket activation; a
//! launchd agent on macOS) instead of starting it from the first client.

#[cfg(target_os = "macos")]
mod launchd;
#[cfg(not(target_os = "macos"))]
mod systemd;
#[cfg(not(target_os = "macos"))]
mod units;

use std::process::ExitCode;

use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum ServiceCommand {
    /// Write the user units (azbrokerd.socket, azbrokerd.service) and start the socket.
    Install {
        /// Only write the units; start nothing.
        #[arg(long)]
        no_start: bool,
        /// The daemon also serves the managed-identity endpoint (`azbroker env
        /// --managed-identity`); a service-run daemon takes no wish from clients.
        #[arg(long)]
        managed_identity_endpoint: bool,
    },
    /// Stop and disable the units, then remove them.
    Uninstall,
    /// Where the units are and what the service manager says about them.
    Status,
}

pub fn run(command: ServiceCommand) -> ExitCode {
    #[cfg(target_os = "macos")]
    let result = launchd::run(command);
    #[cfg(not(target_os = "macos"))]
    let result = systemd::run(command);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => crate::fail(&e, 1),
    }
}
