"""An MCP host's side, with the MCP Python SDK's client: starts every server
of the configuration with that entry's command and (minimal) environment,
initializes them all, then makes every call at once, so calls to different
servers race for the same token.

Usage: client.py CONFIG.json, where CONFIG is
{"servers": {KEY: {"command", "args", "env", "cwd"}},
 "calls": [{"server": KEY, "tool", "arguments"}]};
prints one JSON line: per call, {"is_error", "text"} (the text blocks joined).
tests/e2e/third_party.rs writes the configuration and checks the answers.
"""

import json
import sys

import anyio
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

# The whole run, server start-ups included; the Rust side kills us later still.
LIMIT_SECS = 120


async def main(config):
    servers, calls = config["servers"], config["calls"]
    sessions = {}
    all_up, done = anyio.Event(), anyio.Event()
    results = [None] * len(calls)

    async def serve(key, entry):
        parameters = StdioServerParameters(
            command=entry["command"], args=entry["args"], env=entry["env"], cwd=entry["cwd"]
        )
        async with stdio_client(parameters) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                sessions[key] = session
                if len(sessions) == len(servers):
                    all_up.set()
                await done.wait()

    async def call(i, spec):
        result = await sessions[spec["server"]].call_tool(spec["tool"], spec["arguments"])
        text = "".join(block.text for block in result.content if block.type == "text")
        results[i] = {"is_error": bool(result.is_error), "text": text}

    with anyio.fail_after(LIMIT_SECS):
        async with anyio.create_task_group() as servers_group:
            for key, entry in servers.items():
                servers_group.start_soon(serve, key, entry)
            await all_up.wait()
            async with anyio.create_task_group() as calls_group:
                for i, spec in enumerate(calls):
                    calls_group.start_soon(call, i, spec)
            # Closing the sessions ends the servers.
            done.set()
    return results


if __name__ == "__main__":
    with open(sys.argv[1], encoding="utf-8") as f:
        config = json.load(f)
    print(json.dumps(anyio.run(main, config)))
