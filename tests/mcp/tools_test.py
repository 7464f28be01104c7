"""Drives azbroker-mcp with the MCP Python SDK: initialize, list the tools
(names and input schemas), call every tool, check results and error shapes.

Usage: tools_test.py CONFIG.json CHECK... where each CHECK is one of the
functions in CHECKS below; all run in one session, in the order given.
"""

import time

import anyio

from mcp_client import call_error, call_ok, check, run, session

TENANT = {"type": ["string", "null"]}
OPTIONAL_TEXT = {"type": ["string", "null"]}

# Input schemas: property name -> (JSON type, required).
SCHEMAS = {
    "auth_status": {"tenant": (TENANT, False)},
    "subscription_list": {"tenant": (TENANT, False)},
    "group_list": {"subscription": (OPTIONAL_TEXT, False), "tenant": (TENANT, False)},
    "storage_container_list": {
        "account": ({"type": "string"}, True),
        "prefix": (OPTIONAL_TEXT, False),
        "tenant": (TENANT, False),
    },
    "storage_blob_list": {
        "account": ({"type": "string"}, True),
        "container": ({"type": "string"}, True),
        "prefix": (OPTIONAL_TEXT, False),
        "tenant": (TENANT, False),
    },
}


async def schemas(s, tools, expect, out):
    names = sorted(t.name for t in tools)
    check(names == sorted(SCHEMAS), f"tools {names}, expected {sorted(SCHEMAS)}")
    for tool in tools:
        wire = tool.model_dump(by_alias=True, exclude_none=True)
        schema = wire["inputSchema"]
        expected = SCHEMAS[tool.name]
        check(schema.get("type") == "object", f"{tool.name}: input schema is not an object: {schema}")
        check(set(schema.get("properties", {})) == set(expected), f"{tool.name}: properties {schema}")
        required = sorted(name for name, (_, req) in expected.items() if req)
        check(sorted(schema.get("required", [])) == required, f"{tool.name}: required {schema}")
        for name, (json_type, _) in expected.items():
            prop = schema["properties"][name]
            check(prop.get("type") == json_type["type"], f"{tool.name}.{name}: type {prop}")
            check(prop.get("description"), f"{tool.name}.{name}: no description")
        check(tool.description and len(tool.description) > 20, f"{tool.name}: no description")
        annotations = wire.get("annotations", {})
        check(annotations.get("readOnlyHint") is True, f"{tool.name}: not marked read-only: {annotations}")
    out["tools"] = names


async def auth_status(s, tools, expect, out):
    result = await s.call_tool("auth_status", {})
    text = result.content[0].text
    # Never a token: the minted tokens all start with the same JOSE header.
    check("eyJ0eXAi" not in text, "auth_status output contains a token")
    results = await call_ok(s, "auth_status", {})
    check(results["credential"] == "AzureCliCredential", f"credential: {results}")
    check(results["tenantId"] == expect["tenant"], f"tenantId: {results}")
    identity = results["identity"]
    check(identity["type"] == "user", f"identity: {identity}")
    check(identity["objectId"] == expect["user_oid"], f"objectId: {identity}")
    check(identity["userPrincipalName"] == expect["upn"], f"upn: {identity}")
    token = results["token"]
    check(token["audience"] == "https://management.azure.com", f"token: {token}")
    check(token["fromCache"] is True, f"the second call must be served from the cache: {token}")
    held = results["tokensHeld"]
    check(
        any(h["scopes"] == ["https://management.azure.com/.default"] for h in held),
        f"tokensHeld lacks the ARM token: {held}",
    )
    broker = results["broker"]
    check(broker["running"] is True and broker["pid"] > 0, f"broker: {broker}")
    creds = {c["credential"]: c for c in broker["credentials"]}
    check(creds.get("AzureCliCredential", {}).get("state") == "healthy", f"credentials: {creds}")
    out["auth_status"] = {"credential": results["credential"], "tenantId": results["tenantId"]}


async def subscriptions(s, tools, expect, out):
    results = await call_ok(s, "subscription_list", {})
    subs = results["subscriptions"]
    check(subs == expect["subscriptions"], f"subscriptions {subs}\nexpected {expect['subscriptions']}")
    check(subs[0]["isDefault"] is True, "the default subscription must come first")
    check(sum(1 for x in subs if x["isDefault"]) == 1, "exactly one default")
    out["subscriptions"] = len(subs)


async def groups(s, tools, expect, out):
    default = await call_ok(s, "group_list", {})
    check(default["groups"] == expect["default_groups"], f"default subscription's groups: {default}")
    by_name = await call_ok(s, "group_list", {"subscription": expect["named"]["displayName"]})
    check(by_name["groups"] == expect["named"]["groups"], f"groups by display name: {by_name}")

    other = expect["other_tenant"]
    body = await call_error(s, "group_list", {"subscription": other["subscriptionId"]}, 401, "RequestFailedException")
    message = body["message"]
    check(message.startswith("Authentication failed due to a tenant mismatch."), f"tenant remedy: {message}")
    check(f'tenant="{other["tenantId"]}"' in message, f"the remedy names the tenant: {message}")
    check(f"az login --tenant {other['tenantId']}" in message, f"the remedy says how to sign in: {message}")
    check("InvalidAuthenticationTokenTenant" in body["results"]["message"], f"cause: {body}")
    fixed = await call_ok(s, "group_list", {"subscription": other["subscriptionId"], "tenant": other["tenantId"]})
    check(fixed["groups"] == other["groups"], f"groups with the right tenant: {fixed}")

    missing = "00000000-0000-4000-8000-00000000dead"
    body = await call_error(s, "group_list", {"subscription": missing}, 404, "RequestFailedException")
    check(f"The subscription '{missing}' could not be found." in body["message"], f"404: {body}")
    check("(SubscriptionNotFound)" in body["message"], f"404 code: {body}")
    body = await call_error(s, "group_list", {"subscription": "no such name"}, 400, "ArgumentException")
    out["groups"] = len(default["groups"])


async def storage(s, tools, expect, out):
    account = expect["account"]
    containers = await call_ok(s, "storage_container_list", {"account": account})
    names = [c["name"] for c in containers["containers"]]
    check(names == expect["containers"], f"containers {names}, expected {expect['containers']}")
    check(containers["truncated"] is False, f"truncated: {containers}")
    first = containers["containers"][0]
    check(first.get("lastModified", "").endswith("Z") and first.get("eTag"), f"container fields: {first}")
    only = await call_ok(s, "storage_container_list", {"account": account, "prefix": expect["containers"][1][:4]})
    check([c["name"] for c in only["containers"]] == [expect["containers"][1]], f"prefix: {only}")

    blobs = expect["blobs"]
    listed = await call_ok(s, "storage_blob_list", {"account": account, "container": blobs["container"]})
    check([b["name"] for b in listed["blobs"]] == blobs["all"], f"blobs {listed}")
    sizes = {b["name"]: b["contentLength"] for b in listed["blobs"]}
    check(sizes == blobs["sizes"], f"blob sizes {sizes}, expected {blobs['sizes']}")
    check(all(b["blobType"] == "BlockBlob" for b in listed["blobs"]), f"blob types: {listed}")
    prefixed = await call_ok(
        s, "storage_blob_list", {"account": account, "container": blobs["container"], "prefix": blobs["prefix"]}
    )
    check([b["name"] for b in prefixed["blobs"]] == blobs["with_prefix"], f"prefixed blobs {prefixed}")

    body = await call_error(s, "storage_blob_list", {"account": account, "container": "absent"}, 404, "RequestFailedException")
    check("(ContainerNotFound)" in body["message"], f"missing container: {body}")
    out["storage"] = {"containers": len(names), "blobs": len(listed["blobs"])}


async def argument_errors(s, tools, expect, out):
    # Missing and mistyped arguments get the same envelope as every other failure.
    body = await call_error(s, "storage_blob_list", {"account": expect["account"]}, 400, "ArgumentException")
    check("container" in body["message"], f"missing container: {body}")
    await call_error(s, "storage_container_list", {"account": 5}, 400, "ArgumentException")
    body = await call_error(
        s, "storage_container_list", {"account": expect["account"].replace("https:", "http:")}, 400, "ArgumentException"
    )
    check("https" in body["message"], f"http endpoint: {body}")
    await call_error(s, "storage_container_list", {"account": "Not_An_Account"}, 400, "ArgumentException")
    await call_error(s, "storage_blob_list", {"account": expect["account"], "container": "Bad--Name"}, 400, "ArgumentException")
    # A tenant the broker refuses (not a tenant ID or domain).
    await call_error(s, "subscription_list", {"tenant": "bad tenant; rm -rf"}, 400, "ArgumentException")


async def concurrency(s, tools, expect, out):
    """Many calls in flight on one session: responses arrive in any order
    and each must match its own request."""
    calls = []
    for i in range(12):
        if i % 3 == 0:
            calls.append(("subscription_list", {}, lambda r: r["subscriptions"] == expect["subscriptions"]))
        elif i % 3 == 1:
            calls.append(("group_list", {}, lambda r: r["groups"] == expect["default_groups"]))
        else:
            calls.append(
                (
                    "storage_blob_list",
                    {"account": expect["account"], "container": expect["blobs"]["container"]},
                    lambda r: [b["name"] for b in r["blobs"]] == expect["blobs"]["all"],
                )
            )
    outcomes = [None] * len(calls)

    async def one(i, tool, arguments):
        outcomes[i] = await call_ok(s, tool, arguments)

    async with anyio.create_task_group() as tg:
        for i, (tool, arguments, _) in enumerate(calls):
            tg.start_soon(one, i, tool, arguments)
    for (tool, _, ok), outcome in zip(calls, outcomes):
        check(ok(outcome), f"concurrent {tool} got someone else's answer: {outcome}")
    out["concurrent_calls"] = len(calls)


async def claims(s, tools, expect, out):
    # The ARM double answers with a claims challenge; azbroker-mcp asks the
    # broker for a token with those claims, and the Azure CLI credential says
    # it cannot satisfy them by itself and what to run.
    body = await call_error(s, "subscription_list", {}, 401, "AuthenticationFailedException")
    check("claims challenge" in body["message"], f"claims remedy: {body}")
    check("az login --claims-challenge" in body["message"], f"claims remedy command: {body}")
    # The broker got the claims decoded; the az remedy carries them base64-encoded, as ARM sent them.
    check(f'--claims-challenge "{expect["claims_base64"]}"' in body["message"], f"the claims reached the broker: {body}")
    out["claims"] = "remedy"


async def not_logged_in(s, tools, expect, out):
    body = await call_error(s, "subscription_list", {}, 401, "CredentialUnavailableException")
    check(
        body["message"].startswith("Azure credentials not found or unavailable. Please run 'az login'"),
        f"message: {body}",
    )
    check("AzureCliCredential" in body["message"], f"each credential's reason: {body}")
    out["not_logged_in"] = body["status"]


async def broker_unavailable(s, tools, expect, out):
    body = await call_error(s, "subscription_list", {}, 503, "BrokerUnavailableException")
    check(body["message"].startswith("Cannot reach the token broker (azbrokerd)"), f"message: {body}")
    check("AZBROKER_NO_AUTOSTART" in body["message"], f"the reason: {body}")


async def bad_chain(s, tools, expect, out):
    # A typo in AZURE_TOKEN_CREDENTIALS must not fall back to anything: it is
    # reported, with the valid values, when a tool needs a token.
    body = await call_error(s, "auth_status", {}, 422, "InvalidOperationException")
    check("AZURE_TOKEN_CREDENTIALS" in body["message"], f"names the variable: {body}")
    check("AzureCliCredential" in body["message"], f"lists the valid values: {body}")


async def measure(s, tools, expect, out):
    """Cold (the broker acquires the token) and warm (cached) subscription_list."""
    started = time.perf_counter()
    await call_ok(s, "subscription_list", {})
    cold = time.perf_counter() - started
    started = time.perf_counter()
    await call_ok(s, "subscription_list", {})
    warm = time.perf_counter() - started
    out["cold_subscription_list_ms"] = round(cold * 1000, 1)
    out["warm_subscription_list_ms"] = round(warm * 1000, 1)


CHECKS = {
    f.__name__: f
    for f in [
        schemas,
        auth_status,
        subscriptions,
        groups,
        storage,
        argument_errors,
        concurrency,
        claims,
        not_logged_in,
        broker_unavailable,
        bad_chain,
        measure,
    ]
}


async def main(config):
    names = __import__("sys").argv[2:]
    unknown = [n for n in names if n not in CHECKS]
    check(not unknown, f"unknown checks {unknown}; known: {sorted(CHECKS)}")
    out = {}
    async with session(config) as (s, to_tools_list, tools):
        out["start_to_tools_list_ms"] = round(to_tools_list * 1000, 1)
        for name in names:
            try:
                await CHECKS[name](s, tools, config["expect"], out)
            except Exception as e:  # noqa: BLE001 - name the check that failed
                if type(e).__name__ == "CheckFailed":
                    raise type(e)(f"[{name}] {e}") from e
                raise
    return out


if __name__ == "__main__":
    run(main)
