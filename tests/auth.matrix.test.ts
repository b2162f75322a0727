// One role rule for every function, through the local stack's gateway with verify_jwt = false (as
// deployed): each credential kind of both key schemes against a service-only action and a read.
//   no credential / a bad one -> 401; anon (publishable key, legacy anon JWT) -> 403 everywhere;
//   a signed-in user -> reads only (403 on mutations); service (secret key, legacy service JWT) -> all.
// The role check comes before body validation: the mutating bodies below are invalid on purpose, so a
// caller with the right role gets the schema's 400 and nothing runs, and any other caller gets 403
// without ever learning the schema.
import { SignJWT } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { LocalStack } from "../packages/local-stack/index.ts";
import { signRoleKey, signUserJwt } from "../packages/local-stack/keys.ts";
import { startTestStack } from "../packages/testkit/stack.ts";
import { useTestDatabase } from "./helpers/db.ts";
import { createAuthUsers } from "./helpers/users.ts";

const db = useTestDatabase();
let stack: LocalStack;
const userId = crypto.randomUUID();

beforeAll(async () => {
  await createAuthUsers(db.sql, [userId]);
  stack = await startTestStack({
    databaseUrl: db.url,
    functionEnv: { EMBEDDING_PROVIDER: "offline", EMBEDDING_DIMENSIONS: "1536" },
  });
}, 90_000);
afterAll(async () => {
  await stack?.stop();
});

type Headers = Record<string, string>;
type Kind = "secret key" | "legacy service JWT" | "user JWT (ES256)" | "publishable key" | "legacy anon JWT";

async function credentials(): Promise<Record<Kind, Headers>> {
  const userJwt = await signUserJwt(stack.keys, userId);
  return {
    "secret key": { apikey: stack.secretKey },
    "legacy service JWT": { authorization: `Bearer ${stack.serviceRoleKey}` },
    // What supabase-js sends for a signed-in user: the publishable key, and the session's JWT.
    "user JWT (ES256)": { apikey: stack.publishableKey, authorization: `Bearer ${userJwt}` },
    "publishable key": { apikey: stack.publishableKey },
    "legacy anon JWT": { authorization: `Bearer ${stack.anonKey}` },
  };
}

const expectedRole: Record<Kind, "service" | "user" | "anon"> = {
  "secret key": "service",
  "legacy service JWT": "service",
  "user JWT (ES256)": "user",
  "publishable key": "anon",
  "legacy anon JWT": "anon",
};

// Per function: a service-only body that fails validation (where the function has a service-only
// action), and a read (where the function has one).
const FUNCTIONS: { name: string; mutation?: unknown; read?: unknown }[] = [
  { name: "process-embedding-queue", mutation: { action: "process", batchSize: 0 }, read: { action: "status" } },
  { name: "legifrance-collector", mutation: { mode: "maintenance", pageSize: 1 }, read: { mode: "status" } },
  { name: "repopulate-files-queue", mutation: { bucket: "../etc" } },
  { name: "process-files-queue", mutation: { batchSize: 0 } },
  // search: users and services alike (anon only when SEARCH_ALLOW_ANON=true); no service-only action.
  { name: "search", read: { query: "préavis" } },
  // conversations: every action is a user's; an unknown action needs the service role (and is a 400 then).
  { name: "conversations", mutation: { action: "purge" }, read: { action: "list" } },
  // invitations: invite, accept and list are a signed-in user's (the database decides the rest).
  { name: "invitations", mutation: { action: "purge" }, read: { action: "list" } },
];

async function call(
  name: string,
  body: unknown,
  headers: Headers,
): Promise<{ status: number; body: { error?: string; details?: unknown } }> {
  const r = await fetch(`${stack.apiUrl}/functions/v1/${name}`, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: JSON.stringify(body),
  });
  return { status: r.status, body: await r.json() };
}

describe("every function, every credential kind", () => {
  it("the functions under test are all the functions there are", () => {
    expect(stack.functions.filter((f) => f !== "health" && !FUNCTIONS.some((x) => x.name === f))).toEqual([]);
  });

  // health is a GET for monitors: any valid caller (anon included) gets the overall status and the
  // environment, only the service role gets each check's detail; no credential or a bad one is a 401.
  it("health: overall status for any valid caller, details for the service only", async () => {
    const creds = await credentials();
    for (const [kind, headers] of Object.entries(creds) as [Kind, Headers][]) {
      const r = await fetch(`${stack.apiUrl}/functions/v1/health`, { headers });
      expect([200, 503], kind).toContain(r.status);
      const body = await r.json() as { status: string; checks: { name: string; detail: unknown }[] };
      expect(body.checks.length, kind).toBeGreaterThan(5);
      const detailed = body.checks.filter((c) => c.detail !== null).length;
      if (expectedRole[kind] === "service") expect(detailed, kind).toBeGreaterThan(0);
      else expect(detailed, kind).toBe(0);
    }
    expect((await fetch(`${stack.apiUrl}/functions/v1/health`)).status).toBe(401);
    const bad = await fetch(`${stack.apiUrl}/functions/v1/health`, {
      headers: { apikey: "sb_secret_not_a_key_of_this_project" },
    });
    expect(bad.status).toBe(401);
    const retry = await fetch(`${stack.apiUrl}/functions/v1/health/retry`, {
      method: "POST",
      headers: creds["user JWT (ES256)"],
      body: '{"ids":[1]}',
    });
    expect(retry.status).toBe(403);
  });

  for (const fn of FUNCTIONS) {
    it(`${fn.name}: service-only action and read, for each credential kind`, async () => {
      const creds = await credentials();
      const seen: Record<string, number[]> = {};
      for (const [kind, headers] of Object.entries(creds) as [Kind, Headers][]) {
        const who = expectedRole[kind];
        const row: number[] = [];
        if (fn.mutation !== undefined) {
          const m = await call(fn.name, fn.mutation, headers);
          if (who === "service") {
            expect(m.status, `${kind} on a mutation`).toBe(400);
            expect(m.body.error).toBe("invalid body");
          } else {
            expect(m.status, `${kind} on a mutation`).toBe(403);
            expect(m.body.error).toBe("forbidden");
            expect(m.body.details).toMatch(/requires the service role/);
          }
          row.push(m.status);
        }
        if (fn.read) {
          const r = await call(fn.name, fn.read, headers);
          expect(r.status, `${kind} on a read: ${JSON.stringify(r.body)}`).toBe(who === "anon" ? 403 : 200);
          if (who === "anon") expect(r.body.details).toMatch(/requires a signed-in user/);
          row.push(r.status);
        }
        seen[kind] = row;
      }
      expect(Object.keys(seen)).toHaveLength(5);
    });
  }

  it("no credential, or a bad one, is a 401 with a reason, for every function", async () => {
    const forgedLegacy = await signRoleKey("not-the-project-secret-not-the-project-secret", "service_role");
    const otherKey = await (async () => {
      const { generateKeyPair } = await import("jose");
      const { privateKey } = await generateKeyPair("ES256");
      // Same kid as the project's key, signed by another key: the signature must not verify.
      return await new SignJWT({ role: "service_role" }).setProtectedHeader({
        alg: "ES256",
        kid: stack.keys.signingJwk.kid,
      })
        .setExpirationTime("1h").sign(privateKey);
    })();
    const expired = await signUserJwt(stack.keys, crypto.randomUUID(), { expiresInSeconds: -60 });
    const bad: [string, Headers, RegExp][] = [
      ["nothing", {}, /missing credentials/],
      ["an unknown secret key", { apikey: "sb_secret_not_a_key_of_this_project" }, /unknown secret key/],
      ["an unknown publishable key", { apikey: "sb_publishable_not_a_key_of_this_project" }, /unknown publishable key/],
      ["a forged legacy JWT", { authorization: `Bearer ${forgedLegacy}` }, /legacy JWT secret|signature/],
      ["an ES256 JWT from another key", { authorization: `Bearer ${otherKey}` }, /signature/],
      ["an expired user JWT", { apikey: stack.publishableKey, authorization: `Bearer ${expired}` }, /expired/],
      [
        "a bad JWT beside a valid secret key",
        { apikey: stack.secretKey, authorization: "Bearer abc.def.ghi" },
        /malformed|signature/,
      ],
    ];
    for (const fn of FUNCTIONS) {
      for (const [what, headers, reason] of bad) {
        const r = await call(fn.name, fn.read ?? fn.mutation, headers);
        expect(r.status, `${fn.name} with ${what}`).toBe(401);
        expect(r.body.error).toBe("unauthorized");
        expect(String(r.body.details), `${fn.name} with ${what}`).toMatch(reason);
      }
    }
    // health (a GET) refuses with the same answer and the same reason.
    for (const [what, headers, reason] of bad) {
      const r = await fetch(`${stack.apiUrl}/functions/v1/health`, { headers });
      expect(r.status, `health with ${what}`).toBe(401);
      const body = await r.json();
      expect(body.error).toBe("unauthorized");
      expect(String(body.details), `health with ${what}`).toMatch(reason);
    }
  });

  it("a body that is not JSON is the same 400 for every function and every valid caller", async () => {
    const creds = await credentials();
    for (const fn of FUNCTIONS) {
      for (const [kind, headers] of Object.entries(creds) as [Kind, Headers][]) {
        const r = await fetch(`${stack.apiUrl}/functions/v1/${fn.name}`, {
          method: "POST",
          headers: { "content-type": "application/json", ...headers },
          body: "{not json",
        });
        expect(r.status, `${fn.name} with ${kind}`).toBe(400);
        expect(await r.json()).toEqual({ error: "invalid JSON body", details: "the body must be JSON (or empty)" });
      }
    }
  });

  it("a NUL character is a 400 naming the field, never a database error", async () => {
    const creds = await credentials();
    const user = creds["user JWT (ES256)"];
    const s = await call("search", { query: "congé" }, user);
    expect(s.status).toBe(200);
    const logId = (s.body as { logId: string }).logId;
    const cases: [string, unknown, string][] = [
      ["search", { query: "cong\u0000é" }, "query"],
      ["conversations", { action: "answer", logId, response: "Trois\u0000 mois." }, "response"],
      ["conversations", { action: "feedback", logId, rating: 1, comment: "\u0000" }, "comment"],
    ];
    for (const [name, body, field] of cases) {
      const r = await call(name, body, user);
      expect(r.status, `${name} ${field}`).toBe(400);
      expect(r.body.error).toBe("invalid body");
      const details = r.body.details as { properties: Record<string, { errors: string[] }> };
      expect(details.properties[field].errors, `${name} ${field}`).toEqual([expect.stringMatching(/NUL character/)]);
    }
    // Nothing was written: the entry is unanswered and has no feedback.
    const [row] = await db
      .sql`select response, (select count(*)::int from feedback f where f.conversation_entry_id = c.id) as feedback
                                    from conversations c where id = ${logId}`;
    expect(row).toEqual({ response: null, feedback: 0 });
  });

  it("a wrong method is a 405 before anything else", async () => {
    for (const fn of FUNCTIONS) {
      const r = await fetch(`${stack.apiUrl}/functions/v1/${fn.name}`, { method: "GET" });
      expect(r.status).toBe(405);
      expect(r.headers.get("allow")).toBe("POST");
    }
  });

  it("serves the JWKS the user JWTs verify against, without the private part", async () => {
    const r = await fetch(`${stack.apiUrl}/auth/v1/.well-known/jwks.json`);
    const jwks = await r.json();
    expect(jwks.keys).toHaveLength(1);
    expect(jwks.keys[0]).toMatchObject({ kty: "EC", crv: "P-256", alg: "ES256", kid: stack.keys.signingJwk.kid });
    expect(jwks.keys[0]).not.toHaveProperty("d");
  });
});
