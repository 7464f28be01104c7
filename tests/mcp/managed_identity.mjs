// Asks the managed-identity endpoint named by IDENTITY_ENDPOINT and
// IDENTITY_HEADER for a token through Node's @azure/identity
// ManagedIdentityCredential, optionally naming a user-assigned client id.
// Usage: node managed_identity.mjs SCOPE [CLIENT_ID]
// Prints {"token", "expires_on"} (epoch seconds), or {"error", "message"} and exits 1.
import { ManagedIdentityCredential } from "@azure/identity";

const [scope, clientId] = process.argv.slice(2);
const credential = clientId ? new ManagedIdentityCredential(clientId) : new ManagedIdentityCredential();
try {
  const token = await credential.getToken(scope);
  console.log(JSON.stringify({ token: token.token, expires_on: Math.floor(token.expiresOnTimestamp / 1000) }));
} catch (error) {
  console.log(JSON.stringify({ error: error.name, message: error.message }));
  process.exit(1);
}
