// Minting client tokens as an app's backend does (docs/clients.md "Tokens"): an HS256 JWT
// signed with the app's secret, with node:crypto alone.
import { createHmac } from "node:crypto";

const part = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");

/** A token for (app, uid[, dev]) issued at `iat` (unix seconds), valid `ttlS` seconds. */
export function mint(secret, { app = "demo", uid, dev, iat = Math.floor(Date.now() / 1000), ttlS = 3600 }) {
  const claims = { sub: uid, app, ...(dev ? { dev } : {}), iat, exp: iat + ttlS };
  const input = `${part({ alg: "HS256", typ: "JWT" })}.${part(claims)}`;
  return `${input}.${createHmac("sha256", secret).update(input).digest("base64url")}`;
}
