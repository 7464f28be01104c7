// One exchange with azbroker-mcp through the MCP TypeScript SDK (npm):
// initialize, list tools, call subscription_list and auth_status, check the
// answers. Usage: node node_exchange.mjs CONFIG.json (written by tests/e2e/mcp.rs).
import { readFileSync } from "node:fs";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";

function check(condition, message) {
  if (!condition) {
    console.error(`CHECK FAILED: ${message}`);
    process.exit(1);
  }
}

function body(result, tool) {
  check(result.content?.length === 1 && result.content[0].type === "text", `${tool}: one text block`);
  const parsed = JSON.parse(result.content[0].text);
  check(result.isError === false && parsed.status === 200, `${tool} failed: ${result.content[0].text}`);
  return parsed.results;
}

const config = JSON.parse(readFileSync(process.argv[2], "utf8"));
const transport = new StdioClientTransport({
  command: config.server.command,
  args: config.server.args ?? [],
  env: config.server.env,
  stderr: "inherit",
});
const client = new Client({ name: "azbroker-mcp-node-test", version: "1.0.0" });
await client.connect(transport);

const server = client.getServerVersion();
check(server?.name === "azbroker-mcp", `server name: ${JSON.stringify(server)}`);
const { tools } = await client.listTools();
const names = tools.map((t) => t.name).sort();
check(
  JSON.stringify(names) ===
    JSON.stringify(["auth_status", "group_list", "storage_blob_list", "storage_container_list", "subscription_list"]),
  `tools: ${names}`,
);
const subscriptions = body(await client.callTool({ name: "subscription_list", arguments: {} }), "subscription_list");
check(
  JSON.stringify(subscriptions.subscriptions) === JSON.stringify(config.expect.subscriptions),
  `subscriptions: ${JSON.stringify(subscriptions)}`,
);
const status = body(await client.callTool({ name: "auth_status", arguments: {} }), "auth_status");
check(status.credential === "AzureCliCredential", `auth_status: ${JSON.stringify(status)}`);
await client.close();
console.log(JSON.stringify({ protocolVersion: transport.protocolVersion ?? null, tools: names.length }));
