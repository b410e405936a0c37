// A stock Better Auth server for the integration tests: email and password sign-up, the jwt plugin (signing
// with JWT_ALG, EdDSA by default) and the bearer plugin. Nothing here is specific to our API.
//   DATABASE=postgresql://... | sqlite:///path   SECRET=...   JWT_ALG=EdDSA|ES256|ES512|PS256|RS256
// Listens on a free port of 127.0.0.1 and prints {"ready": "<base URL>"} once migrated.
import http from "node:http";
import { betterAuth } from "better-auth";
import { getMigrations } from "better-auth/db/migration";
import { toNodeHandler } from "better-auth/node";
import { bearer, jwt } from "better-auth/plugins";

const { DATABASE, SECRET, JWT_ALG = "EdDSA" } = process.env;

async function database(url) {
  if (url.startsWith("postgres")) {
    const { Pool } = await import("pg");
    return new Pool({ connectionString: url });
  }
  const { default: Database } = await import("better-sqlite3");
  return new Database(url.replace(/^sqlite:\/\//, ""));
}

const keyPairConfig = {
  EdDSA: { alg: "EdDSA", crv: "Ed25519" },
  ES256: { alg: "ES256" },
  ES512: { alg: "ES512" },
  PS256: { alg: "PS256", modulusLength: 2048 },
  RS256: { alg: "RS256", modulusLength: 2048 },
}[JWT_ALG];

let handler = (_req, res) => {
  res.statusCode = 503;
  res.end();
};
const server = http.createServer((req, res) => handler(req, res));
server.listen(0, "127.0.0.1", async () => {
  const baseURL = `http://127.0.0.1:${server.address().port}`;
  const auth = betterAuth({
    baseURL,
    secret: SECRET,
    database: await database(DATABASE),
    emailAndPassword: { enabled: true },
    plugins: [jwt({ jwks: { keyPairConfig } }), bearer()],
    telemetry: { enabled: false },
  });
  const { runMigrations } = await getMigrations(auth.options);
  await runMigrations();
  handler = toNodeHandler(auth);
  console.log(JSON.stringify({ ready: baseURL }));
});
for (const signal of ["SIGTERM", "SIGINT"]) process.on(signal, () => process.exit(0));
