// The process action: claim -> chunk -> skip known hashes -> embed in few requests -> write+complete.
//
// Transactions: the claim is one statement (its own short transaction); the provider calls run
// with no transaction open; the write is one call of apply_embedding_results(), which writes the
// chunks, deletes stale ones and completes the jobs atomically. The queue rules (leases, newest
// wins, backoff, dead letter) live in that SQL; this module only orchestrates.
//
// The database may restart under a running worker (a crash, a failover, pg_terminate_backend). Every
// statement here is safe to send twice, so each one is sent again once the server answers, within
// the run's budget (a claim) or the jobs' lease (a batch's reads and writes): the batch in flight is
// written instead of waiting out its lease, and the run drains on instead of ending in an error.
import pLimit from "p-limit";
import type postgres from "postgres";
import { retryWhileUnreachable } from "../core/db.ts";
import { packRequests } from "./batching.ts";
import { BudgetDeferredError, ProviderPacer } from "./budget.ts";
import { contentHash, vectorLiteral } from "./hash.ts";
import { type EmbeddingProvider, EmbeddingProviderError } from "./provider.ts";
import { RetriesExhaustedError, withRetry } from "./retry.ts";
import { chunkText } from "./tokens.ts";

export interface ProcessOptions {
  workerId: string;
  batchSize: number;
  /** Wall-clock budget of this invocation; claiming stops early enough to finish in it. */
  budgetMs: number;
  leaseSeconds: number;
  /** Parallel provider requests. */
  concurrency: number;
  /** Attempts per provider request before the jobs go back to the queue. */
  maxAttempts: number;
  retryBaseMs?: number;
  retryMaxMs?: number;
  /** Keep polling while a webhook wake is recent (changes coalesced into it may still commit). */
  lingerAfterWake?: boolean;
  /** Claim only this lane's jobs (a live-woken worker); default: live first with bulk's share. */
  lane?: "live" | "bulk";
  /**
   * How long a live worker keeps polling after the last live wake (default 3 s), while no later wake
   * started another: an edit whose wake was coalesced into the last one is claimed by this invocation.
   */
  liveLingerMs?: number;
  /** Stop after this many batches (tests, benchmark baseline). */
  maxBatches?: number;
  log?: (line: string) => void;
  /** Test hook: runs after embedding, before the write (a throw simulates a crash). */
  beforeWrite?: (jobIds: string[]) => void | Promise<void>;
}

export interface ProcessResult {
  /** Set when the provider refused our credentials (401/403): the run stopped claiming. */
  fatalError?: string;
  claimed: number;
  embedded: number;
  unchanged: number;
  deleted: number;
  retried: number;
  dead: number;
  superseded: number;
  tokens: number;
  providerCalls: number;
  batches: number;
  /** Jobs given back untried: the shared provider budget was spent past this run's deadline. */
  deferred: number;
  /** Time spent waiting for the shared provider budget (summed over parallel requests). */
  budgetWaitMs: number;
  ms: number;
  /** True when the run stopped because its time budget ran out (not because the queue was empty). */
  outOfBudget: boolean;
}

interface ClaimedJob {
  id: string;
  source_table: string;
  source_id: string;
  action: "INSERT" | "UPDATE" | "DELETE";
  content: string | null;
  version: string;
  chunk_tokens: number;
  chunk_overlap_tokens: number;
  lease_until: Date;
  lane: "live" | "bulk";
}

interface PreparedChunk {
  index: number;
  text: string;
  hash: string;
  tokens: number;
}

interface JobFailure {
  error: string;
  permanent: boolean;
  retryAfterMs: number;
  /** Never sent for lack of budget: given back without counting an attempt. */
  deferred?: boolean;
}

const emptyResult = (): ProcessResult => ({
  claimed: 0,
  embedded: 0,
  unchanged: 0,
  deleted: 0,
  retried: 0,
  dead: 0,
  superseded: 0,
  tokens: 0,
  providerCalls: 0,
  batches: 0,
  deferred: 0,
  budgetWaitMs: 0,
  ms: 0,
  outOfBudget: false,
});

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export async function processEmbeddingQueue(
  sql: postgres.Sql,
  provider: EmbeddingProvider,
  o: ProcessOptions,
): Promise<ProcessResult> {
  const started = Date.now();
  const deadline = started + o.budgetMs;
  const result = emptyResult();
  const limit = pLimit(o.concurrency);
  let slowestBatchMs = 2_000;
  const pacer = provider.budget && new ProviderPacer(sql, provider.name, provider.model, provider.budget, o.log);

  const onWait = (e: unknown) => o.log?.(`database unreachable (${(e as { code?: string }).code}), retrying`);
  await retryWhileUnreachable(() => sql`select public.recover_stuck_embedding_jobs()`, deadline, onWait);
  // The live wake this worker answers (or a later one): a newer wake started another live worker.
  const liveWake = o.lane === "live" && o.lingerAfterWake
    ? await retryWhileUnreachable(() => lastLiveWake(sql), deadline, onWait)
    : null;

  for (;;) {
    if (o.maxBatches !== undefined && result.batches >= o.maxBatches) break;
    // Claim only when one more batch, as slow as the slowest so far, still ends inside the budget.
    if (Date.now() + slowestBatchMs * 1.5 > deadline) {
      result.outOfBudget = true;
      break;
    }
    const batchStarted = Date.now();
    let claimLost = false;
    const jobs = await retryWhileUnreachable(
      () =>
        sql<ClaimedJob[]>`
      select * from public.claim_embedding_jobs(${o.workerId}, ${o.batchSize}, ${o.leaseSeconds}, ${o.lane ?? null})`,
      deadline,
      (e) => {
        claimLost = true;
        onWait(e);
      },
    );
    // A claim whose connection died may have committed without its answer reaching us: what this
    // run holds but was not told about goes back to the queue now rather than at the lease's end.
    if (claimLost) await giveBackUnknownClaims(sql, o.workerId, jobs.map((j) => j.id), deadline);
    if (jobs.length === 0) {
      const woken = () =>
        retryWhileUnreachable(
          () => (liveWake !== null ? lingerLive(sql, o.liveLingerMs ?? 3_000, liveWake) : recentlyWoken(sql)),
          deadline,
          onWait,
        );
      if (o.lingerAfterWake && (await woken()) && Date.now() + 500 < deadline) {
        await sleep(100);
        // Asked again after the pause, so a worker never claims once its linger window has closed.
        if (await woken()) continue;
      }
      break;
    }
    result.claimed += jobs.length;
    result.batches += 1;
    // A claim without a lane takes live jobs first, next to bulk ones. They are embedded and written
    // first, on their own: a bulk batch's write takes seconds while a segment's index builds, and an
    // editor's change would wait for all of it. Every part runs, so none is left holding its jobs.
    const live = jobs.filter((j) => j.lane === "live");
    const parts = live.length > 0 && live.length < jobs.length ? [live, jobs.filter((j) => j.lane !== "live")] : [jobs];
    for (const part of parts) await processBatch(sql, provider, o, part, limit, result, pacer, deadline);
    if (result.fatalError) {
      o.log?.(`stopping: ${result.fatalError}`);
      break;
    }
    // The shared budget is spent beyond this run: another batch could only be deferred too.
    if (result.deferred > 0) break;
    slowestBatchMs = Math.max(slowestBatchMs, Date.now() - batchStarted);
  }
  result.budgetWaitMs = pacer?.waitedMs ?? 0;
  result.ms = Date.now() - started;
  return result;
}

async function giveBackUnknownClaims(
  sql: postgres.Sql,
  workerId: string,
  known: string[],
  deadline: number,
): Promise<void> {
  await retryWhileUnreachable(() =>
    sql`
    select public.defer_embedding_jobs(${workerId}, array_agg(q.id), 0, 'claimed as the database connection was lost; given back')
    from public.embedding_sync_queue q
    where q.status = 'processing' and q.locked_by = ${workerId} and not (q.id = any(${pgTextArray(known)}::bigint[]))
    having count(*) > 0`, deadline);
}

async function recentlyWoken(sql: postgres.Sql): Promise<boolean> {
  const [r] = await sql<{ linger: boolean }[]>`
    select clock_timestamp() < public.embedding_last_wake()
             + make_interval(secs => (s.wake_window_ms + 1000) / 1000.0) as linger
    from public.embedding_sync_settings s`;
  return !!r?.linger;
}

/** The last live wake, as text (sent back as text too): a Date would drop its microseconds. */
async function lastLiveWake(sql: postgres.Sql): Promise<string> {
  const [r] = await sql<{ wake: string }[]>`select public.embedding_last_live_wake()::text as wake`;
  return r.wake;
}

/**
 * A live worker keeps polling for `lingerMs` after the last live wake, so an edit coalesced into
 * that wake is still claimed, but only while no wake came after its own: each wake starts a worker,
 * and every worker lingering on every later wake would keep one poller per wake window alive (over a
 * hundred for a steady editor), each claiming every 100 ms. One live worker polls at a time.
 */
async function lingerLive(sql: postgres.Sql, lingerMs: number, ownWake: string): Promise<boolean> {
  const [r] = await sql<{ linger: boolean }[]>`
    select w <= ${ownWake}::text::timestamptz
           and clock_timestamp() < w + make_interval(secs => ${lingerMs / 1000}) as linger
    from public.embedding_last_live_wake() w`;
  return !!r?.linger;
}

async function processBatch(
  sql: postgres.Sql,
  provider: EmbeddingProvider,
  o: ProcessOptions,
  jobs: ClaimedJob[],
  limit: ReturnType<typeof pLimit>,
  result: ProcessResult,
  pacer: ProviderPacer | undefined,
  deadline: number,
): Promise<void> {
  const maxChunk = Math.min(provider.limits.maxTokensPerInput, 8191);
  const chunksByJob = new Map<string, PreparedChunk[]>();
  for (const job of jobs) {
    if (job.action === "DELETE" || job.content === null) continue;
    const size = Math.min(job.chunk_tokens, maxChunk);
    chunksByJob.set(
      job.id,
      chunkText(job.content, size, job.chunk_overlap_tokens).map((c) => ({
        index: c.index,
        text: c.text,
        tokens: c.tokens,
        hash: contentHash(c.text),
      })),
    );
  }

  // Hashes already embedded with this model cost nothing: the SQL write reuses their vectors.
  const allHashes = [...new Set([...chunksByJob.values()].flat().map((c) => c.hash))];
  const known = new Set<string>();
  // Reads and writes for these jobs retry through a database restart until their lease ends.
  const leaseEnd = Math.min(...jobs.map((j) => new Date(j.lease_until).getTime()));
  const retrying = <T>(run: () => Promise<T>) =>
    retryWhileUnreachable(
      run,
      leaseEnd,
      (e) => o.log?.(`database unreachable (${(e as { code?: string }).code}), retrying`),
    );
  if (allHashes.length > 0) {
    const rows = await retrying(() =>
      sql<{ content_hash: string }[]>`
      select distinct content_hash from public.documentation_embeddings
      where model = ${provider.model} and content_hash = any(${pgTextArray(allHashes)}::text[])`
    );
    for (const r of rows) known.add(r.content_hash);
  }

  // Unique new texts (the same text in two rows is embedded once), and who needs them.
  const pending = new Map<string, { text: string; tokens: number; jobs: Set<string> }>();
  for (const [jobId, chunks] of chunksByJob) {
    for (const c of chunks) {
      if (known.has(c.hash)) continue;
      const p = pending.get(c.hash) ?? { text: c.text, tokens: c.tokens, jobs: new Set<string>() };
      p.jobs.add(jobId);
      pending.set(c.hash, p);
    }
  }
  const hashes = [...pending.keys()];
  const items = hashes.map((h) => pending.get(h)!);
  const vectors = new Map<string, string>();
  const failures = new Map<string, JobFailure>();
  // Stop retrying well before the lease ends, so the jobs are given back, not found stuck; the
  // margin leaves time for the write (5 s, or a fifth of a short lease).
  const margin = Math.min(5_000, o.leaseSeconds * 200);
  // Nor past the invocation's own budget: the platform ends an invocation at its wall clock, and
  // jobs it still held would wait out their lease (minutes) before anyone could take them.
  const retryDeadline = Math.min(deadline, leaseEnd - margin);

  const failJobs = (jobIds: Iterable<string>, f: JobFailure) => {
    for (const id of jobIds) if (!failures.has(id) || f.permanent) failures.set(id, f);
  };

  const embedGroup = async (idx: number[]): Promise<void> => {
    const requestTokens = idx.reduce((n, i) => n + items[i].tokens, 0);
    try {
      const res = await withRetry(async () => {
        // Every attempt (retries too) waits its turn in the budget shared by all invocations; a
        // turn that would come after the deadline (less a second to send it) is not taken.
        await pacer?.reserve(requestTokens, retryDeadline - 1_000);
        result.providerCalls += 1;
        // No request may outlive the jobs' lease: a hung provider gives the jobs back, never strands them.
        const signal = AbortSignal.timeout(Math.max(1, retryDeadline - Date.now()));
        try {
          const r = await provider.embed(idx.map((i) => items[i].text), { signal });
          await pacer?.learn(r.rateLimits);
          return r;
        } catch (e) {
          if (e instanceof EmbeddingProviderError) await pacer?.learn(e.rateLimits, e.status === 429, e.retryAfterMs);
          throw e;
        }
      }, {
        maxAttempts: o.maxAttempts,
        baseDelayMs: o.retryBaseMs ?? 500,
        maxDelayMs: o.retryMaxMs ?? 20_000,
        deadline: retryDeadline,
        onRetry: (e, delay) => o.log?.(`provider ${e.status ?? "error"}, retrying in ${Math.round(delay)} ms`),
      });
      result.tokens += res.tokens;
      idx.forEach((i, k) => vectors.set(hashes[i], vectorLiteral(res.vectors[k])));
      result.embedded += idx.length;
    } catch (e) {
      if (e instanceof BudgetDeferredError) {
        failJobs(idx.flatMap((i) => [...items[i].jobs]), {
          error: e.message,
          permanent: false,
          retryAfterMs: e.waitMs,
          deferred: true,
        });
        return;
      }
      if (Date.now() >= deadline - 1_000 && !(e instanceof EmbeddingProviderError && e.isBadInput)) {
        // The invocation's time is up (its request was cut, or no retry fits): the jobs go back
        // untried and ready at once, for the successor this invocation asks for, instead of being
        // held to the end of the lease or sent into a backoff for the machine's slowness.
        result.outOfBudget = true;
        failJobs(idx.flatMap((i) => [...items[i].jobs]), {
          error: `given back untried: the invocation's ${o.budgetMs} ms budget ran out first`,
          permanent: false,
          retryAfterMs: 0,
          deferred: true,
        });
        return;
      }
      if (e instanceof EmbeddingProviderError && e.isBadInput) {
        if (idx.length === 1) {
          failJobs(items[idx[0]].jobs, {
            error: `provider refused the input: ${e.message}`,
            permanent: true,
            retryAfterMs: 0,
          });
          return;
        }
        // One bad input fails the whole request: bisect so only its jobs fail.
        const mid = idx.length >> 1;
        await Promise.all([embedGroup(idx.slice(0, mid)), embedGroup(idx.slice(mid))]);
        return;
      }
      const last = e instanceof RetriesExhaustedError ? e.last : e instanceof EmbeddingProviderError ? e : undefined;
      const message = e instanceof Error ? e.message : String(e);
      // A revoked or wrong key fails every request alike: stop claiming instead of burning attempts.
      if (last?.status === 401 || last?.status === 403) result.fatalError = message;
      failJobs(idx.flatMap((i) => [...items[i].jobs]), {
        error: message,
        permanent: false,
        retryAfterMs: last?.retryAfterMs ?? 0,
      });
    }
  };

  const groups = packRequests(items, provider.limits);
  await Promise.all(groups.map((g) => limit(() => embedGroup(g))));

  // Write every job that has all its vectors (or known hashes); DELETE jobs have no chunks.
  const writable: string[] = [];
  const payload: { j: string; i: number; c: string; h: string; t: number; e: string | null }[] = [];
  for (const job of jobs) {
    if (failures.has(job.id)) continue;
    writable.push(job.id);
    for (const c of chunksByJob.get(job.id) ?? []) {
      payload.push({ j: job.id, i: c.index, c: c.text, h: c.hash, t: c.tokens, e: vectors.get(c.hash) ?? null });
      if (known.has(c.hash)) result.unchanged += 1;
    }
  }
  await o.beforeWrite?.(writable);

  if (writable.length > 0) {
    // Sent again after a lost connection, a write that had committed finds its jobs no longer held
    // and reports them superseded: nothing is written twice.
    const outcomes = await retrying(() =>
      sql<{ job_id: string; outcome: string }[]>`
      select * from public.apply_embedding_results(${o.workerId}, ${provider.model},
        ${pgTextArray(writable)}::bigint[], ${JSON.stringify(payload)}::text::jsonb)`
    );
    const byId = new Map(jobs.map((j) => [j.id, j]));
    for (const r of outcomes) {
      if (r.outcome === "applied" && byId.get(r.job_id)?.action === "DELETE") result.deleted += 1;
      if (r.outcome === "superseded") result.superseded += 1;
      if (r.outcome === "missing") {
        failures.set(r.job_id, {
          error: "a reused embedding vanished; re-embedding",
          permanent: false,
          retryAfterMs: 0,
        });
      }
    }
  }

  // Give back what failed, grouped by (error, permanence, delay) so each group is one statement.
  const groupsOfFailures = new Map<string, { f: JobFailure; ids: string[] }>();
  for (const [id, f] of failures) {
    const key = `${f.permanent}|${f.deferred}|${f.retryAfterMs}|${f.error}`;
    const g = groupsOfFailures.get(key) ?? { f, ids: [] };
    g.ids.push(id);
    groupsOfFailures.set(key, g);
  }
  for (const { f, ids } of groupsOfFailures.values()) {
    if (f.deferred) {
      const rows = await retrying(() =>
        sql<{ status: string }[]>`
        select status from public.defer_embedding_jobs(${o.workerId}, ${pgTextArray(ids)}::bigint[], ${
          f.retryAfterMs / 1000
        }, ${f.error})`
      );
      for (const r of rows) {
        if (r.status === "pending") result.deferred += 1;
        else result.superseded += 1;
      }
      continue;
    }
    const rows = await retrying(() =>
      sql<{ status: string }[]>`
      select status from public.fail_embedding_jobs(${o.workerId}, ${pgTextArray(ids)}::bigint[], ${f.error},
        ${f.retryAfterMs / 1000}, ${f.permanent})`
    );
    for (const r of rows) {
      if (r.status === "failed") result.dead += 1;
      else if (r.status === "pending") result.retried += 1;
      else result.superseded += 1;
    }
  }
}

/** A Postgres array literal of plain tokens (ids, hex hashes): no quoting needed or allowed. */
function pgTextArray(values: string[]): string {
  for (const v of values) if (!/^[0-9a-zA-Z_-]+$/.test(v)) throw new Error(`unsafe array element: ${v}`);
  return `{${values.join(",")}}`;
}
