"""Gets a token with azure-identity's AzureCliCredential, which runs the `az`
it finds on PATH (the azbroker shim, in the tests), and prints it as JSON:
{"token": ..., "expires_on": ...}. On failure prints
{"error": <exception class>, "message": ...} and exits 1.

Usage: cli_credential.py SCOPE [TENANT]
"""

import json
import sys

from azure.identity import AzureCliCredential


def main() -> int:
    scope = sys.argv[1]
    tenant = sys.argv[2] if len(sys.argv) > 2 else None
    credential = AzureCliCredential(process_timeout=30)
    try:
        token = credential.get_token(scope, tenant_id=tenant) if tenant else credential.get_token(scope)
    except Exception as error:  # the test reads the class and the message
        print(json.dumps({"error": type(error).__name__, "message": str(error)}))
        return 1
    print(json.dumps({"token": token.token, "expires_on": token.expires_on}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
