// The fault harness's building blocks, shared by `npm run bench:faults` and the short version in
// `npm test`: a durable private PostgreSQL with our migrations and the local stack on it, work that
// runs the way a deployment runs it (rows written, webhooks and pg_cron wake the functions), a fault
// at a random point of a window, and the invariants checked in SQL afterwards.
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer, request, type Server } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import postgres from "postgres";
import { type LocalStack, startLocalStack } from "../local-stack/index.ts";
import { migrate } from "../local-stack/migrate.ts";
import { readState } from "../connection/stack-state.ts";
import { type DurableCluster, startDurableCluster } from "./durable-postgres.ts";
import { type FakeOpenAI, startFakeOpenAI } from "./fake-openai.ts";

const repoRoot = fileURLToPath(new URL("../../", import.meta.url));

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export interface FaultBed {
  cluster: DurableCluster;
  /** A pool on the cluster's database; postgres.js reconnects it after a restart. */
  sql: postgres.Sql;
  fake: FakeOpenAI;
  provider: ProviderSwitch;
  stack: LocalStack;
  /** Stops the stack, the fake provider and the cluster, and deletes their directories. */
  stop(): Promise<void>;
  log: (line: string) => void;
}

export interface FaultBedOptions {
  log?: (line: string) => void;
  functionEnv?: Record<string, string>;
  /** Provider latency per request (ms): makes a batch last long enough to be caught mid-flight. */
  providerLatencyMs?: number;
}

/**
 * The provider as the functions reach it: a switch in front of the fake OpenAI server on a fixed
 * port. `up` forwards; `refused` closes the port (connection refused); `timeout` accepts and never
 * answers; `500` answers 500 to everything.
 */
export interface ProviderSwitch {
  url: string; // base URL ending in /v1
  set(mode: "up" | "refused" | "timeout" | "500"): Promise<void>;
  stop(): Promise<void>;
}

export async function startProviderSwitch(targetUrl: string): Promise<ProviderSwitch> {
  const target = new URL(targetUrl);
  let mode: "up" | "refused" | "timeout" | "500" = "up";
  const sockets = new Set<Socket>();
  const handler = (req: import("node:http").IncomingMessage, res: import("node:http").ServerResponse) => {
    if (mode === "timeout") return; // held until the caller gives up
    if (mode === "500") {
      res.writeHead(500, { "content-type": "application/json" });
      res.end(
        JSON.stringify({
          error: { message: "The server had an error while processing your request.", type: "server_error" },
        }),
      );
      return;
    }
    const fwd = request({
      host: target.hostname,
      port: target.port,
      method: req.method,
      path: req.url,
      headers: req.headers,
    }, (up) => {
      res.writeHead(up.statusCode ?? 502, up.headers);
      up.pipe(res);
    });
    fwd.on("error", () => res.destroy());
    req.pipe(fwd);
  };
  const listen = (port: number) =>
    new Promise<Server>((resolve, reject) => {
      const srv = createServer(handler);
      srv.on("connection", (s) => {
        sockets.add(s);
        s.on("close", () => sockets.delete(s));
      });
      srv.once("error", reject);
      srv.listen(port, "127.0.0.1", () => resolve(srv));
    });
  let server: Server | null = await listen(0);
  const port = (server.address() as AddressInfo).port;
  const close = async () => {
    const s = server;
    server = null;
    if (!s) return;
    for (const sock of sockets) sock.destroy();
    await new Promise<void>((r) => s.close(() => r()));
  };
  return {
    url: `http://127.0.0.1:${port}/v1`,
    async set(next) {
      mode = next;
      if (next === "refused") await close();
      else if (!server) server = await listen(port);
      if (next === "up") { for (const sock of sockets) sock.destroy(); // drop requests held by "timeout"
       }
    },
    stop: close,
  };
}

export async function startFaultBed(opts: FaultBedOptions = {}): Promise<FaultBed> {
  const log = opts.log ?? (() => {});
  const cluster = await startDurableCluster({ log });
  const cleanups: Array<() => Promise<void>> = [() => cluster.destroy()];
  try {
    await migrate(cluster.url);
    const sql = postgres(cluster.url, { max: 8, onnotice: () => {}, connect_timeout: 5 });
    cleanups.push(() => sql.end({ timeout: 2 }));
    // The collector's 2-hourly maintenance would start a collection in the middle of a scenario.
    await sql`update cron.job set active = false where jobname = 'legifrance-collector-maintenance'`;
    const fake = await startFakeOpenAI({ latencyMs: opts.providerLatencyMs ?? 50 });
    cleanups.push(() => fake.stop());
    const provider = await startProviderSwitch(fake.url);
    cleanups.push(() => provider.stop());
    const dataDir = mkdtempSync(join(tmpdir(), "faults-stack-"));
    cleanups.push(() => Promise.resolve(rmSync(dataDir, { recursive: true, force: true })));
    const startStack = () =>
      startLocalStack({
        databaseUrl: cluster.url,
        port: 0,
        migrate: false,
        dataDir,
        functionEnv: {
          EMBEDDING_PROVIDER: "openai",
          OPENAI_API_KEY: fake.apiKey,
          OPENAI_BASE_URL: provider.url,
          ...opts.functionEnv,
        },
        log: (l) => {
          if (process.env.FAULTS_DEBUG) log(l);
        },
      });
    // On a saturated machine Deno can miss the stack's 30 s readiness deadline; one more try.
    const stack = await startStack().catch((e) => {
      log(`[faults] local stack did not start (${e instanceof Error ? e.message : e}); trying again`);
      return startStack();
    });
    cleanups.push(() => stack.stop());
    return {
      cluster,
      sql,
      fake,
      provider,
      stack,
      log,
      stop: async () => {
        for (const c of cleanups.splice(0).reverse()) await c().catch((e) => log(`[faults] cleanup: ${e}`));
      },
    };
  } catch (e) {
    for (const c of cleanups.splice(0).reverse()) await c().catch(() => {});
    throw e;
  }
}

/** Polls `check` (errors count as "not yet": the server may be down) until truthy or the deadline. */
export async function until<T>(
  what: string,
  deadlineMs: number,
  check: () => Promise<T | null | undefined | false>,
  everyMs = 200,
): Promise<T> {
  const end = Date.now() + deadlineMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > end) {
      throw new Error(
        `${what}: not reached in ${Math.round(deadlineMs / 1000)} s${last ? ` (last error: ${last})` : ""}`,
      );
    }
    await sleep(everyMs);
  }
}

/** A number drawn uniformly from [lo, hi): where in its window a fault lands. */
export const pick = (lo: number, hi: number) => lo + Math.random() * (hi - lo);

// --- work --------------------------------------------------------------------------------------------

/**
 * A source table of `rows` one-chunk rows: `body` is the whole embedded content (content_columns), so
 * a chunk is current exactly when its content equals its row's body.
 */
export async function createSource(
  sql: postgres.Sql,
  table: string,
  rows: number,
  opts: { register?: boolean } = {},
): Promise<void> {
  if (!/^[a-z_][a-z0-9_]{0,40}$/.test(table)) throw new Error("table: a plain identifier");
  await sql.unsafe(`create table ${table} (id int primary key, body text not null)`);
  if (opts.register !== false) await sql`select register_embedding_source(${table}, array['body'])`;
  await insertRows(sql, table, 1, rows);
}

export async function insertRows(sql: postgres.Sql, table: string, from: number, to: number): Promise<void> {
  // Batches of 2,000 rows: each commit wakes the workers like an application's writes would.
  for (let a = from; a <= to; a += 2000) {
    const b = Math.min(to, a + 1999);
    await sql.unsafe(`insert into ${table} (id, body)
      select g, 'Article ' || g || ' du code des faits : le bailleur répond des vices cachés ' || md5(g::text)
      from generate_series(${a}, ${b}) g`);
  }
}

/** Progress of a table's jobs: done (completed), left (pending or processing), dead (failed). */
export async function progress(
  sql: postgres.Sql,
  table: string,
): Promise<{ done: number; left: number; dead: number }> {
  const [r] = await sql<{ done: number; left: number; dead: number }[]>`
    select count(*) filter (where status = 'completed')::int as done,
           count(*) filter (where status in ('pending', 'processing'))::int as left,
           count(*) filter (where status = 'failed')::int as dead
    from embedding_sync_queue where source_table = ${table}`;
  return r;
}

// --- invariants --------------------------------------------------------------------------------------

export interface Invariants {
  /** Source rows with no chunk. */
  lost_rows: number;
  /** (source_table, source_id, chunk_index) present more than once. */
  duplicate_chunks: number;
  /** Chunks whose content is not their row's current content. */
  stale_chunks: number;
  /** Chunks whose source row does not exist. */
  orphan_chunks: number;
  /** Jobs processing past their lease. */
  stuck_jobs: number;
  /** Jobs not completed (pending, processing) once the pipeline was given time to converge. */
  unfinished_jobs: number;
  /** Jobs in the dead letter. */
  dead_jobs: number;
}

/** The embedding invariants for one-chunk source tables made by createSource (SQL only). */
export async function embeddingInvariants(sql: postgres.Sql, tables: string[]): Promise<Invariants> {
  const total: Invariants = {
    lost_rows: 0,
    duplicate_chunks: 0,
    stale_chunks: 0,
    orphan_chunks: 0,
    stuck_jobs: 0,
    unfinished_jobs: 0,
    dead_jobs: 0,
  };
  for (const t of tables) {
    if (!/^[a-z_][a-z0-9_]{0,40}$/.test(t)) throw new Error("table: a plain identifier");
    const [r] = await sql.unsafe<Invariants[]>(`
      select
        (select count(*)::int from ${t} s where not exists (
           select from documentation_embeddings d where d.source_table = '${t}' and d.source_id = s.id::text)) as lost_rows,
        (select count(*)::int from (select 1 from documentation_embeddings d where d.source_table = '${t}'
           group by d.source_id, d.chunk_index having count(*) > 1) x) as duplicate_chunks,
        (select count(*)::int from documentation_embeddings d join ${t} s on d.source_id = s.id::text
           where d.source_table = '${t}' and (d.content is distinct from 'body: ' || s.body or d.chunk_index <> 0)) as stale_chunks,
        (select count(*)::int from documentation_embeddings d where d.source_table = '${t}'
           and not exists (select from ${t} s where s.id::text = d.source_id)) as orphan_chunks,
        (select count(*)::int from embedding_sync_queue q where q.source_table = '${t}'
           and q.status = 'processing' and q.lease_until < now()) as stuck_jobs,
        (select count(*)::int from embedding_sync_queue q where q.source_table = '${t}'
           and q.status in ('pending', 'processing')) as unfinished_jobs,
        (select count(*)::int from embedding_sync_queue q where q.source_table = '${t}' and q.status = 'failed') as dead_jobs`);
    for (const k of Object.keys(total) as (keyof Invariants)[]) total[k] += r[k];
  }
  return total;
}

export const invariantsHold = (i: Invariants) => Object.values(i).every((v) => v === 0);

/** files_queue against storage.objects for one bucket: objects without a live row, live rows without an object. */
export async function filesDrift(
  sql: postgres.Sql,
  bucket: string,
): Promise<{ missing_rows: number; extra_rows: number }> {
  const [r] = await sql<{ missing_rows: number; extra_rows: number }[]>`
    select (select count(*)::int from storage.objects o where o.bucket_id = ${bucket}
               and not exists (select from files_queue f where f.file_path = o.name and f.bucket_id = o.bucket_id
                                 and f.status <> 'deleted')) as missing_rows,
           (select count(*)::int from files_queue f where f.bucket_id = ${bucket} and f.status <> 'deleted'
               and not exists (select from storage.objects o where o.name = f.file_path and o.bucket_id = f.bucket_id)) as extra_rows`;
  return r;
}

/**
 * Waits until the pipeline is healthy again after `restartedAt` (epoch ms): a job has completed since,
 * and no job claimed before the fault is still held (it was written or given back). Returns seconds.
 */
export async function recoveryAfter(
  sql: postgres.Sql,
  table: string,
  faultAt: Date,
  restartedAt: number,
  deadlineMs: number,
): Promise<number> {
  const waiting = until(`${table}: work resumed after the restart`, deadlineMs, async () => {
    const [r] = await sql<{ since: number; held: number; left: number }[]>`
      select count(*) filter (where status = 'completed' and processed_at > ${faultAt})::int as since,
             count(*) filter (where status = 'processing' and locked_at <= ${faultAt})::int as held,
             count(*) filter (where status in ('pending', 'processing'))::int as left
      from embedding_sync_queue where source_table = ${table}`;
    return (r.since > 0 || r.left === 0) && r.held === 0;
  }, 250);
  try {
    await waiting;
  } catch (e) {
    // Who still holds what, so a failure says which worker never came back and why its jobs wait.
    const held = await sql<{ locked_by: string; n: number; lease_s: number; last_error: string | null }[]>`
      select locked_by, count(*)::int as n, round(extract(epoch from max(lease_until) - now()))::int as lease_s,
             max(last_error) as last_error
      from embedding_sync_queue where source_table = ${table} and status = 'processing' group by locked_by`.catch(
      () => [],
    );
    throw new Error(`${(e as Error).message}; still processing: ${JSON.stringify(held)}`);
  }
  return (Date.now() - restartedAt) / 1000;
}

/** Inputs the provider embedded more than once (each extra time is a wasted call's input). */
export function wastedInputs(fake: FakeOpenAI): number {
  let n = 0;
  for (const c of fake.stats.inputCounts.values()) if (c > 1) n += c - 1;
  return n;
}

export function percentile(xs: number[], p: number): number {
  if (xs.length === 0) return 0;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)];
}

// --- the whole local stack as a process group ------------------------------------------------------

/** `npm start` running in its own process group, on embedded PGlite, with its data in `dataDir`. */
export interface StackProcess {
  pgid: number;
  dataDir: string;
  apiUrl: string;
  dbUrl: string;
  secretKey: string;
  output(): string;
}

/**
 * Starts `npm start` detached (its own process group: npm, the stack, the Deno functions), on PGlite
 * (no DATABASE_URL), without the demo, and waits until it says it is running.
 */
export async function startStackProcess(
  dataDir: string,
  env: Record<string, string>,
  deadlineMs = 300_000,
): Promise<StackProcess> {
  const full: Record<string, string | undefined> = {
    ...process.env,
    API_PORT: "0",
    LOCAL_STACK_DATA_DIR: dataDir,
    LOCAL_STACK_DEMO: "0",
    ...env,
  };
  for (const k of ["DATABASE_URL", "PISTE_CLIENT_ID", "PISTE_CLIENT_SECRET"]) delete full[k];
  const child = spawn("npm", ["start", "--silent"], {
    cwd: repoRoot,
    env: full,
    stdio: ["ignore", "pipe", "pipe"],
    detached: true,
  });
  let out = "";
  child.stdout!.on("data", (d) => (out += d));
  child.stderr!.on("data", (d) => (out += d));
  const pgid = child.pid!;
  try {
    await until("npm start to be running", deadlineMs, () => {
      if (child.exitCode !== null) throw new Error(`npm start exited with ${child.exitCode}: ${out.slice(-2000)}`);
      return Promise.resolve(out.includes("Running. Ctrl-C to stop."));
    }, 200);
  } catch (e) {
    await sigkillGroup(pgid).catch(() => {});
    throw new Error(`${e instanceof Error ? e.message : e}\n${out.slice(-2000)}`);
  }
  const { state } = readState(dataDir);
  if (!state) throw new Error("npm start runs but wrote no stack.json");
  return { pgid, dataDir, apiUrl: state.apiUrl, dbUrl: state.dbUrl, secretKey: state.secretKey, output: () => out };
}

function groupAlive(pgid: number): boolean {
  try {
    process.kill(-pgid, 0);
    return true;
  } catch {
    return false;
  }
}

/** kill -9 of a whole process group (by its id), then waits until no process of it is left. */
export async function sigkillGroup(pgid: number): Promise<void> {
  process.kill(-pgid, "SIGKILL");
  await until(`process group ${pgid} gone`, 30_000, () => Promise.resolve(!groupAlive(pgid)), 20);
}

/** SIGTERM to the group (a clean stop), SIGKILL after 15 s. */
export async function stopStackProcess(p: StackProcess): Promise<void> {
  if (!groupAlive(p.pgid)) return;
  process.kill(-p.pgid, "SIGTERM");
  await until("npm start stopped", 15_000, () => Promise.resolve(!groupAlive(p.pgid)), 100).catch(() =>
    sigkillGroup(p.pgid)
  );
}
