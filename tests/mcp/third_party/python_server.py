"""An MCP server as a user would write it, from parts nobody here wrote: the
MCP Python SDK's FastMCP (named MCPServer since mcp 2, which removed the
`mcp.server.fastmcp` module), azure-identity's DefaultAzureCredential and
azure-storage-blob. It knows nothing of azbroker: the tests start it through
`azbroker exec`, which puts the `az` shim first on its PATH.

A tool never returns a token, only what identifies it (claims and a digest).
"""

import base64
import hashlib
import json
import os
import subprocess

from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
from azure.identity import DefaultAzureCredential
from azure.storage.blob import BlobServiceClient
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

server = MCPServer("python-azure-server")
credential = DefaultAzureCredential()
# The newest Blob API version that Azurite 3.35 (the tests' Blob service) serves;
# this SDK would otherwise ask for a newer one and be refused.
BLOB_API_VERSION = "2025-11-05"


def describe(token):
    """The claims that identify an access token, and its SHA-256."""
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    described = {name: claims.get(name) for name in ("aud", "tid", "oid", "uti")}
    described["sha256"] = hashlib.sha256(token.encode()).hexdigest()
    return described


@server.tool()
def token_claims(scope: str) -> dict:
    """Gets a token for `scope` with DefaultAzureCredential; returns its claims."""
    try:
        return describe(credential.get_token(scope).token)
    except ClientAuthenticationError as e:
        # A ToolError reaches the client with its text (other exceptions are hidden).
        raise ToolError(e.message) from e


@server.tool()
def blob_list(account_url: str, container: str) -> dict:
    """Names of the blobs in `container`, listed with a token from DefaultAzureCredential."""
    client = BlobServiceClient(account_url, credential=credential, api_version=BLOB_API_VERSION)
    try:
        return {"blobs": [blob.name for blob in client.get_container_client(container).list_blobs()]}
    except (ClientAuthenticationError, HttpResponseError) as e:
        raise ToolError(e.message) from e


@server.tool()
def child_token(resource: str) -> dict:
    """Runs `az account get-access-token` in a child that cleared its
    environment (`env -i`), keeping only where to find programs and the
    broker; returns its exit code and, on success, the token's claims."""
    kept = [f"{name}={os.environ[name]}" for name in ("PATH", "HOME", "AZBROKER_SOCKET") if name in os.environ]
    child = subprocess.run(
        ["env", "-i", *kept, "az", "account", "get-access-token", "--output", "json", "--resource", resource],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if child.returncode != 0:
        return {"exit": child.returncode, "stderr": child.stderr}
    return {"exit": 0, "claims": describe(json.loads(child.stdout)["accessToken"])}


if __name__ == "__main__":
    server.run()
