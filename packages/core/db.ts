import postgres from "postgres";

/**
 * A postgres.js client for SUPABASE_DB_URL. Prepared statements are off when the URL points at
 * Supabase's transaction pooler (port 6543), which cannot keep them across transactions.
 */
export function connectDb(url: string, options: postgres.Options<Record<string, postgres.PostgresType>> = {}): postgres.Sql {
  const pooled = new URL(url).port === "6543";
  return postgres(url, { max: 4, idle_timeout: 20, prepare: !pooled, onnotice: () => {}, ...options });
}
