//! `azbroker mcp-config`: the JSON that registers `azbroker-mcp` with an MCP client.

use std::path::PathBuf;

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
    let command = server_command();
    let env: Map<String, Value> = FORWARDED
        .iter()
        .filter_map(|name| {
            let value = std::env::var(name).ok().filter(|v| !v.is_empty())?;
            Some((name.to_string(), Value::String(value)))
        })
        .collect();
    let mut server = Map::new();
    if client != McpClient::Claude {
        server.insert("type".into(), json!("stdio"));
    }
    server.insert("command".into(), json!(command));
    server.insert("args".into(), json!([]));
    if !env.is_empty() {
        server.insert("env".into(), Value::Object(env));
    }
    let servers_key = match client {
        McpClient::Vscode => "servers",
        McpClient::Claude | McpClient::Generic => "mcpServers",
    };
    json!({ servers_key: { "azbroker": server } })
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
