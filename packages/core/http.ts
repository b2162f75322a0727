// What every edge function entry does at its boundary: method check, caller role, zod-validated body,
// JSON answers. Runtime-agnostic (Fetch API only), so it runs under Deno and Node alike.
import { z } from "zod";

export function json(body: unknown, status = 200, headers: HeadersInit = {}): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json", ...headers },
  });
}

export function errorResponse(status: number, error: string, details?: unknown): Response {
  return json(details === undefined ? { error } : { error, details }, status);
}

export type CallerRole = "service_role" | "authenticated" | "anon" | "unknown";

/**
 * The caller's role, read from the Bearer JWT's `role` claim. The gateway (hosted Supabase, or the
 * local stack) has already verified the signature when the function has verify_jwt = true, so only
 * the claims are read here. A missing or unreadable token is `null`.
 */
export function callerRole(req: Request): CallerRole | null {
  const auth = req.headers.get("authorization") ?? "";
  const m = /^Bearer\s+([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]*)$/.exec(auth);
  if (!m) return null;
  try {
    const payload = JSON.parse(new TextDecoder().decode(base64UrlDecode(m[2])));
    const role = payload?.role;
    return role === "service_role" || role === "authenticated" || role === "anon" ? role : "unknown";
  } catch {
    return null;
  }
}

function base64UrlDecode(s: string): Uint8Array {
  const b64 = s.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((s.length + 3) % 4);
  const bin = atob(b64);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

export type Parsed<T> = { ok: true; value: T } | { ok: false; response: Response };

/** Reads and validates a JSON body. Invalid JSON or a schema mismatch is a 400 with the issues. */
export async function parseJsonBody<S extends z.ZodType>(req: Request, schema: S): Promise<Parsed<z.infer<S>>> {
  let raw: unknown;
  try {
    const text = await req.text();
    raw = text.trim() === "" ? {} : JSON.parse(text);
  } catch {
    return { ok: false, response: errorResponse(400, "invalid JSON body") };
  }
  const result = schema.safeParse(raw);
  if (!result.success) {
    return { ok: false, response: errorResponse(400, "invalid body", z.treeifyError(result.error)) };
  }
  return { ok: true, value: result.data };
}

/**
 * The common guard: only POST (405 otherwise, with Allow), a JWT (401 otherwise), and a validated
 * body. `requireServiceRole(body)` says whether this body needs the service role (403 otherwise).
 */
export async function guardRequest<S extends z.ZodType>(
  req: Request,
  schema: S,
  requireServiceRole: (body: z.infer<S>) => boolean = () => true,
): Promise<Parsed<{ body: z.infer<S>; role: CallerRole }>> {
  if (req.method !== "POST") {
    return { ok: false, response: json({ error: "method not allowed" }, 405, { allow: "POST" }) };
  }
  const role = callerRole(req);
  if (!role) return { ok: false, response: errorResponse(401, "missing or invalid JWT") };
  const parsed = await parseJsonBody(req, schema);
  if (!parsed.ok) return parsed;
  if (role !== "service_role" && requireServiceRole(parsed.value)) {
    return { ok: false, response: errorResponse(403, "this action requires the service role") };
  }
  return { ok: true, value: { body: parsed.value, role } };
}
