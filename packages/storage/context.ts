// What the functions that touch Storage (the files queue's and the Légifrance collector) share at run
// time: one postgres.js pool (SUPABASE_DB_URL) and one supabase-js client (Storage) per function
// instance, created on first use so a missing variable is a clear 500 for the caller rather than a
// crash at import.
import { createClient } from "@supabase/supabase-js";
import type postgres from "postgres";
import { connectDb } from "../core/db.ts";
import { serviceKeyFromEnv } from "../core/auth.ts";
import { parseEnv, platformEnvSchema, readEnv } from "../core/env.ts";
import { type ObjectStore, supabaseObjectStore } from "./object-store.ts";

export interface FilesContext {
  sql: postgres.Sql;
  store: ObjectStore;
  /** The function's environment (for handler settings such as CLIENT_DOCUMENTS_MAX_BYTES). */
  env?: Record<string, string | undefined>;
}

export function lazyContext(): () => FilesContext {
  let ctx: FilesContext | null = null;
  return () => {
    if (ctx) return ctx;
    const env = parseEnv(platformEnvSchema);
    const supabase = createClient(env.SUPABASE_URL, serviceKeyFromEnv(readEnv()), {
      auth: { persistSession: false, autoRefreshToken: false },
    });
    ctx = { sql: connectDb(env.SUPABASE_DB_URL, { max: 4 }), store: supabaseObjectStore(supabase), env: readEnv() };
    return ctx;
  };
}

/** Fire-and-forget self-continuation through pg_net (sent after this statement's commit). */
export async function continueViaPgNet(
  sql: postgres.Sql,
  functionName: string,
  body: Record<string, unknown>,
): Promise<boolean> {
  const [r] = await sql<{ id: string | null }[]>`
    select private.invoke_edge_function(${functionName}, ${sql.json(body as postgres.JSONValue)}, 5000) as id`;
  return r?.id != null;
}
