// Local-only API keys: a random HS256 secret generated on first start and kept in the data dir
// (gitignored), and the anon / service_role JWTs signed with it. They unlock nothing but this
// machine's stack; the `local_only` claim and the issuer say so to anyone who decodes them.
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { chmod, mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { jwtVerify, SignJWT } from "jose";

export const LOCAL_ISSUER = "supabase-vector-sync-local-stack";

export interface LocalKeys {
  jwtSecret: string;
  anonKey: string;
  serviceRoleKey: string;
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

export async function signRoleKey(secret: string, role: "anon" | "service_role" | "authenticated", extra: Record<string, unknown> = {}): Promise<string> {
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
  return {
    jwtSecret,
    anonKey: await signRoleKey(jwtSecret, "anon"),
    serviceRoleKey: await signRoleKey(jwtSecret, "service_role"),
  };
}

export type VerifiedRole = { role: string; claims: Record<string, unknown> };

/** Verifies an HS256 JWT with the local secret; null when missing, malformed, expired or forged. */
export async function verifyJwt(secret: string, token: string | null | undefined): Promise<VerifiedRole | null> {
  if (!token) return null;
  try {
    const { payload } = await jwtVerify(token, new TextEncoder().encode(secret), { algorithms: ["HS256"] });
    const role = typeof payload.role === "string" ? payload.role : null;
    return role ? { role, claims: payload as Record<string, unknown> } : null;
  } catch {
    return null;
  }
}

export function bearerToken(authorization: string | null | undefined): string | null {
  const m = /^Bearer\s+(\S+)$/i.exec(authorization ?? "");
  return m ? m[1] : null;
}
