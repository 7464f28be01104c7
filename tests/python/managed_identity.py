"""Talks to the managed-identity endpoint named by IDENTITY_ENDPOINT and
IDENTITY_HEADER, as azure-identity's ManagedIdentityCredential does.

Usage:
  managed_identity.py token SCOPE
      prints {"token": ..., "expires_on": ...}, or {"error", "message"} and exits 1
  managed_identity.py refused SCOPE
      with a wrong IDENTITY_HEADER: prints {"status": <HTTP status of a plain
      GET carrying that header>, "body": ..., "credential_error": <exception
      class raised by ManagedIdentityCredential, or null>}
"""

import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request

from azure.identity import ManagedIdentityCredential


def get_token(scope):
    try:
        token = ManagedIdentityCredential().get_token(scope)
    except Exception as error:  # the test reads the class and the message
        return None, error
    return token, None


def main() -> int:
    mode, scope = sys.argv[1], sys.argv[2]
    if mode == "token":
        token, error = get_token(scope)
        if error is not None:
            print(json.dumps({"error": type(error).__name__, "message": str(error)}))
            return 1
        print(json.dumps({"token": token.token, "expires_on": token.expires_on}))
        return 0

    if mode == "refused":
        resource = scope[: -len("/.default")] if scope.endswith("/.default") else scope
        query = urllib.parse.urlencode({"resource": resource, "api-version": "2019-08-01"})
        request = urllib.request.Request(
            os.environ["IDENTITY_ENDPOINT"] + "?" + query,
            headers={"X-IDENTITY-HEADER": os.environ["IDENTITY_HEADER"]},
        )
        # No proxy: the endpoint is on loopback.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(request, timeout=30) as response:
                status, body = response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            status, body = error.code, error.read().decode()
        token, error = get_token(scope)
        print(
            json.dumps(
                {
                    "status": status,
                    "body": body,
                    "credential_error": type(error).__name__ if error else None,
                    "got_token": token is not None,
                }
            )
        )
        return 0

    print(f"unknown mode {mode!r}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
