// What every edge function entry does at its boundary: method check, authentication, the role the
// action needs, a zod-validated body, JSON answers. Runtime-agnostic (Fetch API only), so it runs under Deno and Node alike.
import { z } from "zod";
import { type AuthConfig, authConfigFromEnv, authenticate, type Caller, type Role, roleSatisfies } from "./auth.ts";
import { readEnv } from "./env.ts";
import { NUL_MESSAGE, nulPaths } from "./validation.ts";

export function json(body: unknown, status = 200, headers: HeadersInit = {}): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json", ...headers },
  });
}

export function errorResponse(status: number, error: string, details?: unknown): Response {
  return json(details === undefined ? { error } : { error, details }, status);
}

/** The 401 every function answers, with why the credential was refused. */
export const unauthorizedResponse = (why: string) => errorResponse(401, "unauthorized", why);

/** The authenticated caller's role, or null: for fixtures and simple functions. */
export async function callerRole(req: Request): Promise<Role | null> {
  const r = await authenticateRequest(req);
  return r.ok ? r.value.role : null;
}

export type Parsed<T> = { ok: true; value: T } | { ok: false; response: Response };

/** Reads a JSON body; an empty body is `{}`. `undefined` when it is not JSON. */
export async function readJson(req: Request): Promise<unknown> {
  try {
    const text = await req.text();
    return text.trim() === "" ? {} : JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** The answer to a body that is not JSON, the same from every function. */
export const invalidJsonResponse = () => errorResponse(400, "invalid JSON body", "the body must be JSON (or empty)");

/**
 * Validates a parsed body; a schema mismatch is a 400 with the issues. A NUL character anywhere in
 * the body (a value or a key) is such an issue, at its field, whatever the schema.
 */
export function validateBody<S extends z.ZodType>(raw: unknown, schema: S): Parsed<z.infer<S>> {
  if (raw === undefined) return { ok: false, response: invalidJsonResponse() };
  const nul = nulPaths(raw);
  if (nul.length) {
    const error = new z.ZodError(
      nul.map((path) => ({ code: "custom" as const, path, message: NUL_MESSAGE, input: undefined })),
    );
    return { ok: false, response: errorResponse(400, "invalid body", z.treeifyError(error)) };
  }
  const result = schema.safeParse(raw);
  if (!result.success) {
    return { ok: false, response: errorResponse(400, "invalid body", z.treeifyError(result.error)) };
  }
  return { ok: true, value: result.data };
}

let cachedAuth: { key: string; config: AuthConfig } | null = null;
const AUTH_VARS = [
  "SUPABASE_SECRET_KEYS",
  "SUPABASE_SECRET_KEY",
  "SUPABASE_PUBLISHABLE_KEYS",
  "SUPABASE_PUBLISHABLE_KEY",
  "SUPABASE_JWKS",
  "SUPABASE_JWT_SECRET",
  "SUPABASE_SERVICE_ROLE_KEY",
  "SUPABASE_ANON_KEY",
] as const;

/** The function's AuthConfig from its environment, parsed again only when those variables change. */
export function platformAuthConfig(env: Record<string, string | undefined> = readEnv()): AuthConfig {
  const key = AUTH_VARS.map((v) => env[v] ?? "").join("\u0000");
  if (cachedAuth?.key !== key) cachedAuth = { key, config: authConfigFromEnv(env) };
  return cachedAuth.config;
}

/**
 * The caller, or the 401 (500 for a malformed platform variable) to answer with. `env` is the
 * function's environment (default: the process's).
 */
export async function authenticateRequest(
  req: Request,
  env?: Record<string, string | undefined>,
): Promise<Parsed<Caller>> {
  let cfg: AuthConfig;
  try {
    cfg = platformAuthConfig(env);
  } catch (e) {
    return { ok: false, response: errorResponse(500, "authentication is misconfigured", (e as Error).message) };
  }
  const r = await authenticate(req, cfg);
  if (!r.ok) return { ok: false, response: unauthorizedResponse(r.error) };
  return { ok: true, value: r.caller };
}

/** The role an action needs, read from the raw (not yet validated) body, so rights are checked before the body. */
export type RequiredRole = (raw: unknown) => Role;
export const serviceOnly: RequiredRole = () => "service_role";

/**
 * Reads the field that names the action (`action`, `mode`) of a raw body, and says which role it needs:
 * the listed read-only actions need an authenticated caller, everything else (unknown or missing actions
 * included) the service role.
 */
export function readsNeedAuthenticated(field: string, reads: string[]): RequiredRole {
  return (raw) => {
    const v = raw && typeof raw === "object" ? (raw as Record<string, unknown>)[field] : undefined;
    return typeof v === "string" && reads.includes(v) ? "authenticated" : "service_role";
  };
}

/**
 * Every function's boundary, in this order (one rule for all functions):
 *   405 for a method other than POST (with Allow);
 *   401 without a valid credential (apikey or Bearer, both key schemes: see auth.ts);
 *   400 `invalid JSON body` for a body that does not parse: the action cannot be read from it, so
 *       there is no role to compare (every valid caller gets this same answer, whatever the function);
 *   403 when the caller's role is below what the action needs (read from the raw body, before validating it);
 *   400 for a body the schema refuses (a NUL character anywhere included), with the issues.
 */
export async function guardRequest<S extends z.ZodType>(
  req: Request,
  schema: S,
  requiredRole: RequiredRole = serviceOnly,
  env?: Record<string, string | undefined>,
): Promise<Parsed<{ body: z.infer<S>; caller: Caller }>> {
  if (req.method !== "POST") {
    return { ok: false, response: json({ error: "method not allowed" }, 405, { allow: "POST" }) };
  }
  const auth = await authenticateRequest(req, env);
  if (!auth.ok) return auth;
  const caller = auth.value;
  const raw = await readJson(req);
  if (raw === undefined) return { ok: false, response: invalidJsonResponse() };
  const needed = requiredRole(raw);
  if (!roleSatisfies(caller.role, needed)) {
    return {
      ok: false,
      response: errorResponse(
        403,
        "forbidden",
        needed === "service_role"
          ? `this action requires the service role (a secret key); the caller is ${caller.role}`
          : `this action requires a signed-in user or the service role; the caller is ${caller.role}`,
      ),
    };
  }
  const parsed = validateBody(raw, schema);
  if (!parsed.ok) return parsed;
  return { ok: true, value: { body: parsed.value, caller } };
}
