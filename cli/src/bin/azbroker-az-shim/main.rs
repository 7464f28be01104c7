//! `azbroker-az-shim`, installed as `az` by `azbroker shim install`: answers
//! `az account get-access-token` from the broker, printing exactly what the
//! Azure CLI prints, and hands every other command, unchanged, to the real
//! `az` found later on `PATH`.
//!
//! Every Azure SDK and the Azure MCP Server spawn `az account get-access-token`
//! for developer tokens, so this is on the hot path of each of their calls:
//! no async runtime and no argument library, one blocking exchange with the
//! daemon (Hello and GetToken in one write), then exit.
//!
//! It never recurses (see `azbroker_proto::shim`): it refuses when started by
//! the daemon itself, and the real `az` it hands commands to is never a shim.

mod args;
mod caller;
mod output;

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};

use azbroker_client::azure_cli_profile as profile;
use azbroker_client::{blocking, connect, ClientError, ClientOptions};
use azbroker_proto::resource::{self, is_guid};
use azbroker_proto::{cloud, shim, ErrorKind, GetToken, TokenReply};

use args::{Parsed, TokenArgs};
use caller::Caller;

/// Set by a shim to its own pid when it execs the real `az`: the same pid
/// arriving in a shim again means the "real" `az` was another, unmarked shim.
const EXEC_MARKER_ENV: &str = "AZBROKER_SHIM_EXEC";

fn main() -> ExitCode {
    let caller = Caller::now();
    if std::env::var_os(shim::DAEMON_CHILD_ENV).is_some() {
        return error(
            &format!(
                "azbroker's az shim was started by azbrokerd itself ({} is set) and refuses: \
                 answering would ask the broker for the very token it is asking az for. \
                 Give azbrokerd a PATH where the real Azure CLI comes first, or mark this \
                 shim's directory with 'azbroker shim install --dir <its directory>'.",
                shim::DAEMON_CHILD_ENV
            ),
            1,
        );
    }
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    match args::parse(&args) {
        Parsed::Token(token_args) => token(token_args, &caller),
        Parsed::Usage(message, code) => error(&message, code),
        Parsed::PassThrough(what) => pass_through(&args, &what),
    }
}

fn token(args: TokenArgs, caller: &Caller) -> ExitCode {
    let mut options = match ClientOptions::from_env("azbroker-az-shim") {
        Ok(options) => options,
        Err(e) => return error(&format!("azbroker: {e}"), 1),
    };
    // `az account get-access-token` never opens a browser: the broker serves
    // the shim from logins that exist, or it fails fast and the caller's
    // chain moves on.
    options.chain.interactive = false;
    let scopes = if !args.scopes.is_empty() {
        args.scopes.clone()
    } else {
        let resource = args
            .resource
            .clone()
            .unwrap_or_else(|| default_resource(&options.chain.authority_host));
        vec![resource::resource_to_scope(&resource)]
    };

    // --subscription picks an account: its tenant (when it is not the default
    // account) goes with the request, its id into the output.
    let mut profile = None;
    let mut load_profile = || profile.get_or_insert_with(profile::load).clone();
    let mut tenant = args.tenant.clone();
    let mut subscription = None;
    if let Some(wanted) = &args.subscription {
        let subscriptions = load_profile();
        match profile::find(&subscriptions, wanted) {
            Some(found) => {
                if !found.is_default {
                    tenant = found.tenant_id.clone();
                }
                subscription = Some(found.id.clone());
            }
            None if is_guid(wanted) => subscription = Some(wanted.clone()),
            None => {
                return error(
                    &format!(
                        "Subscription '{wanted}' not found. Check the spelling and casing and try again."
                    ),
                    1,
                )
            }
        }
    }

    let request = GetToken {
        scopes,
        tenant: tenant.clone(),
        claims: None,
        min_validity_secs: 0,
    };
    let token = match get_token(options, request, caller) {
        Ok(token) => token,
        Err(e) => return broker_error(&e),
    };
    if args.quiet {
        return ExitCode::SUCCESS;
    }

    let (subscription, tenant) = labels(&args, &token, tenant, subscription, &mut load_profile);
    let json = output::token_json(&token, subscription.as_deref(), tenant.as_deref());
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(json.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => error(&format!("cannot write the token: {e}"), 1),
    }
}

/// The broker's token. A daemon is started only while the caller still waits
/// for the answer: the exchange itself never starts one (its retry after a
/// broken connection would, long after the caller gave up), and the start
/// asks the caller last, after the autostart lock.
fn get_token(
    mut options: ClientOptions,
    request: GetToken,
    caller: &Caller,
) -> Result<TokenReply, ClientError> {
    let may_start = std::mem::replace(&mut options.autostart, false);
    match blocking::get_token(&options, request.clone()) {
        Err(e @ ClientError::Connect(_)) if may_start => {
            if !matches!(connect::connect_blocking(&options.socket), Ok(None)) {
                return Err(e);
            }
            connect::start_locked_unless(
                &options.socket,
                options.start_with_managed_identity,
                &|| caller.gave_up(),
            )?;
            blocking::get_token(&options, request)
        }
        other => other,
    }
}

/// The output's `subscription` and `tenant`, as the CLI would fill them.
/// Tenant: `--tenant`, else the token's own `tid`, else the profile's default
/// account. Subscription (never with `--tenant`): `--subscription`, else
/// `AZURE_SUBSCRIPTION_ID`, else the profile's default, else none: the field
/// is left out, as the CLI leaves it out when it has no subscription to name.
fn labels(
    args: &TokenArgs,
    token: &TokenReply,
    request_tenant: Option<String>,
    subscription: Option<String>,
    load_profile: &mut dyn FnMut() -> Vec<profile::Subscription>,
) -> (Option<String>, Option<String>) {
    let tenant = request_tenant
        .or_else(|| output::token_tenant(token.access_token.expose()))
        .or_else(|| profile::default(&load_profile()).and_then(|s| s.tenant_id.clone()));
    if args.tenant.is_some() {
        return (None, tenant);
    }
    let subscription = subscription
        .or_else(|| {
            std::env::var("AZURE_SUBSCRIPTION_ID")
                .ok()
                .filter(|s| !s.trim().is_empty())
        })
        .or_else(|| profile::default(&load_profile()).map(|s| s.id.clone()));
    (subscription, tenant)
}

/// The CLI's default resource (its cloud's `active_directory_resource_id`).
fn default_resource(authority_host: &str) -> String {
    let cloud = cloud::by_authority(authority_host).unwrap_or(&cloud::AZURE_PUBLIC);
    format!("https://{}/", cloud.cli_default_resource)
}

/// The broker's answer in the CLI's words. "No credential available" reads
/// like the CLI's not-logged-in error, which the SDKs take as "try the next
/// credential"; real failures keep their text (with any AADSTS code).
fn broker_error(e: &ClientError) -> ExitCode {
    let mut text = String::new();
    match e {
        ClientError::Daemon(wire) => {
            if wire.kind == ErrorKind::CredentialUnavailable {
                text.push_str("Please run 'az login' to setup account.\nazbroker: ");
            }
            text.push_str(&wire.message);
            for reason in &wire.reasons {
                text.push_str(&format!("\n  - {}: {}", reason.credential, reason.reason));
            }
        }
        other => text.push_str(&format!("azbroker: {other}")),
    }
    error(&text, 1)
}

/// Runs the real `az` in this process's place: same arguments, same stdin,
/// stdout and stderr, its exit code.
fn pass_through(args: &[OsString], what: &str) -> ExitCode {
    let me = std::env::current_exe().ok();
    if std::env::var(EXEC_MARKER_ENV).ok() == Some(std::process::id().to_string()) {
        return error(
            &format!(
                "the 'az' after azbroker's az shim on PATH is another copy of the shim, not the \
                 Azure CLI; {what} needs the real Azure CLI"
            ),
            127,
        );
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let Some(real) = shim::find_real_az(&path, me.as_deref()) else {
        return error(
            &format!(
                "azbroker's az shim answers only 'az account get-access-token' (--resource or \
                 --scope, --tenant, --subscription, --output json); {what} needs the real Azure \
                 CLI, and there is none on PATH after the shim. Install it: \
                 https://learn.microsoft.com/cli/azure/install-azure-cli"
            ),
            127,
        );
    };
    let failure = Command::new(&real)
        .args(args)
        .env(EXEC_MARKER_ENV, std::process::id().to_string())
        .exec();
    error(&format!("cannot run {}: {failure}", real.display()), 126)
}

fn error(message: &str, code: u8) -> ExitCode {
    eprintln!("ERROR: {message}");
    ExitCode::from(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_and_defaults() {
        assert_eq!(
            resource::resource_to_scope("https://management.azure.com/"),
            "https://management.azure.com/.default"
        );
        assert_eq!(
            resource::resource_to_scope("api://app"),
            "api://app/.default"
        );
        assert_eq!(
            default_resource("https://login.microsoftonline.com"),
            "https://management.core.windows.net/"
        );
        assert!(is_guid("5f0c7a1e-0000-4000-8000-0000000050b5"));
        assert!(!is_guid("my-subscription"));
    }
}
