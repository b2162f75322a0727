// npm run token -- --user <uuid> [--email <address>] [--expires <seconds>]: prints a signed-in user's
// JWT that the local stack accepts (ES256, signed with the stack's local-only key, checked by every
// function against the JWKS), so "search as a user" needs no Auth server. Only the token goes to
// stdout: TOKEN=$(npm run -s token -- --user …). The key is the one `npm start` generated in .local/.
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { z } from "zod";
import { pgUuid } from "../packages/core/validation.ts";
import { signUserJwt } from "../packages/local-stack/keys.ts";
import { localDataDir } from "../packages/connection/stack-state.ts";

const argsSchema = z.object({
  user: pgUuid,
  email: z.email().optional(),
  expires: z.coerce.number().int().min(60).max(7 * 24 * 3600).default(3600),
}).strict();

function fail(message: string): never {
  console.error(`token: ${message}`);
  console.error("usage: npm run token -- --user <uuid> [--email <address>] [--expires <seconds, 60..604800>]");
  process.exit(2);
}

let values: Record<string, unknown>;
try {
  ({ values } = parseArgs({
    args: process.argv.slice(2),
    options: { user: { type: "string" }, email: { type: "string" }, expires: { type: "string" } },
  }));
} catch (e) {
  fail((e as Error).message);
}
const args = argsSchema.safeParse(values);
if (!args.success) fail(args.error.issues.map((i) => `--${i.path.join(".")}: ${i.message}`).join("; "));

const dataDir = localDataDir();
const keysFile = join(dataDir, "api-keys.json");
const keysSchema = z.object({
  signingJwk: z.object({ kty: z.literal("EC"), kid: z.string().min(1), d: z.string().min(1) }).loose(),
});
let keys: ReturnType<typeof keysSchema.safeParse> | null = null;
try {
  if (existsSync(keysFile)) keys = keysSchema.safeParse(JSON.parse(readFileSync(keysFile, "utf8")));
} catch { /* unreadable: said below */ }
if (!keys?.success) {
  fail("the local stack has no signing key yet: run npm start once (it generates its local-only keys)");
}

const { user, email, expires } = args.data;
console.log(await signUserJwt(keys.data, user, { expiresInSeconds: expires, claims: email ? { email } : {} }));
