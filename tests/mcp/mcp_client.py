"""Shared helpers for the MCP client tests: a real MCP client (the `mcp`
Python SDK from PyPI) talking to `azbroker-mcp` over stdio.

The Rust end-to-end test (tests/e2e/mcp.rs) writes a JSON configuration file
(the server command and environment, the endpoints and expected values) and
runs a script with it; every script prints one JSON line of results on
stdout and exits non-zero with a readable message when a check fails.
"""

import json
import sys
import time
from contextlib import asynccontextmanager

from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp_types import Implementation


class CheckFailed(Exception):
    pass


def check(condition, message):
    if not condition:
        raise CheckFailed(message)


def load_config():
    if len(sys.argv) < 2:
        sys.exit(f"usage: {sys.argv[0]} CONFIG.json [CHECK...]")
    with open(sys.argv[1], encoding="utf-8") as f:
        return json.load(f)


def server_parameters(config):
    server = config["server"]
    return StdioServerParameters(command=server["command"], args=server.get("args", []), env=server["env"])


@asynccontextmanager
async def session(config, name="azbroker-mcp-tests"):
    """An initialized client session with a fresh azbroker-mcp process.

    Yields (session, seconds from spawning the server to the first tools/list answer, tools).
    """
    started = time.perf_counter()
    async with stdio_client(server_parameters(config)) as (read, write):
        async with ClientSession(read, write, client_info=Implementation(name=name, version="1")) as s:
            await s.initialize()
            tools = await s.list_tools()
            yield s, time.perf_counter() - started, tools.tools


def envelope(result):
    """The JSON envelope of a tool result: one text block holding
    {status, message, results, duration}; checks its shape."""
    check(len(result.content) == 1, f"one content block expected, got {result.content!r}")
    block = result.content[0]
    check(block.type == "text", f"a text block expected, got {block!r}")
    try:
        body = json.loads(block.text)
    except json.JSONDecodeError as e:
        raise CheckFailed(f"the text block is not JSON ({e}): {block.text!r}")
    check(isinstance(body.get("status"), int), f"no integer status in {body}")
    check(isinstance(body.get("message"), str), f"no message in {body}")
    check(isinstance(body.get("duration"), int) and body["duration"] >= 0, f"no duration in {body}")
    check("results" in body, f"no results in {body}")
    return body


async def call_ok(s, tool, arguments):
    """Calls a tool that must succeed; returns its `results`."""
    result = await s.call_tool(tool, arguments)
    body = envelope(result)
    check(
        result.is_error is False and body["status"] == 200 and body["message"] == "Success",
        f"{tool}({arguments}) failed: {body}",
    )
    return body["results"]


async def call_error(s, tool, arguments, status, error_type):
    """Calls a tool that must fail with `status` and results.type `error_type`
    (the Azure MCP Server's error shape); returns the whole body."""
    result = await s.call_tool(tool, arguments)
    body = envelope(result)
    check(result.is_error is True, f"{tool}({arguments}) should have failed: {body}")
    check(body["status"] == status, f"{tool}({arguments}): status {status} expected: {body}")
    results = body["results"]
    check(
        isinstance(results, dict) and set(results) == {"message", "type"},
        f"{tool}: results must be {{message, type}}: {results}",
    )
    check(results["type"] == error_type, f"{tool}: type {error_type} expected: {body}")
    check(results["message"], f"{tool}: empty results.message: {body}")
    return body


def run(main):
    """Runs an async main(config) and reports a failed check on stderr with exit code 1."""
    import anyio

    config = load_config()
    try:
        output = anyio.run(main, config)
    except* CheckFailed as group:
        # Task groups (the SDK's and ours) wrap failures in exception groups.
        for failure in _leaves(group):
            print(f"CHECK FAILED: {failure}", file=sys.stderr)
        sys.exit(1)
    print(json.dumps(output))


def _leaves(group):
    for e in group.exceptions:
        if isinstance(e, BaseExceptionGroup):
            yield from _leaves(e)
        else:
            yield e
