//! `scripts/install`: every program lands side by side, and the installed CLI
//! starts the installed daemon beside it (not one found elsewhere).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;

use crate::harness::{bin, wait_until, Sandbox};

const PROGRAMS: [&str; 5] = [
    "azbrokerd",
    "azbroker",
    "azbroker-diagnose",
    "azbroker-az-shim",
    "azbroker-mcp",
];

#[test]
fn install_puts_every_program_side_by_side_and_the_cli_starts_the_daemon_beside_it() {
    let mut sandbox = Sandbox::new();
    let prefix = sandbox.dir.path().join("prefix");
    let built = bin("azbroker").parent().unwrap().to_path_buf();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/install");
    succeeds(
        sandbox
            .command_for(&script)
            .arg("--prefix")
            .arg(&prefix)
            .arg("--from")
            .arg(&built),
    );
    let installed = prefix.join("bin");
    for program in PROGRAMS {
        let path = installed.join(program);
        let mode = std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755, "{}", path.display());
        assert_eq!(
            std::fs::read(&path).unwrap(),
            std::fs::read(built.join(program)).unwrap(),
            "{program} is not the built program"
        );
    }
    // The installed CLI autostarts the daemon beside it (PATH has no azbrokerd).
    sandbox.unset("AZBROKER_NO_AUTOSTART");
    let out = sandbox
        .command_for(installed.join("azbroker"))
        .args(["token", "--scope", "https://management.azure.com/.default"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        sandbox.log()
    );
    wait_until(std::time::Duration::from_secs(10), "the daemon", || {
        !sandbox.daemon_pids().is_empty()
    });
    let pid = sandbox.daemon_pids()[0];
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    assert_eq!(exe, installed.join("azbrokerd"));
    // The installed diagnose is the one `azbroker diagnose` runs.
    succeeds(
        sandbox
            .command_for(installed.join("azbroker"))
            .args(["diagnose", "--help"]),
    );
    sandbox.cli(&["stop"]);
}

#[test]
fn completions_are_scripts_of_each_shell_that_know_the_commands() {
    let sandbox = Sandbox::new();
    for shell in ["bash", "zsh", "fish"] {
        let out = sandbox.cli(&["completions", shell]);
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8(out.stdout).unwrap();
        for command in ["token", "status", "diagnose", "completions"] {
            assert!(script.contains(command), "{shell} lacks {command}");
        }
    }
    // The bash script is valid bash.
    let script = sandbox.dir.path().join("azbroker.bash");
    std::fs::write(&script, sandbox.cli(&["completions", "bash"]).stdout).unwrap();
    succeeds(std::process::Command::new("bash").arg("-n").arg(&script));
    // An unknown shell is a usage error.
    assert_eq!(sandbox.cli(&["completions", "tcsh"]).status.code(), Some(2));
}

/// Runs `command` to completion; it must succeed.
fn succeeds(command: &mut std::process::Command) {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `azbroker token` parses its own arguments apart from the other commands
/// (its start-up is per token): its help and usage errors are those of the
/// whole command line's `token`.
#[test]
fn token_alone_has_the_usage_of_the_whole_command_line() {
    let sandbox = Sandbox::new();
    let text = |out: &Output| {
        String::from_utf8_lossy(&[&out.stdout[..], &out.stderr[..]].concat()).into_owned()
    };
    let help = sandbox.cli(&["token", "--help"]);
    assert!(help.status.success());
    let through_tree = sandbox.cli(&["help", "token"]);
    assert!(through_tree.status.success());
    assert_eq!(text(&help), text(&through_tree));
    assert!(
        text(&help).contains("Usage: azbroker token [OPTIONS] --scope <SCOPE>"),
        "{}",
        text(&help)
    );
    // Usage errors show the usage; a bad value names the option (clap's way).
    for (args, complaint, usage) in [
        (&["token"][..], "--scope <SCOPE>", true),
        (
            &["token", "--scope", "x", "--bogus"][..],
            "unexpected argument '--bogus'",
            true,
        ),
        (
            &["token", "--scope", "x", "--min-validity", "soon"][..],
            "invalid value 'soon' for '--min-validity <SECS>'",
            false,
        ),
    ] {
        let out = sandbox.cli(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(text(&out).contains(complaint), "{args:?}: {}", text(&out));
        assert_eq!(
            text(&out).contains("Usage: azbroker token"),
            usage,
            "{args:?}: {}",
            text(&out)
        );
    }
}
