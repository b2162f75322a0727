// legifrance-collector's request handling: body validation, PISTE configuration from the environment,
// and the MASSIVE self-continuation through pg_net.
import { z } from "zod";
import { errorResponse, guardRequest, json, readsNeedAuthenticated } from "../core/http.ts";
import { parseEnv, readEnv } from "../core/env.ts";
import { pgUuid } from "../core/validation.ts";
import { continueViaPgNet, type FilesContext } from "../storage/context.ts";
import { bucketNameSchema } from "../storage/object-store.ts";
import { PisteClient } from "./client.ts";
import { collectMaintenance, collectMassive, stopMassive } from "./collector.ts";

export const collectorBodySchema = z.discriminatedUnion("mode", [
  z.object({
    mode: z.literal("massive"),
    runId: pgUuid.optional(),
    /** Start the plan over (all cursors back to page 1); only when no run is active. */
    restart: z.boolean().default(false),
    budgetMs: z.number().int().min(1000).max(140_000).optional(),
    /** false: do not re-invoke through pg_net when the budget runs out (manual, step-by-step runs). */
    continue: z.boolean().default(true),
  }).strict(),
  z.object({ mode: z.literal("maintenance"), pageSize: z.number().int().min(50).max(100).default(100) }).strict(),
  z.object({ mode: z.literal("stop") }).strict(),
  z.object({ mode: z.literal("status") }).strict(),
]);
export type CollectorBody = z.infer<typeof collectorBodySchema>;

/** Invocations in a row that fail (after the client's own retries) before a MASSIVE run is closed as failed. */
const MAX_CONSECUTIVE_ERRORS = 3;

const OFFICIAL_OAUTH = "https://oauth.piste.gouv.fr/api/oauth/token";
const OFFICIAL_API = "https://api.piste.gouv.fr/dila/legifrance/lf-engine-app";

export const collectorEnvSchema = z.object({
  PISTE_OAUTH_URL: z.url().default(OFFICIAL_OAUTH),
  PISTE_API_URL: z.url().default(OFFICIAL_API),
  PISTE_CLIENT_ID: z.string().min(1),
  PISTE_CLIENT_SECRET: z.string().min(1),
  LEGIFRANCE_BUCKET: bucketNameSchema.default("agentbasic-legifrance-raw"),
  /** Below PISTE's per-second quota; the client's token bucket holds it across all concurrency. */
  LEGIFRANCE_RPS: z.coerce.number().positive().max(100).default(18),
  LEGIFRANCE_CONCURRENCY: z.coerce.number().int().min(1).max(64).default(8),
  LEGIFRANCE_BUDGET_MS: z.coerce.number().int().min(1000).max(140_000).default(110_000),
});

export function collectorHandler(ctx: () => FilesContext, env: () => Record<string, string | undefined> = readEnv) {
  let client: PisteClient | null = null;
  return async (req: Request): Promise<Response> => {
    const g = await guardRequest(req, collectorBodySchema, readsNeedAuthenticated("mode", ["status"]), env());
    if (!g.ok) return g.response;
    const body = g.value.body;
    try {
      const { sql, store } = ctx();
      if (body.mode === "status") {
        const plan = await sql`select * from public.legifrance_collector_status order by category`;
        const runs = await sql`select id, mode, status, docs_collected, docs_failed, started_at, finished_at
                                 from public.legifrance_collector_runs order by started_at desc limit 5`;
        return json({ plan, runs });
      }
      if (body.mode === "stop") return json({ stopped: await stopMassive(sql) });

      const cfg = parseEnv(collectorEnvSchema, env());
      client ??= new PisteClient({
        oauthUrl: cfg.PISTE_OAUTH_URL,
        apiUrl: cfg.PISTE_API_URL,
        clientId: cfg.PISTE_CLIENT_ID,
        clientSecret: cfg.PISTE_CLIENT_SECRET,
        rps: cfg.LEGIFRANCE_RPS,
      });
      const deps = { sql, api: client, store, bucket: cfg.LEGIFRANCE_BUCKET, concurrency: cfg.LEGIFRANCE_CONCURRENCY };
      const [bucket] = await sql`select id from storage.buckets where id = ${cfg.LEGIFRANCE_BUCKET}`;
      if (!bucket) return errorResponse(500, `bucket ${cfg.LEGIFRANCE_BUCKET} does not exist; create it first`);

      if (body.mode === "maintenance") return json(await collectMaintenance(deps, { pageSize: body.pageSize }));

      if (body.restart && !body.runId) {
        const [active] = await sql`select id from public.legifrance_collector_runs
                                    where mode = 'massive' and status = 'running' and lease_until > now()`;
        if (active) return json({ error: "a massive run is active", runId: active.id }, 409);
        await sql`update public.legifrance_crawl_plan set next_page = 1, done = false, total_results = null, updated_at = now()`;
      }
      const result = await collectMassive(deps, {
        runId: body.runId,
        budgetMs: body.budgetMs ?? cfg.LEGIFRANCE_BUDGET_MS,
      });
      if (!result.acquired) return json({ ...result, error: "another massive run is active" }, 409);
      if (result.error && (result.consecutiveErrors ?? 0) >= MAX_CONSECUTIVE_ERRORS) {
        await sql`select public.legifrance_finish_run(${result.runId}, 'failed', ${result.error})`;
        return json({ ...result, continued: false }, 502);
      }
      let continued = false;
      if (!result.done && !result.stopped && body.continue) {
        continued = await continueViaPgNet(sql, "legifrance-collector", {
          mode: "massive",
          runId: result.runId,
          ...(body.budgetMs ? { budgetMs: body.budgetMs } : {}),
        });
      }
      return json({ ...result, continued });
    } catch (e) {
      return errorResponse(500, "legifrance-collector failed", (e as Error).message);
    }
  };
}
