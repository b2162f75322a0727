// packages/core/http.ts's guard and packages/core/validation.ts on their own: the order of the checks,
// NUL characters, and the UUID spellings PostgreSQL accepts.
import { exportJWK, generateKeyPair, SignJWT } from "jose";
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { guardRequest, readsNeedAuthenticated, type RequiredRole } from "../packages/core/http.ts";
import { pgUuid } from "../packages/core/validation.ts";
import { conversationsBodySchema } from "../packages/search/conversations.ts";
import { searchBodySchema } from "../packages/search/search.ts";

const SECRET = "sb_secret_http_unit_test_only_0123456789";
const { privateKey, publicKey } = await generateKeyPair("ES256", { extractable: true });
const env = {
  SUPABASE_SECRET_KEYS: JSON.stringify({ default: SECRET }),
  SUPABASE_JWKS: JSON.stringify({ keys: [{ ...(await exportJWK(publicKey)), kid: "k1", alg: "ES256" }] }),
};
const userJwt = await new SignJWT({ role: "authenticated", sub: "6a1b7c1e-0000-4000-8000-000000000001" })
  .setProtectedHeader({ alg: "ES256", kid: "k1" }).setExpirationTime("1h").sign(privateKey);
const asUser = { authorization: `Bearer ${userJwt}` };
const asService = { apikey: SECRET };

function post(headers: Record<string, string>, body: string): Request {
  return new Request("http://fn/", {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body,
  });
}
const conversationsRole = readsNeedAuthenticated("action", ["answer", "feedback", "list", "archive"]);

async function guard(schema: z.ZodType, headers: Record<string, string>, body: string, role = conversationsRole) {
  const g = await guardRequest(post(headers, body), schema, role, env);
  if (g.ok) return { status: 200, body: g.value.body as Record<string, unknown> };
  return { status: g.response.status, body: await g.response.json() };
}

describe("a NUL character in a body", () => {
  it("is a 400 naming the field, in search and conversations bodies alike", async () => {
    const logId = crypto.randomUUID();
    const cases: [z.ZodType, string, string[]][] = [
      [searchBodySchema, JSON.stringify({ query: "cong\u0000é" }), ["query"]],
      [conversationsBodySchema, JSON.stringify({ action: "answer", logId, response: "a\u0000b" }), ["response"]],
      [conversationsBodySchema, JSON.stringify({ action: "feedback", logId, rating: 1, comment: "\u0000" }), [
        "comment",
      ]],
      // Metadata filters reach jsonb: a value and a key are both refused.
      [searchBodySchema, JSON.stringify({ query: "bail", filter: { path: "x\u0000" } }), ["filter", "path"]],
      [searchBodySchema, JSON.stringify({ query: "bail", filter: { "pa\u0000ge": 3 } }), ["filter", "pa\u0000ge"]],
    ];
    for (const [schema, body, path] of cases) {
      for (const headers of [asUser, asService]) {
        const r = await guard(schema, headers, body, () => "authenticated");
        expect(r.status, body).toBe(400);
        expect(r.body.error).toBe("invalid body");
        let node = r.body.details;
        for (const key of path) node = node.properties[key];
        expect(node.errors, body).toEqual([expect.stringMatching(/NUL character/)]);
      }
    }
  });

  it("leaves every other character alone", async () => {
    const r = await guard(
      searchBodySchema,
      asUser,
      JSON.stringify({ query: "congé \u0001 \uffff 🙂" }),
      () => "authenticated",
    );
    expect(r.status).toBe(200);
    expect(r.body.query).toBe("congé \u0001 \uffff 🙂");
  });
});

describe("a body that is not JSON", () => {
  it("is the same 400 for every valid caller, before the role check", async () => {
    const signedIn: RequiredRole = () => "authenticated";
    for (
      const [schema, role] of [[searchBodySchema, signedIn], [conversationsBodySchema, conversationsRole]] as const
    ) {
      for (const headers of [asUser, asService]) {
        const r = await guard(schema, headers, "{not json", role);
        expect(r.status).toBe(400);
        expect(r.body).toEqual({ error: "invalid JSON body", details: "the body must be JSON (or empty)" });
      }
    }
    // Still after authentication: no credential is a 401 whatever the body.
    expect((await guard(conversationsBodySchema, {}, "{not json")).status).toBe(401);
  });
});

describe("pgUuid", () => {
  it("accepts every spelling PostgreSQL's uuid input accepts, in canonical form", () => {
    const canonical = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11";
    for (
      const s of [
        canonical,
        "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11",
        "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}",
        "a0eebc999c0b4ef8bb6d6bb9bd380a11",
        "a0ee-bc99-9c0b-4ef8-bb6d-6bb9-bd38-0a11",
        "{a0eebc99-9c0b4ef8-bb6d6bb9-bd380a11}",
      ]
    ) expect(pgUuid.parse(s), s).toBe(canonical);
    // No version or variant digit is required: PostgreSQL stores any 128 bits.
    expect(pgUuid.parse("00000000-0000-0000-0000-0000000000aa")).toBe("00000000-0000-0000-0000-0000000000aa");
  });

  it("refuses what PostgreSQL refuses", () => {
    for (
      const s of [
        "",
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1",
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11-",
        "{a0eebc999c0b4ef8bb6d6bb9bd380a11",
        "a0eebc9-99c0b-4ef8-bb6d-6bb9bd380a11",
        "a0eebc99--9c0b-4ef8-bb6d-6bb9bd380a11",
        "g0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        " a0eebc999c0b4ef8bb6d6bb9bd380a11",
      ]
    ) {
      expect(pgUuid.safeParse(s).success, s).toBe(false);
    }
  });

  it("conversations take the id PostgreSQL would", async () => {
    const r = await guard(
      conversationsBodySchema,
      asUser,
      JSON.stringify({ action: "archive", conversationId: "00000000-0000-0000-0000-0000000000AA" }),
    );
    expect(r).toEqual({
      status: 200,
      body: { action: "archive", conversationId: "00000000-0000-0000-0000-0000000000aa" },
    });
  });
});
