"""N azbroker-mcp processes, each driven by its own MCP client session, call
subscription_list at the same moment with nothing cached: every answer must
be right (the Rust side counts the upstream token acquisitions).

Usage: shared_test.py CONFIG.json (config["clients"] says how many).
"""

import time

import anyio

from mcp_client import call_ok, check, run, session


async def main(config):
    clients = config["clients"]
    expected = config["expect"]["subscriptions"]
    ready = anyio.Event()
    waiting = 0
    all_waiting = anyio.Event()
    answers = [None] * clients
    startup_ms = [None] * clients
    call_ms = [None] * clients

    async def client(i):
        nonlocal waiting
        async with session(config, name=f"client-{i}") as (s, to_tools_list, _tools):
            startup_ms[i] = round(to_tools_list * 1000, 1)
            waiting += 1
            if waiting == clients:
                all_waiting.set()
            # Every server is up and initialized; fire together.
            await ready.wait()
            started = time.perf_counter()
            answers[i] = await call_ok(s, "subscription_list", {})
            call_ms[i] = round((time.perf_counter() - started) * 1000, 1)

    async with anyio.create_task_group() as tg:
        for i in range(clients):
            tg.start_soon(client, i)
        with anyio.fail_after(60):
            await all_waiting.wait()
        ready.set()

    for i, answer in enumerate(answers):
        check(answer is not None and answer["subscriptions"] == expected, f"client {i} got {answer}")
    return {"clients": clients, "startup_ms": startup_ms, "call_ms": call_ms}


if __name__ == "__main__":
    run(main)
