// Local-only API keys, both of Supabase's schemes, generated on first start and kept in the data dir
// (gitignored, mode 0600). They unlock nothing but this machine's stack.
//   legacy: a random HS256 secret and the anon / service_role JWTs signed with it (the `local_only`
//           claim and the issuer say so to anyone who decodes them);
//   2026:   opaque sb_publishable_… / sb_secret_… keys, and an ES256 key pair (with a kid) that signs
//           user JWTs; its public half is the JWKS served at /auth/v1/.well-known/jwks.json.
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { chmod, mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { exportJWK, generateKeyPair, importJWK, type JSONWebKeySet, type JWK, SignJWT } from "jose";
import type { AuthConfig } from "../core/auth.ts";

export const LOCAL_ISSUER = "supabase-vector-sync-local-stack";

export interface LocalKeys {
  jwtSecret: string;
  anonKey: string;
  serviceRoleKey: string;
  publishableKey: string;
  secretKey: string;
  /** The public JWKS (ES256, with kid). */
  jwks: JSONWebKeySet;
  /** The private half, to sign user JWTs (tests, the demo). */
  signingJwk: JWK;
}

interface NewKeysFile {
  publishableKey: string;
  secretKey: string;
  signingJwk: JWK;
}

async function loadOrCreateNewKeys(dataDir: string): Promise<NewKeysFile> {
  const file = join(dataDir, "api-keys.json");
  if (existsSync(file)) {
    try {
      const k = JSON.parse(await readFile(file, "utf8")) as NewKeysFile;
      if (k.publishableKey?.startsWith("sb_publishable_") && k.secretKey?.startsWith("sb_secret_") && k.signingJwk?.d) {
        return k;
      }
    } catch { /* unreadable: make new ones */ }
  }
  const { privateKey } = await generateKeyPair("ES256", { extractable: true });
  const signingJwk = {
    ...(await exportJWK(privateKey)),
    alg: "ES256",
    use: "sig",
    kid: randomBytes(8).toString("hex"),
  };
  const keys: NewKeysFile = {
    publishableKey: `sb_publishable_${randomBytes(24).toString("base64url")}`,
    secretKey: `sb_secret_${randomBytes(24).toString("base64url")}`,
    signingJwk,
  };
  await mkdir(dataDir, { recursive: true });
  await writeFile(file, JSON.stringify(keys, null, 2) + "\n", { mode: 0o600 });
  await chmod(file, 0o600);
  return keys;
}

function publicJwk(jwk: JWK): JWK {
  const { d: _d, ...pub } = jwk;
  return pub;
}

export async function loadOrCreateJwtSecret(dataDir: string): Promise<string> {
  const file = join(dataDir, "jwt-secret");
  if (existsSync(file)) {
    const s = (await readFile(file, "utf8")).trim();
    if (s.length >= 32) return s;
  }
  await mkdir(dataDir, { recursive: true });
  const secret = randomBytes(48).toString("base64url");
  await writeFile(file, secret + "\n", { mode: 0o600 });
  await chmod(file, 0o600);
  return secret;
}

export async function signRoleKey(
  secret: string,
  role: "anon" | "service_role" | "authenticated",
  extra: Record<string, unknown> = {},
): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return await new SignJWT({ role, local_only: true, ...extra })
    .setProtectedHeader({ alg: "HS256", typ: "JWT" })
    .setIssuer(LOCAL_ISSUER)
    .setIssuedAt(now)
    // Long-lived like the Supabase CLI's local keys; they are regenerated with the secret anyway.
    .setExpirationTime(now + 10 * 365 * 24 * 3600)
    .sign(new TextEncoder().encode(secret));
}

export async function localKeys(dataDir: string): Promise<LocalKeys> {
  const jwtSecret = await loadOrCreateJwtSecret(dataDir);
  const k = await loadOrCreateNewKeys(dataDir);
  return {
    jwtSecret,
    anonKey: await signRoleKey(jwtSecret, "anon"),
    serviceRoleKey: await signRoleKey(jwtSecret, "service_role"),
    publishableKey: k.publishableKey,
    secretKey: k.secretKey,
    jwks: { keys: [publicJwk(k.signingJwk)] },
    signingJwk: k.signingJwk,
  };
}

/** What the platform hands to functions, for both schemes (SUPABASE_* variables). */
export function functionKeyEnv(keys: LocalKeys): Record<string, string> {
  return {
    SUPABASE_ANON_KEY: keys.anonKey,
    SUPABASE_SERVICE_ROLE_KEY: keys.serviceRoleKey,
    SUPABASE_PUBLISHABLE_KEYS: JSON.stringify({ default: keys.publishableKey }),
    SUPABASE_SECRET_KEYS: JSON.stringify({ default: keys.secretKey }),
    SUPABASE_JWKS: JSON.stringify(keys.jwks),
  };
}

/**
 * How the local gateway checks credentials. Unlike a function on a hosted project, the gateway knows
 * the legacy JWT secret (hosted's gateway does too), so HS256 JWTs signed with it are accepted.
 */
export function gatewayAuthConfig(keys: LocalKeys): AuthConfig {
  return {
    secretKeys: [keys.secretKey],
    publishableKeys: [keys.publishableKey],
    jwks: keys.jwks,
    legacyJwtSecret: keys.jwtSecret,
    legacyKeys: [],
  };
}

/** A user JWT as Supabase Auth issues it today: ES256, with the kid of the project's signing key. */
export async function signUserJwt(
  keys: Pick<LocalKeys, "signingJwk">,
  sub: string,
  opts: {
    role?: "authenticated" | "anon" | "service_role";
    expiresInSeconds?: number;
    claims?: Record<string, unknown>;
  } = {},
): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  const key = await importJWK(keys.signingJwk, "ES256");
  return await new SignJWT({
    role: opts.role ?? "authenticated",
    aud: "authenticated",
    local_only: true,
    ...opts.claims,
  })
    .setProtectedHeader({ alg: "ES256", typ: "JWT", kid: keys.signingJwk.kid })
    .setSubject(sub)
    .setIssuer(LOCAL_ISSUER)
    .setIssuedAt(now)
    .setExpirationTime(now + (opts.expiresInSeconds ?? 3600))
    .sign(key);
}
