// Reads the environment an edge function gets from the platform (hosted Supabase or the local stack).
import { z } from "zod";

type EnvSource = Record<string, string | undefined>;

/** Deno.env in functions, process.env in Node; both are plain string maps to the schema. */
export function readEnv(): EnvSource {
  const g = globalThis as { Deno?: { env: { toObject(): EnvSource } }; process?: { env: EnvSource } };
  return g.Deno ? g.Deno.env.toObject() : (g.process?.env ?? {});
}

export const platformEnvSchema = z.object({
  SUPABASE_URL: z.url(),
  SUPABASE_DB_URL: z.string().min(1),
  // Legacy keys: still provided by the platform, but a project may run on the new keys alone
  // (SUPABASE_SECRET_KEYS / SUPABASE_PUBLISHABLE_KEYS, read by core/auth.ts).
  SUPABASE_ANON_KEY: z.string().min(1).optional(),
  SUPABASE_SERVICE_ROLE_KEY: z.string().min(1).optional(),
});

/** Parses env against a schema; a missing or bad variable is a clear error naming it, never its value. */
export function parseEnv<S extends z.ZodObject>(schema: S, source: EnvSource = readEnv()): z.infer<S> {
  const r = schema.safeParse(source);
  if (!r.success) {
    const names = r.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("; ");
    throw new Error(`invalid function environment: ${names}`);
  }
  return r.data;
}
