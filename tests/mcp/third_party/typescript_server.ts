// An MCP server as a user would write it, from parts nobody here wrote: the
// MCP TypeScript SDK's McpServer and @azure/identity's DefaultAzureCredential.
// It knows nothing of azbroker: the tests start it (with tsx) through
// `azbroker exec`, which puts the `az` shim first on its PATH.
//
// A tool never returns a token, only what identifies it (claims and a digest).
import { createHash } from "node:crypto";
import { DefaultAzureCredential } from "@azure/identity";
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { StdioServerTransport } from "@modelcontextprotocol/sdk/server/stdio.js";
import { z } from "zod";

interface Described {
  aud?: string;
  tid?: string;
  oid?: string;
  uti?: string;
  sha256: string;
}

/** The claims that identify an access token, and its SHA-256. */
function describe(token: string): Described {
  const claims = JSON.parse(Buffer.from(token.split(".")[1], "base64url").toString("utf8"));
  const { aud, tid, oid, uti } = claims;
  return { aud, tid, oid, uti, sha256: createHash("sha256").update(token).digest("hex") };
}

const credential = new DefaultAzureCredential();
const server = new McpServer({ name: "typescript-azure-server", version: "1.0.0" });

server.registerTool(
  "token_claims",
  {
    description: "Gets a token for `scope` with DefaultAzureCredential; returns its claims.",
    inputSchema: { scope: z.string() },
  },
  async ({ scope }) => {
    try {
      const token = await credential.getToken(scope);
      return { content: [{ type: "text", text: JSON.stringify(describe(token.token)) }] };
    } catch (e) {
      return { isError: true, content: [{ type: "text", text: (e as Error).message }] };
    }
  },
);

server.connect(new StdioServerTransport()).catch((e: unknown) => {
  console.error("typescript_server:", e);
  process.exit(1);
});
