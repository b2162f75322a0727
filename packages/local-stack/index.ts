// startLocalStack(): the Docker-free stand-in for `supabase start` (see DESIGN.md, "Running it
// without Docker"). One process tree: this Node process (PGlite and its wire-protocol server,
// gateway, Storage, pg_net sender, pg_cron ticker) and one Deno child serving every edge function.
import { existsSync, readdirSync } from "node:fs";
import { type AddressInfo, createServer } from "node:net";
import { mkdir, rm, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import postgres from "postgres";
import { connectDb } from "../core/db.ts";
import { type CronTicker, hasCronStandIn, startCronTicker } from "./cron.ts";
import { listFunctions, readEnvFile, readVerifyJwt } from "./function-config.ts";
import { type FunctionsRuntime, startFunctionsRuntime } from "./functions-runtime.ts";
import { createAuthApi } from "./auth.ts";
import { type Gateway, startGateway, storageCaller } from "./gateway.ts";
import { functionKeyEnv, gatewayAuthConfig, type LocalKeys, localKeys } from "./keys.ts";
import { applyPlatformBootstrap, pushMigrations } from "./migrate.ts";
import { type PgNetSender, startPgNetSender } from "./pg-net.ts";
import { type EmbeddedPostgres, embeddedUrl, startEmbeddedPostgres } from "./pglite.ts";
import { type StackState, stateFile } from "../connection/stack-state.ts";
import { createStorageHandler, sweepOrphanFiles } from "./storage.ts";

const repoRoot = fileURLToPath(new URL("../../", import.meta.url));
const migrationsDir = join(repoRoot, "supabase/migrations");

export interface LocalStackOptions {
  databaseUrl?: string; // a real Postgres (already migrated or not); else embedded PGlite
  dataDir?: string; // default <repo>/.local (PGlite data, storage files, generated keys)
  port?: number; // gateway port; default 54321; 0 = pick a free port
  migrate?: boolean; // default true: platform bootstrap + supabase db push (no-op when up to date)
  functionEnv?: Record<string, string>; // extra env (secrets) for the functions, e.g. OPENAI_BASE_URL
  log?: (line: string) => void;
  // Extensions beyond the shared contract (all optional):
  functionsDir?: string; // default <repo>/supabase/functions (tests point it at fixtures)
  configFile?: string; // default <repo>/supabase/config.toml (verify_jwt per function)
  dbPort?: number; // PGlite socket port; default 54322 with the default gateway port, else 0
  pgNetConcurrency?: number; // requests in flight at once (default 16)
  statusExtra?: Record<string, string>; // extra KEY=value lines for `npm run status` (providers…)
}

export interface LocalStack {
  apiUrl: string; // http://127.0.0.1:<port>
  dbUrl: string; // postgres://… (the given one, or the PGlite socket)
  anonKey: string;
  serviceRoleKey: string; // local-only legacy HS256 JWTs with a `role` claim
  publishableKey: string;
  secretKey: string; // local-only sb_publishable_… / sb_secret_… keys
  keys: LocalKeys; // all of the above, the JWKS and the ES256 signing key (signUserJwt)
  functionsPid: number; // pid of the single Deno process serving every function (for RSS)
  stop(): Promise<void>; // stops everything it started; no orphans
  // Extensions beyond the shared contract:
  functions: string[]; // names served
  startupMs: number;
  storageRoot: string;
  dataDir: string;
  cronTicker: boolean; // true when this stack runs the pg_cron stand-in's jobs
}

export async function startLocalStack(opts: LocalStackOptions = {}): Promise<LocalStack> {
  const t0 = performance.now();
  const startedAt = Date.now();
  const log = opts.log ?? (() => {});
  const dataDir = resolve(opts.dataDir ?? join(repoRoot, ".local"));
  const functionsDir = resolve(opts.functionsDir ?? join(repoRoot, "supabase/functions"));
  const configFile = resolve(opts.configFile ?? join(repoRoot, "supabase/config.toml"));
  const storageRoot = join(dataDir, "storage");
  await mkdir(storageRoot, { recursive: true });

  const stoppers: Array<() => Promise<void>> = [];
  // PGlite goes last, after every client of it (sender, ticker, functions, gateway) has stopped.
  const pglite: { server: EmbeddedPostgres | null } = { server: null };
  let shuttingDown = false;
  const stopAll = async () => {
    shuttingDown = true;
    for (const s of stoppers.splice(0).reverse()) {
      await s().catch((e) => log(`[stack] stop: ${e instanceof Error ? e.message : e}`));
    }
    const server = pglite.server;
    pglite.server = null;
    await server?.stop().catch((e) => log(`[stack] stop PGlite: ${e instanceof Error ? e.message : e}`));
  };

  let dbReady: Promise<unknown> = Promise.resolve();
  try {
    const keys = await localKeys(dataDir);
    const gatewayPort = opts.port ?? 54321;

    // Database: the given one, or PGlite. PGlite's first start runs initdb (a few seconds, once),
    // so it starts in the background while the gateway and the Deno process come up; its URL is
    // known up front (a fixed port, or a free one picked now).
    let dbUrl: string;
    if (opts.databaseUrl) {
      dbUrl = opts.databaseUrl;
    } else {
      const dbPort = opts.dbPort ?? (gatewayPort === 54321 ? 54322 : 0);
      const port = dbPort === 0 ? await freePort() : dbPort;
      dbUrl = embeddedUrl(port);
      dbReady = startEmbeddedPostgres(join(dataDir, "pglite"), port, log).then((e) => {
        pglite.server = e;
        log(`[db] PGlite (embedded, pgvector) at ${dbUrl}, up in ${ms(t0)} ms`);
      });
    }

    // Functions: which exist and their JWT rule. The Deno process starts once the gateway's URL
    // (SUPABASE_URL) is known; migrations run meanwhile.
    const verify = readVerifyJwt(configFile);
    const names = listFunctions(functionsDir);
    let runtime: FunctionsRuntime | null = null;
    let updateState: (patch: Partial<StackState>) => Promise<void> = async () => {};
    const served = new Set(names);
    const sql = connectDb(dbUrl, { max: 4, idle_timeout: 0 });
    stoppers.push(() => sql.end({ timeout: 2 }));
    const auth = gatewayAuthConfig(keys);
    const storage = createStorageHandler({
      sql,
      root: storageRoot,
      caller: (req) => storageCaller(auth, req),
      signingSecret: keys.jwtSecret,
      log,
    });
    let apiUrl = "";
    const authApi = createAuthApi({
      sql,
      auth,
      signingJwk: keys.signingJwk,
      jwks: keys.jwks,
      issuer: () => `${apiUrl}/auth/v1`,
    });
    const gateway: Gateway = await startGateway({
      port: gatewayPort,
      auth,
      jwks: keys.jwks,
      functionsUrl: () => runtime?.url ?? null,
      functionNames: () => served,
      verifyJwt: (name) => verify.get(name) ?? true,
      storage,
      authApi,
      log,
    });
    stoppers.push(() => gateway.stop());
    apiUrl = gateway.url;

    const env: Record<string, string> = {
      SUPABASE_URL: gateway.url,
      SUPABASE_DB_URL: dbUrl,
      ...functionKeyEnv(keys),
      ...readEnvFile(join(functionsDir, ".env")),
      ...opts.functionEnv,
    };
    const migrated = dbReady.then(() =>
      (opts.migrate ?? true)
        ? migrateIfBehind(dbUrl).then((out) => {
          for (const line of out.split("\n")) if (line.trim()) log(`[migrate] ${line.trim()}`);
          log(`[migrate] done at ${ms(t0)} ms`);
        })
        : undefined
    );
    // The Deno process is supervised: if it dies on its own (a crash, a function calling
    // Deno.exit), it is started again, as the platform starts a fresh worker.
    let stopped = false;
    const launch = (): Promise<FunctionsRuntime> =>
      startFunctionsRuntime({
        functionsDir,
        env,
        log,
        onUnexpectedExit: (code, signal) => {
          // Ctrl-C reaches the whole process group, Deno included: that is a shutdown, not a crash.
          if (stopped || shuttingDown || signal === "SIGINT" || signal === "SIGTERM" || signal === "SIGHUP") return;
          log(`[functions] Deno process exited unexpectedly (code ${code}); restarting`);
          runtime = null;
          setTimeout(() => {
            if (stopped || shuttingDown) return;
            launch().then((r) => {
              if (stopped || shuttingDown) return void r.stop();
              runtime = r;
              log(`[functions] Deno restarted (pid ${r.pid})`);
              void updateState({ functionsPid: r.pid });
            }).catch((e) => log(`[functions] restart failed: ${e instanceof Error ? e.message : e}`));
          }, 500);
        },
      });
    stoppers.push(async () => {
      stopped = true;
      await runtime?.stop();
    });
    const functionsStarted = launch().then((r) => {
      log(`[functions] Deno serving ${r.loaded.length} function(s) at ${ms(t0)} ms`);
      runtime = r;
      return r;
    });
    const [, rt] = await Promise.allSettled([migrated, functionsStarted]).then(([m, f]) => {
      if (m.status === "rejected") throw m.reason;
      if (f.status === "rejected") throw f.reason;
      return [m.value, f.value] as const;
    });

    if (!opts.databaseUrl) {
      // PGlite has one backend session, started before the bootstrap's `alter database set
      // search_path` (which only affects new sessions); apply it now so `vector` and its operators
      // resolve for every client, as they will after the next restart.
      await sql`select set_config('search_path', '"$user", public, extensions', false)`;
    }

    // Vault entries that private.invoke_edge_function (cron jobs, webhooks) reads: the 2026 scheme, a
    // secret key (sent as apikey). A legacy `service_role_key` entry is used only when no `secret_key` exists.
    await sql.begin(async (tx) => {
      for (const [name, value] of [["project_url", gateway.url], ["secret_key", keys.secretKey]] as const) {
        const [row] = await tx<{ id: string }[]>`select id from vault.secrets where name = ${name}`;
        if (row) await tx`select vault.update_secret(${row.id}::uuid, ${value})`;
        else await tx`select vault.create_secret(${value}, ${name}, 'written by the local stack (local-only)')`;
      }
    });

    const onPglite = !opts.databaseUrl;
    const sender: PgNetSender | null = await hasPgNetStandIn(sql)
      ? await startPgNetSender({ dbUrl, log, listen: true, concurrency: opts.pgNetConcurrency })
      : null;
    if (sender) stoppers.push(() => sender.stop());
    const ticker: CronTicker | null = (await hasCronStandIn(sql)) ? startCronTicker({ dbUrl, log }) : null;
    if (ticker) stoppers.push(() => ticker.stop());
    // Embedding jobs left by a previous run of the stack (a crash or a stop mid-drain) have no worker:
    // the webhook fires only on new jobs and the safety-net cron every 5 minutes. Wake the workers for
    // that backlog now, as the cron would (nothing is called when nothing is ready).
    if (onPglite) {
      // PGlite is this stack's own database and no worker outlives the stack: every job still held is
      // a dead worker's. Its lease ends now (the next worker returns it, counting the attempt) rather
      // than up to 180 s from now.
      await sql`update public.embedding_sync_queue set lease_until = clock_timestamp() - interval '1 second'
                where status = 'processing' and lease_until > clock_timestamp()`
        .catch((e) => log(`[stack] ending the dead workers' leases: ${e instanceof Error ? e.message : e}`));
    }
    if (sender) {
      void sql`select private.fan_out_embedding_workers()
               where to_regprocedure('private.fan_out_embedding_workers(int)') is not null`
        .then((r) => r.length && log("[stack] woke the embedding workers for the backlog found at start"))
        .catch((e) => log(`[stack] waking the embedding workers: ${e instanceof Error ? e.message : e}`));
    }
    // In the background (a stop just cuts it short): files a crash left without a row (storage.ts).
    // Every file older than this start was written by an earlier process (one stack per data dir), so
    // none is an upload in flight: all of them are judged now, not once they are 10 minutes old.
    void sweepOrphanFiles(sql, storageRoot, Date.now() - startedAt)
      .then((n) => n > 0 && log(`[storage] removed ${n} orphaned file(s) left by an interrupted write`))
      .catch(() => {});

    const startupMs = Math.round(performance.now() - t0);
    const state: StackState = {
      pid: process.pid,
      startedAt: new Date().toISOString(),
      startupMs,
      apiUrl: gateway.url,
      dbUrl,
      anonKey: keys.anonKey,
      serviceRoleKey: keys.serviceRoleKey,
      publishableKey: keys.publishableKey,
      secretKey: keys.secretKey,
      functionsPid: rt.pid,
      functions: rt.loaded,
      functionsFailed: rt.failed,
      database: onPglite ? "pglite" : "postgres",
      pgNet: sender ? "local-stack sender" : "pg_net extension",
      pgCron: ticker ? "local-stack ticker" : "pg_cron extension",
      storageRoot,
      extra: opts.statusExtra ?? {},
    };
    const file = stateFile(dataDir);
    await writeFile(file, JSON.stringify(state, null, 2) + "\n", { mode: 0o600 });
    updateState = async (patch) => {
      if (stopped) return;
      Object.assign(state, patch);
      await writeFile(file, JSON.stringify(state, null, 2) + "\n", { mode: 0o600 }).catch(() => {});
    };
    stoppers.push(async () => {
      if (existsSync(file)) await rm(file, { force: true });
    });

    let stopping: Promise<void> | null = null;
    return {
      apiUrl: gateway.url,
      dbUrl,
      anonKey: keys.anonKey,
      serviceRoleKey: keys.serviceRoleKey,
      publishableKey: keys.publishableKey,
      secretKey: keys.secretKey,
      keys,
      // A getter: the pid changes if the supervisor restarts the Deno process.
      get functionsPid() {
        return runtime?.pid ?? rt.pid;
      },
      functions: rt.loaded,
      startupMs,
      storageRoot,
      dataDir,
      cronTicker: ticker !== null,
      stop: () => (stopping ??= stopAll()),
    };
  } catch (e) {
    await dbReady.catch(() => {}); // so a PGlite still starting is stopped too
    await stopAll();
    throw e;
  }
}

/**
 * The platform bootstrap (idempotent), then `supabase db push` only when a file in
 * supabase/migrations is not yet recorded in supabase_migrations.schema_migrations: the CLI's own
 * check costs about two seconds of every start, and when everything is recorded it would do nothing.
 */
async function migrateIfBehind(dbUrl: string): Promise<string> {
  await applyPlatformBootstrap(dbUrl);
  const files = existsSync(migrationsDir)
    ? readdirSync(migrationsDir).map((f) => /^(\d+)_.*\.sql$/.exec(f)?.[1]).filter((v): v is string => !!v)
    : [];
  const sql = postgres(dbUrl, { max: 1, onnotice: () => {} });
  try {
    const [{ reg }] = await sql<
      { reg: string | null }[]
    >`select to_regclass('supabase_migrations.schema_migrations')::text as reg`;
    if (reg) {
      const applied = new Set(
        (await sql<{ version: string }[]>`select version from supabase_migrations.schema_migrations`).map((r) =>
          r.version
        ),
      );
      if (files.every((v) => applied.has(v))) {
        return `Local database is up to date (${files.length} migrations recorded).`;
      }
    }
  } finally {
    await sql.end({ timeout: 2 });
  }
  return await pushMigrations(dbUrl);
}

const ms = (t0: number) => Math.round(performance.now() - t0);

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address() as AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

async function hasPgNetStandIn(sql: postgres.Sql): Promise<boolean> {
  const [row] = await sql<{ d: string | null }[]>`
    select obj_description(oid, 'pg_namespace') as d from pg_namespace where nspname = 'net'`;
  return row?.d === "local-stack pg_net stand-in";
}
