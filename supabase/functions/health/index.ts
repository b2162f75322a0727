// health: GET /functions/v1/health[?probe=provider] → { status, environment, checked_at, checks };
// 200 unless a check fails (503). Details for the service role only. Also the dashboard's data
// (GET /health/dashboard) and its dead-letter retry (POST /health/retry). Logic in packages/ops/.
import type postgres from "postgres";
import { connectDb } from "../../../packages/core/db.ts";
import { parseEnv, platformEnvSchema, readEnv } from "../../../packages/core/env.ts";
import { authenticateRequest } from "../../../packages/core/http.ts";
import { createHealthHandler } from "../../../packages/ops/handler.ts";
import { SHIPPED_MIGRATIONS } from "../../../packages/ops/migrations.generated.ts";

let sql: postgres.Sql | null = null;
const handle = createHealthHandler({
  sql: () => (sql ??= connectDb(parseEnv(platformEnvSchema).SUPABASE_DB_URL, { max: 4, connect_timeout: 5 })),
  authorize: async (req) => {
    const r = await authenticateRequest(req);
    return r.ok ? { ok: true, value: r.value.role } : r;
  },
  options: () => ({ expectedMigrations: SHIPPED_MIGRATIONS, embeddingEnv: readEnv() }),
});

export default { fetch: handle } satisfies Deno.ServeDefaultExport;
