// packages/core/auth.ts on its own: how the platform's variables are read, and who each credential is.
import { exportJWK, generateKeyPair, SignJWT } from "jose";
import { describe, expect, it } from "vitest";
import { authConfigFromEnv, authenticate, serviceKeyFromEnv } from "../packages/core/auth.ts";
import { signRoleKey } from "../packages/local-stack/keys.ts";

const SECRET = "sb_secret_unit_test_only_0123456789";
const PUBLISHABLE = "sb_publishable_unit_test_only_0123456789";
const HS = "unit-test-legacy-jwt-secret-unit-test-legacy-jwt-secret";

async function es256() {
  const { privateKey, publicKey } = await generateKeyPair("ES256", { extractable: true });
  const kid = "kid-unit-1";
  const jwks = { keys: [{ ...(await exportJWK(publicKey)), kid, alg: "ES256" }] };
  const sign = (claims: Record<string, unknown>, opts: { kid?: string; exp?: string | number } = {}) =>
    new SignJWT(claims).setProtectedHeader({ alg: "ES256", kid: opts.kid ?? kid }).setExpirationTime(opts.exp ?? "1h")
      .sign(privateKey);
  return { jwks, sign };
}

function req(headers: Record<string, string>): Request {
  return new Request("http://fn/", { method: "POST", headers });
}

describe("authConfigFromEnv", () => {
  it("reads the platform's JSON dictionaries, the singular fallbacks and both JWKS shapes", async () => {
    const { jwks } = await es256();
    const a = authConfigFromEnv({
      SUPABASE_SECRET_KEYS: JSON.stringify({ default: SECRET, other: "sb_secret_second_key_for_rotation" }),
      SUPABASE_PUBLISHABLE_KEY: PUBLISHABLE,
      SUPABASE_JWKS: JSON.stringify(jwks.keys),
    });
    expect(a.secretKeys).toEqual([SECRET, "sb_secret_second_key_for_rotation"]);
    expect(a.publishableKeys).toEqual([PUBLISHABLE]);
    expect(a.jwks?.keys).toHaveLength(1);
    expect(authConfigFromEnv({ SUPABASE_JWKS: JSON.stringify(jwks) }).jwks?.keys[0].kid).toBe("kid-unit-1");
  });

  it("a malformed variable is an error naming it, never showing its value", () => {
    expect(() => authConfigFromEnv({ SUPABASE_SECRET_KEYS: "sb_secret_oops_not_json" })).toThrow(
      /^SUPABASE_SECRET_KEYS is not valid JSON$/,
    );
    expect(() => authConfigFromEnv({ SUPABASE_JWKS: '{"nope":1}' })).toThrow(/SUPABASE_JWKS has an unexpected shape/);
  });

  it("the functions' own client key: a secret key first, else the legacy service_role JWT", () => {
    expect(
      serviceKeyFromEnv({
        SUPABASE_SECRET_KEYS: JSON.stringify({ default: SECRET }),
        SUPABASE_SERVICE_ROLE_KEY: "legacy",
      }),
    ).toBe(SECRET);
    expect(serviceKeyFromEnv({ SUPABASE_SERVICE_ROLE_KEY: "legacy" })).toBe("legacy");
    expect(() => serviceKeyFromEnv({})).toThrow(/SUPABASE_SECRET_KEYS nor SUPABASE_SERVICE_ROLE_KEY/);
  });
});

describe("authenticate", () => {
  it("each credential kind is the role it stands for", async () => {
    const { jwks, sign } = await es256();
    const legacyService = await signRoleKey(HS, "service_role");
    const cfg = authConfigFromEnv({
      SUPABASE_SECRET_KEYS: JSON.stringify({ default: SECRET }),
      SUPABASE_PUBLISHABLE_KEYS: JSON.stringify({ default: PUBLISHABLE }),
      SUPABASE_JWKS: JSON.stringify(jwks),
      SUPABASE_SERVICE_ROLE_KEY: legacyService,
    });
    const user = await sign({ role: "authenticated", sub: "6a1b7c1e-0000-4000-8000-000000000001" });
    const cases: [Record<string, string>, string, string][] = [
      [{ apikey: SECRET }, "service_role", "secret_key"],
      [{ authorization: `Bearer ${SECRET}` }, "service_role", "secret_key"],
      [{ apikey: PUBLISHABLE }, "anon", "publishable_key"],
      [{ apikey: PUBLISHABLE, authorization: `Bearer ${PUBLISHABLE}` }, "anon", "publishable_key"],
      [{ apikey: PUBLISHABLE, authorization: `Bearer ${user}` }, "authenticated", "user_jwt"],
      [{ authorization: `Bearer ${legacyService}` }, "service_role", "legacy_jwt"],
    ];
    for (const [headers, role, via] of cases) {
      const r = await authenticate(req(headers), cfg);
      expect(r, JSON.stringify(headers).slice(0, 60)).toMatchObject({ ok: true, caller: { role, via } });
    }
    const u = await authenticate(req({ authorization: `Bearer ${user}` }), cfg);
    expect(u.ok && u.caller.userId).toBe("6a1b7c1e-0000-4000-8000-000000000001");
  });

  it("refuses what is not authentic, with the reason", async () => {
    const { jwks, sign } = await es256();
    const cfg = authConfigFromEnv({
      SUPABASE_SECRET_KEYS: JSON.stringify({ default: SECRET }),
      SUPABASE_JWKS: JSON.stringify(jwks),
    });
    const cases: [Record<string, string>, RegExp][] = [
      [{}, /missing credentials/],
      [{ apikey: SECRET.slice(0, -1) + "X" }, /unknown secret key/],
      [{ apikey: PUBLISHABLE }, /unknown publishable key/],
      [
        { authorization: `Bearer ${await sign({ role: "authenticated" }, { kid: "another-kid" })}` },
        /signature or claims/,
      ],
      [{
        authorization: `Bearer ${await sign({ role: "authenticated" }, { exp: Math.floor(Date.now() / 1000) - 10 })}`,
      }, /expired/],
      [{ authorization: `Bearer ${await sign({ role: "superuser" })}` }, /no known role/],
      // A legacy HS256 JWT that is not one of the platform's keys needs the legacy secret to verify.
      [{ authorization: `Bearer ${await signRoleKey(HS, "service_role")}` }, /no legacy JWT secret/],
      [{ authorization: "Basic abc" }, /not a Bearer token/],
      [{ apikey: SECRET, authorization: "Bearer not-a-jwt" }, /malformed JWT/],
    ];
    for (const [headers, reason] of cases) {
      const r = await authenticate(req(headers), cfg);
      expect(r.ok, JSON.stringify(headers).slice(0, 80)).toBe(false);
      expect(!r.ok && r.error).toMatch(reason);
    }
  });

  it("with the legacy JWT secret, HS256 user JWTs verify and forged ones do not", async () => {
    const cfg = authConfigFromEnv({ SUPABASE_JWT_SECRET: HS });
    const user = await signRoleKey(HS, "authenticated", { sub: "u-1" });
    expect(await authenticate(req({ authorization: `Bearer ${user}` }), cfg)).toMatchObject({
      ok: true,
      caller: { role: "authenticated", via: "user_jwt", userId: "u-1" },
    });
    const forged = await signRoleKey(HS.replace("unit", "fake"), "service_role");
    const bad = await authenticate(req({ authorization: `Bearer ${forged}` }), cfg);
    expect(bad.ok).toBe(false);
    expect(!bad.ok && bad.error).toMatch(/signature/);
  });
});
