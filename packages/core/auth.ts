// Who is calling: in-code authentication for both of Supabase's key schemes, as the platform asks of
// functions since the opaque API keys (the gateway's verify_jwt cannot check them, so every function
// runs with verify_jwt = false and calls authenticate()). Runtime-agnostic: Deno and Node alike.
//
// Accepted credentials:
//   apikey (or Bearer) sb_secret_…       matched against SUPABASE_SECRET_KEYS       -> service_role
//   apikey (or Bearer) sb_publishable_…  matched against SUPABASE_PUBLISHABLE_KEYS  -> anon
//   Bearer <JWT> ES256/RS256 with kid     verified against SUPABASE_JWKS             -> its `role` claim
//   Bearer <JWT> HS256 (legacy)           the legacy anon/service_role key itself, or verified with
//                                         SUPABASE_JWT_SECRET when set               -> its `role` claim
// A user JWT in Authorization outranks the apikey beside it (supabase-js sends the publishable key as
// apikey and the session's JWT as Bearer), as PostgREST does. Any credential that is present but not
// valid is a 401: a bad key never falls back to a weaker role.
import { createLocalJWKSet, decodeProtectedHeader, type JSONWebKeySet, type JWTPayload, jwtVerify } from "jose";
import { z } from "zod";

export type Role = "service_role" | "authenticated" | "anon";
export type CredentialKind = "secret_key" | "publishable_key" | "user_jwt" | "legacy_jwt";

export interface Caller {
  role: Role;
  via: CredentialKind;
  /** `sub` of a user JWT. */
  userId?: string;
  claims?: JWTPayload;
}

export interface AuthConfig {
  secretKeys: string[];
  publishableKeys: string[];
  jwks: JSONWebKeySet | null;
  /** Legacy HS256 secret (SUPABASE_JWT_SECRET); hosted projects give it to functions only as a secret you set. */
  legacyJwtSecret: string | null;
  /** The legacy anon and service_role JWTs, accepted by exact match (the platform provides both). */
  legacyKeys: { token: string; role: Role }[];
}

type EnvSource = Record<string, string | undefined>;

const keyDict = z.record(z.string(), z.string().min(1));
const jwksSchema = z.union([
  z.object({ keys: z.array(z.record(z.string(), z.unknown())) }),
  z.array(z.record(z.string(), z.unknown())).transform((keys) => ({ keys })),
]);

function parseJson<T>(raw: string | undefined, schema: z.ZodType<T>, name: string): T | null {
  if (!raw) return null;
  let v: unknown;
  try {
    v = JSON.parse(raw);
  } catch {
    throw new Error(`${name} is not valid JSON`);
  }
  const r = schema.safeParse(v);
  if (!r.success) throw new Error(`${name} has an unexpected shape`);
  return r.data;
}

/**
 * Reads the platform's variables: SUPABASE_SECRET_KEYS / SUPABASE_PUBLISHABLE_KEYS (JSON objects of
 * named keys, e.g. {"default":"sb_secret_…"}, or the singular SUPABASE_SECRET_KEY / _PUBLISHABLE_KEY),
 * SUPABASE_JWKS ({"keys":[…]} or […]), SUPABASE_JWT_SECRET, SUPABASE_SERVICE_ROLE_KEY, SUPABASE_ANON_KEY.
 * A malformed value is an error naming the variable, never showing it.
 */
export function authConfigFromEnv(env: EnvSource): AuthConfig {
  const named = (plural: string, singular: string) => {
    const dict = parseJson(env[plural], keyDict, plural);
    const keys = dict ? Object.values(dict) : [];
    if (env[singular]) keys.push(env[singular]!);
    return keys;
  };
  const legacyKeys: AuthConfig["legacyKeys"] = [];
  if (env.SUPABASE_SERVICE_ROLE_KEY) legacyKeys.push({ token: env.SUPABASE_SERVICE_ROLE_KEY, role: "service_role" });
  if (env.SUPABASE_ANON_KEY) legacyKeys.push({ token: env.SUPABASE_ANON_KEY, role: "anon" });
  return {
    secretKeys: named("SUPABASE_SECRET_KEYS", "SUPABASE_SECRET_KEY").filter((k) => k.startsWith("sb_secret_")),
    publishableKeys: named("SUPABASE_PUBLISHABLE_KEYS", "SUPABASE_PUBLISHABLE_KEY").filter((k) =>
      k.startsWith("sb_publishable_")
    ),
    jwks: parseJson(env.SUPABASE_JWKS, jwksSchema, "SUPABASE_JWKS") as JSONWebKeySet | null,
    legacyJwtSecret: env.SUPABASE_JWT_SECRET || null,
    legacyKeys,
  };
}

/** The key a function's own supabase-js client should use: a secret key, else the legacy service_role JWT. */
export function serviceKeyFromEnv(env: EnvSource): string {
  const cfg = authConfigFromEnv(env);
  const key = cfg.secretKeys[0] ?? env.SUPABASE_SERVICE_ROLE_KEY;
  if (!key) {
    throw new Error("invalid function environment: neither SUPABASE_SECRET_KEYS nor SUPABASE_SERVICE_ROLE_KEY is set");
  }
  return key;
}

export type AuthResult = { ok: true; caller: Caller } | { ok: false; error: string };

/** Constant-time string comparison, so a key cannot be guessed byte by byte from timings. */
function sameKey(a: string, b: string): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return diff === 0;
}

function roleOf(claims: JWTPayload): Role | null {
  const r = claims.role;
  return r === "service_role" || r === "authenticated" || r === "anon" ? r : null;
}

const JWT_SHAPE = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;

function checkApiKey(key: string, cfg: AuthConfig): AuthResult | null {
  if (key.startsWith("sb_secret_")) {
    return cfg.secretKeys.some((k) => sameKey(k, key))
      ? { ok: true, caller: { role: "service_role", via: "secret_key" } }
      : { ok: false, error: "unknown secret key" };
  }
  if (key.startsWith("sb_publishable_")) {
    return cfg.publishableKeys.some((k) => sameKey(k, key))
      ? { ok: true, caller: { role: "anon", via: "publishable_key" } }
      : { ok: false, error: "unknown publishable key" };
  }
  return null;
}

const jwksCache = new WeakMap<JSONWebKeySet, ReturnType<typeof createLocalJWKSet>>();

/** Verifies a JWT: asymmetric against the JWKS (by kid), HS256 as a legacy key or with the legacy secret. */
export async function verifyJwt(token: string, cfg: AuthConfig): Promise<AuthResult> {
  if (!JWT_SHAPE.test(token)) return { ok: false, error: "malformed JWT" };
  let alg: string | undefined;
  try {
    alg = decodeProtectedHeader(token).alg;
  } catch {
    return { ok: false, error: "malformed JWT" };
  }
  let claims: JWTPayload;
  try {
    if (alg === "HS256") {
      const legacy = cfg.legacyKeys.find((k) => sameKey(k.token, token));
      if (legacy && !cfg.legacyJwtSecret) {
        // The platform handed us this exact key: it is authentic; only its expiry is left to check.
        const payload = JSON.parse(new TextDecoder().decode(b64url(token.split(".")[1])));
        if (typeof payload.exp === "number" && payload.exp * 1000 < Date.now()) {
          return { ok: false, error: "expired JWT" };
        }
        claims = payload;
      } else if (cfg.legacyJwtSecret) {
        ({ payload: claims } = await jwtVerify(token, new TextEncoder().encode(cfg.legacyJwtSecret), {
          algorithms: ["HS256"],
        }));
      } else {
        return { ok: false, error: "HS256 JWT, but no legacy JWT secret is configured (SUPABASE_JWT_SECRET)" };
      }
    } else if (alg === "ES256" || alg === "RS256" || alg === "EdDSA") {
      if (!cfg.jwks) return { ok: false, error: "asymmetric JWT, but no JWKS is configured (SUPABASE_JWKS)" };
      let keySet = jwksCache.get(cfg.jwks);
      if (!keySet) jwksCache.set(cfg.jwks, keySet = createLocalJWKSet(cfg.jwks));
      ({ payload: claims } = await jwtVerify(token, keySet, { algorithms: [alg] }));
    } else {
      return { ok: false, error: `unsupported JWT algorithm ${alg ?? "(none)"}` };
    }
  } catch (e) {
    const code = (e as { code?: string }).code;
    return { ok: false, error: code === "ERR_JWT_EXPIRED" ? "expired JWT" : "invalid JWT signature or claims" };
  }
  const role = roleOf(claims);
  if (!role) return { ok: false, error: "JWT has no known role claim" };
  const legacy = alg === "HS256" && role !== "authenticated";
  return {
    ok: true,
    caller: {
      role,
      via: legacy ? "legacy_jwt" : "user_jwt",
      ...(typeof claims.sub === "string" ? { userId: claims.sub } : {}),
      claims,
    },
  };
}

function b64url(s: string): Uint8Array {
  const bin = atob(s.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((s.length + 3) % 4));
  return Uint8Array.from(bin, (c) => c.charCodeAt(0));
}

/** Authenticates a request from its `Authorization: Bearer` and `apikey` headers. */
export async function authenticate(req: Request, cfg: AuthConfig): Promise<AuthResult> {
  const authz = req.headers.get("authorization");
  const bearer = authz ? /^Bearer\s+(\S+)\s*$/i.exec(authz)?.[1] ?? null : null;
  if (authz && !bearer) return { ok: false, error: "Authorization header is not a Bearer token" };
  const apikey = req.headers.get("apikey");

  let fromKey: AuthResult | null = null;
  if (apikey) {
    fromKey = checkApiKey(apikey, cfg) ?? (await verifyJwt(apikey, cfg));
    if (!fromKey.ok) return fromKey;
  }
  if (bearer) {
    const viaBearer = checkApiKey(bearer, cfg) ?? (await verifyJwt(bearer, cfg));
    if (!viaBearer.ok) return viaBearer;
    // A JWT in Authorization is the caller's identity; a key there (supabase-js without a session
    // sends its key as Bearer too) adds nothing to the apikey beside it.
    if (viaBearer.caller.via === "user_jwt" || viaBearer.caller.via === "legacy_jwt" || !fromKey) return viaBearer;
  }
  return fromKey ?? { ok: false, error: "missing credentials: send an apikey header or an Authorization: Bearer JWT" };
}

/** Roles in increasing privilege; a requirement is met by that role or a higher one. */
const RANK: Record<Role, number> = { anon: 0, authenticated: 1, service_role: 2 };
export function roleSatisfies(role: Role, required: Role): boolean {
  return RANK[role] >= RANK[required];
}
