//! `azbroker exec`: a command gets the broker's doors (the `az` shim first on
//! its `PATH`, optionally the managed-identity variables) and then *is* the
//! process `azbroker exec` was: same pid, its own stdio, signals and status.
//! And `azbroker mcp-config --name N -- COMMAND` writes that into an MCP
//! client's configuration.

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use crate::harness::{bin, python, python_script, wait_until, Sandbox};

const ARM: &str = "https://management.azure.com/.default";

#[test]
fn the_command_finds_the_shim_first_and_gets_the_brokers_token() {
    let mut sandbox = Sandbox::new();
    sandbox.start_daemon();
    // The shell script sees `az` resolve to the shim (installed on demand in
    // the user's data directory) and asks it the way the SDKs do.
    let out = sandbox
        .command("azbroker")
        .args(["exec", "--", "sh", "-c"])
        .arg(
            "command -v az >&2; \
             az account get-access-token --output json --resource https://management.azure.com/; \
             exit 7",
        )
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(7), "{stderr}");
    let shim_dir = std::fs::canonicalize(sandbox.dir.path())
        .unwrap()
        .join(".local/share/azbroker/shim");
    assert_eq!(stderr.trim(), shim_dir.join("az").display().to_string());
    let json: Value = serde_json::from_slice(&out.stdout).expect("the CLI's JSON");
    assert_eq!(
        json["accessToken"].as_str().unwrap(),
        sandbox.raw_token(ARM)
    );
    // The daemon ran the real (fake) `az` once; the shim never ran it.
    assert_eq!(sandbox.az.invocations(), 1);
}

#[test]
fn the_command_replaces_azbroker_exec_with_its_stdio_signals_and_status() {
    let sandbox = Sandbox::new();
    // Same process: the shell's `$$` is the pid this test started.
    let child = sandbox
        .command("azbroker")
        .args(["exec", "--", "sh", "-c", "echo $$; cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    child
        .stdin
        .as_ref()
        .unwrap()
        .write_all(b"through stdin\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("{pid}\nthrough stdin\n")
    );

    // A signal to that pid reaches the command itself.
    let mut child = sandbox
        .command("azbroker")
        .args(["exec", "--", "sleep", "30"])
        .spawn()
        .unwrap();
    let comm = format!("/proc/{}/comm", child.id());
    wait_until(Duration::from_secs(5), "sleep runs", || {
        std::fs::read_to_string(&comm).is_ok_and(|c| c.trim() == "sleep")
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(
        child.wait().unwrap().signal(),
        Some(nix::sys::signal::Signal::SIGTERM as i32)
    );

    // A command that does not exist: the shell's 127, and a clear message.
    let out = sandbox
        .command("azbroker")
        .args(["exec", "--", "azbroker-no-such-command"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(127));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot run azbroker-no-such-command"));
}

#[test]
fn with_managed_identity_an_sdk_in_the_command_gets_the_brokers_token() {
    let mut sandbox = Sandbox::new();
    sandbox.set("AZBROKER_MANAGED_IDENTITY", "1");
    sandbox.start_daemon();
    let out = sandbox
        .command("azbroker")
        .args(["exec", "--managed-identity", "--"])
        .arg(python())
        .arg(python_script("managed_identity.py"))
        .args(["token", ARM])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["token"].as_str().unwrap(), sandbox.raw_token(ARM));
}

#[test]
fn mcp_config_wraps_a_server_in_azbroker_exec_with_absolute_paths() {
    let mut sandbox = Sandbox::new();
    // The wrapped server registers its NAME with the daemon before it starts.
    sandbox.start_daemon();
    let out = sandbox
        .command("azbroker")
        .args(["mcp-config", "--client", "claude", "--name", "azure", "--"])
        .args(["sh", "-c", "exec cat"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    let server = &json["mcpServers"]["azure"];
    assert_eq!(
        server["command"].as_str().unwrap(),
        std::fs::canonicalize(bin("azbroker"))
            .unwrap()
            .to_str()
            .unwrap()
    );
    let args: Vec<&str> = server["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    // `sh` as found on this shell's PATH, by absolute path.
    let sh = std::env::split_paths(&sandbox.path_with_az())
        .map(|dir| dir.join("sh"))
        .find(|path| path.is_file())
        .unwrap();
    // The configuration's name is the exec NAME.
    assert_eq!(
        args,
        [
            "exec",
            "--name",
            "azure",
            "--",
            sh.to_str().unwrap(),
            "-c",
            "exec cat"
        ]
    );
    assert_eq!(
        server["env"]["PATH"].as_str().unwrap(),
        sandbox.path_with_az().to_str().unwrap()
    );

    // What an MCP client would run: the snippet's command line, in the
    // snippet's environment, speaks through the wrapped server's stdio.
    let mut command = sandbox.command_for(server["command"].as_str().unwrap());
    command
        .args(&args)
        .env("PATH", server["env"]["PATH"].as_str().unwrap())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let child = command.spawn().unwrap();
    child
        .stdin
        .as_ref()
        .unwrap()
        .write_all(b"{\"jsonrpc\":\"2.0\"}\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.stdout, b"{\"jsonrpc\":\"2.0\"}\n");

    // A server name is needed with a command, and a command with a name.
    assert_eq!(
        sandbox
            .command("azbroker")
            .args(["mcp-config", "--", "sh"])
            .output()
            .unwrap()
            .status
            .code(),
        Some(2)
    );
}
