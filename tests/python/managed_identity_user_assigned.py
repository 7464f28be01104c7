"""Asks the managed-identity endpoint named by IDENTITY_ENDPOINT and
IDENTITY_HEADER for a token as azure-identity's ManagedIdentityCredential
does, optionally naming a user-assigned identity.

Usage: managed_identity_user_assigned.py SCOPE [client_id|object_id|resource_id VALUE]
Prints {"token": ..., "expires_on": ...}, or {"error": <exception class>,
"message": ...} and exits 1.
"""

import json
import sys

from azure.identity import ManagedIdentityCredential


def credential(selector):
    if not selector:
        return ManagedIdentityCredential()
    kind, value = selector
    if kind == "client_id":
        return ManagedIdentityCredential(client_id=value)
    return ManagedIdentityCredential(identity_config={kind: value})


def main() -> int:
    scope = sys.argv[1]
    selector = sys.argv[2:4]
    try:
        token = credential(selector).get_token(scope)
    except Exception as error:  # the test reads the class and the message
        print(json.dumps({"error": type(error).__name__, "message": str(error)}))
        return 1
    print(json.dumps({"token": token.token, "expires_on": token.expires_on}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
