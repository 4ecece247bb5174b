// Reads one secret with the AWS SDK for JavaScript v3, configured only by the
// environment (AWS_ENDPOINT_URL_SECRETS_MANAGER, AWS_ACCESS_KEY_ID, ...), and
// prints {"SecretString": ..., "VersionId": ...} or {"error": name}.
import { SecretsManagerClient, GetSecretValueCommand } from "@aws-sdk/client-secrets-manager";

const client = new SecretsManagerClient({});
try {
  const out = await client.send(new GetSecretValueCommand({ SecretId: process.argv[2] }));
  console.log(JSON.stringify({ SecretString: out.SecretString, VersionId: out.VersionId }));
} catch (err) {
  console.log(JSON.stringify({ error: err.name }));
}
