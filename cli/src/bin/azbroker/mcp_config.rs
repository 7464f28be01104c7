//! `azbroker mcp-config`: the JSON that registers `azbroker-mcp`, or any
//! other MCP server run through `azbroker exec` (`--wrap`), with an MCP client.

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

/// Which client's configuration format to print.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum McpClient {
    /// VS Code: `.vscode/mcp.json` (workspace) or the user `mcp.json` (`servers`).
    Vscode,
    /// Claude Desktop: `claude_desktop_config.json` (`mcpServers`).
    Claude,
    /// The common `mcpServers` form (Claude Code's `.mcp.json`, Cursor, ...).
    Generic,
}

/// Variables that change what the server does, copied into the snippet when
/// set here: an MCP client starts servers with its own (often minimal)
/// environment. Never a secret: `AZURE_CLIENT_SECRET` and the like stay out.
const FORWARDED: &[&str] = &[
    "AZBROKER_SOCKET",
    "AZBROKER_CA_FILE",
    "AZBROKER_ARM_ENDPOINT",
    "AZURE_CLOUD",
    "AZURE_TOKEN_CREDENTIALS",
    "AZURE_MCP_INCLUDE_PRODUCTION_CREDENTIALS",
    "AZURE_MCP_ONLY_USE_BROKER_CREDENTIAL",
    "AZURE_SUBSCRIPTION_ID",
];

/// The snippet for `client`, with `azbroker-mcp` by absolute path when it is
/// installed beside this `azbroker`.
pub fn snippet(client: McpClient) -> Value {
    entry(
        client,
        "azbroker",
        server_command(),
        Vec::new(),
        forwarded_env(),
    )
}

/// The snippet that starts `command` through `azbroker exec` under `name`,
/// every program by absolute path. The server also gets this shell's `PATH`:
/// an MCP client's is often minimal, and interpreters (`npx` needs `node`)
/// and tools must be found as they are here.
/// What a wrapped server's `azbroker exec` line carries besides its NAME.
#[derive(Debug, Default)]
pub struct Limits {
    pub allow: Vec<String>,
    pub deny: Vec<String>,
    pub managed_identity: bool,
}

pub fn wrapped_snippet(
    client: McpClient,
    name: &str,
    command: &[OsString],
    limits: &Limits,
) -> Result<Value, String> {
    if name.trim().is_empty() {
        return Err("--name must not be empty".into());
    }
    let (program, rest) = command
        .split_first()
        .ok_or("no command to wrap: azbroker mcp-config --name NAME -- COMMAND [ARGS...]")?;
    let program = absolute_program(program, std::env::var_os("PATH").as_deref())?;
    let azbroker = std::env::current_exe()
        .and_then(std::fs::canonicalize)
        .map_err(|e| format!("cannot find this program's location: {e}"))?;
    // The configuration's name is the exec NAME: audit and policy say it.
    let mut args = vec![json!("exec"), json!("--name"), json!(name)];
    for pattern in &limits.allow {
        args.extend([json!("--allow-scope"), json!(pattern)]);
    }
    for pattern in &limits.deny {
        args.extend([json!("--deny-scope"), json!(pattern)]);
    }
    if limits.managed_identity {
        args.push(json!("--managed-identity"));
    }
    args.push(json!("--"));
    args.push(json!(program.to_string_lossy()));
    args.extend(rest.iter().map(|arg| json!(arg.to_string_lossy())));
    let mut env = forwarded_env();
    if let Some(path) = std::env::var("PATH").ok().filter(|p| !p.is_empty()) {
        env.insert("PATH".into(), Value::String(path));
    }
    Ok(entry(
        client,
        name,
        azbroker.to_string_lossy().into_owned(),
        args,
        env,
    ))
}

/// `program` as an absolute path: a path is made absolute, a bare name is
/// looked up on `path` as a shell would.
fn absolute_program(program: &OsString, path: Option<&std::ffi::OsStr>) -> Result<PathBuf, String> {
    let given = Path::new(program);
    if given.components().count() > 1 || given.is_absolute() {
        // Absolute, not resolved: a multi-call program needs its own name.
        let absolute =
            std::path::absolute(given).map_err(|e| format!("{}: {e}", given.display()))?;
        return match absolute.is_file() {
            true => Ok(absolute),
            false => Err(format!("{} is not a file", absolute.display())),
        };
    }
    path.into_iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(given))
        .find(|candidate| {
            candidate
                .metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .ok_or_else(|| format!("{} not found on PATH", given.display()))
}

/// Variables of this shell that change what a server does (see [`FORWARDED`]).
fn forwarded_env() -> Map<String, Value> {
    FORWARDED
        .iter()
        .filter_map(|name| {
            let value = std::env::var(name).ok().filter(|v| !v.is_empty())?;
            Some((name.to_string(), Value::String(value)))
        })
        .collect()
}

/// One server entry in `client`'s format.
fn entry(
    client: McpClient,
    name: &str,
    command: String,
    args: Vec<Value>,
    env: Map<String, Value>,
) -> Value {
    let mut server = Map::new();
    if client != McpClient::Claude {
        server.insert("type".into(), json!("stdio"));
    }
    server.insert("command".into(), json!(command));
    server.insert("args".into(), Value::Array(args));
    if !env.is_empty() {
        server.insert("env".into(), Value::Object(env));
    }
    let servers_key = match client {
        McpClient::Vscode => "servers",
        McpClient::Claude | McpClient::Generic => "mcpServers",
    };
    json!({ servers_key: { name: server } })
}

fn server_command() -> String {
    let beside: Option<PathBuf> = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.canonicalize().ok())
        .and_then(|exe| exe.parent().map(|dir| dir.join("azbroker-mcp")))
        .filter(|path| path.is_file());
    match beside {
        Some(path) => path.to_string_lossy().into_owned(),
        None => "azbroker-mcp".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_names_are_found_on_the_path_and_paths_made_absolute() {
        let dir = tempfile::tempdir().unwrap();
        let tool = dir.path().join("server");
        std::fs::write(&tool, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
        let not_runnable = dir.path().join("notes");
        std::fs::write(&not_runnable, "").unwrap();
        let path = std::env::join_paths(["/nonexistent", dir.path().to_str().unwrap()]).unwrap();
        let found = absolute_program(&"server".into(), Some(&path)).unwrap();
        assert_eq!(found, dir.path().join("server"));
        assert!(absolute_program(&"notes".into(), Some(&path)).is_err());
        assert!(absolute_program(&"server".into(), None).is_err());
        assert_eq!(
            absolute_program(&tool.into_os_string(), None).unwrap(),
            found
        );
        assert!(absolute_program(&"./no/such/server".into(), None).is_err());
    }

    #[test]
    fn the_wrapped_server_runs_through_azbroker_exec() {
        let value = wrapped_snippet(
            McpClient::Vscode,
            "azure",
            &["/bin/sh".into(), "-c".into(), "exit 0".into()],
            &Limits {
                allow: vec!["https://storage.azure.com/*".into()],
                deny: vec!["https://vault.azure.net/*".into()],
                managed_identity: true,
            },
        )
        .unwrap();
        let server = &value["servers"]["azure"];
        assert_eq!(server["type"], "stdio");
        assert!(Path::new(server["command"].as_str().unwrap()).is_absolute());
        assert_eq!(
            server["args"],
            json!([
                "exec",
                "--name",
                "azure",
                "--allow-scope",
                "https://storage.azure.com/*",
                "--deny-scope",
                "https://vault.azure.net/*",
                "--managed-identity",
                "--",
                "/bin/sh",
                "-c",
                "exit 0"
            ])
        );
        let none = Limits::default();
        let claude =
            wrapped_snippet(McpClient::Claude, "azure", &["/bin/sh".into()], &none).unwrap();
        assert!(claude["mcpServers"]["azure"].get("type").is_none());
        assert_eq!(claude["mcpServers"]["azure"]["args"][2], "azure");
        assert!(wrapped_snippet(McpClient::Generic, " ", &["/bin/sh".into()], &none).is_err());
        assert!(wrapped_snippet(McpClient::Generic, "x", &[], &none).is_err());
    }
}
