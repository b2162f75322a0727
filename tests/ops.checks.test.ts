// The health checks on their own (packages/ops/checks.ts, what health, doctor and the dashboard all
// show) against the real PostgreSQL, with the state set in SQL: no alarm before something was due,
// no calm when nothing runs, failed files counted, and no coverage gap rounded away.
import { beforeEach, describe, expect, it } from "vitest";
import { runHealthChecks, scheduleIntervalSeconds } from "../packages/ops/checks.ts";
import { SHIPPED_MIGRATIONS } from "../packages/ops/migrations.generated.ts";
import type { HealthReport } from "../packages/ops/report.ts";
import { useTestDatabase } from "./helpers/db.ts";

const db = useTestDatabase();
const run = () => runHealthChecks(db.sql, { expectedMigrations: SHIPPED_MIGRATIONS, embeddingEnv: null });
const check = (r: HealthReport, name: string) => r.checks.find((c) => c.name === name)!;
const installedAgo = (interval: string) => db.sql`update ops_settings set installed_at = now() - ${interval}::interval`;
/** Every expected job ran successfully `ago` (an interval) ago. */
async function allJobsRan(ago = "0 seconds") {
  await db.sql`delete from cron.job_run_details`;
  await db.sql`insert into cron.job_run_details (jobid, status, return_message, start_time, end_time)
               select jobid, 'succeeded', '1 row', now() - ${ago}::interval, now() - ${ago}::interval from cron.job`;
}

beforeEach(async () => {
  await db.sql`update cron.job set active = true`;
  await db.sql`delete from files_queue_coherence_checks`;
  await db.sql`delete from files_queue`;
});

describe("schedules", () => {
  it("reads each schedule's interval", () => {
    expect(scheduleIntervalSeconds("*/5 * * * *")).toBe(300);
    expect(scheduleIntervalSeconds("7 * * * *")).toBe(3600);
    expect(scheduleIntervalSeconds("0 */2 * * *")).toBe(7200);
    expect(scheduleIntervalSeconds("41 4 * * *")).toBe(86400);
    expect(scheduleIntervalSeconds("10 seconds")).toBe(10);
    expect(scheduleIntervalSeconds("not a schedule")).toBeNull();
  });

  it("a job that never ran fails naming it, once it was due twice since the install; not before", async () => {
    await db.sql`delete from cron.job_run_details`;
    await installedAgo("1 minute");
    const fresh = check(await run(), "schedules");
    // Every-10-seconds jobs were due twice in a minute; the hourly and daily ones were not.
    expect(fresh.status).toBe("fail");
    expect(fresh.detail).toMatch(/embedding-segments-build never ran \(every 10 s/);
    expect(fresh.detail).not.toMatch(/files-queue-coherence|ops-metrics-cleanup|process-embedding-queue/);

    await installedAgo("3 days");
    const r = check(await run(), "schedules");
    expect(r.status).toBe("fail");
    for (const job of ["process-embedding-queue", "files-queue-coherence", "ops-metrics-cleanup", "ops-alerts"]) {
      expect(r.detail).toMatch(new RegExp(`${job} never ran`));
    }
  });

  it("a job whose last run is older than twice its interval fails naming it", async () => {
    await installedAgo("3 days");
    await allJobsRan();
    expect(check(await run(), "schedules")).toMatchObject({
      status: "ok",
      detail: expect.stringMatching(/each ran within twice its interval/),
    });

    await db.sql`update cron.job_run_details set start_time = now() - interval '3 hours'
                  where jobid = (select jobid from cron.job where jobname = 'files-queue-coherence')`;
    const r = check(await run(), "schedules");
    expect(r.status).toBe("fail");
    expect(r.detail).toBe("files-queue-coherence last ran 3 h ago (every 60 min)");
    // Twice the interval is the line: 100 minutes for an hourly job is late, not failed.
    await db.sql`update cron.job_run_details set start_time = now() - interval '100 minutes'
                  where jobid = (select jobid from cron.job where jobname = 'files-queue-coherence')`;
    expect(check(await run(), "schedules").status).toBe("ok");
  });

  it("a paused job is a warning, not a late one", async () => {
    await installedAgo("3 days");
    await allJobsRan("30 hours");
    await db.sql`update cron.job set active = false where jobname <> 'ops-metrics-cleanup'`;
    expect(check(await run(), "schedules")).toMatchObject({
      status: "warn",
      detail: expect.stringMatching(/^paused: /),
    });
  });
});

describe("extensions", () => {
  it("reports the installed extensions, and a stand-in as what it is", async () => {
    const r = check(await run(), "extensions");
    const [{ v }] = await db.sql`select extversion as v from pg_extension where extname = 'vector'`;
    // The test database runs the local stack's pg_cron and pg_net stand-ins.
    expect(r.data).toEqual({ versions: { vector: v, pg_cron: null, pg_net: null }, stand_ins: ["pg_cron", "pg_net"] });
    expect(r.detail).toBe(
      `vector ${v}, pg_cron not installed (local-stack stand-in: runs only while the local stack runs), ` +
        "pg_net not installed (local-stack stand-in: runs only while the local stack runs)",
    );
  });
});

describe("files", () => {
  it("no coherence warning before a check was due; a warning once one is late", async () => {
    await installedAgo("5 minutes");
    expect(check(await run(), "files").status).toBe("ok");
    await installedAgo("3 hours");
    const r = check(await run(), "files");
    expect(r.status).toBe("warn");
    expect(r.detail).toMatch(/no coherence check in 2 h for agentbasic-legifrance-raw/);
    await db.sql`select private.files_queue_check_coherence()`;
    expect(check(await run(), "files").status).toBe("ok");
  });

  it("counts failed files per bucket: warn from failed_files_warn, fail from failed_files_fail", async () => {
    await installedAgo("5 minutes");
    await db.sql`insert into files_queue (file_path, bucket_id, status, last_error)
                 select 'c/' || i || '.pdf', 'client-documents', 'failed', 'no extractable text' from generate_series(1, 8) i`;
    const r = check(await run(), "files");
    expect(r.status).toBe("warn");
    expect(r.detail).toMatch(
      /^8 failed file\(s\) in client-documents \(.*client-documents: 0 in Storage, 8 queued, 8 failed/,
    );
    expect((r.data as { buckets: { bucket: string; failed: number }[] }).buckets.map((b) => [b.bucket, b.failed]))
      .toEqual([["agentbasic-legifrance-raw", 0], ["client-documents", 8]]);

    await db.sql`update ops_settings set failed_files_fail = 5`;
    expect(check(await run(), "files")).toMatchObject({
      status: "fail",
      detail: expect.stringMatching(/^8 failed file\(s\) in client-documents/),
    });
    await db.sql`update ops_settings set failed_files_fail = 100, failed_files_warn = 10`;
    expect(check(await run(), "files").status).toBe("ok");
    await db.sql`update ops_settings set failed_files_warn = 1`;

    const opened = await db
      .sql`select kind, subject, message from private.ops_check_alerts() where kind = 'failed_files'`;
    expect(opened).toEqual([{
      kind: "failed_files",
      subject: "client-documents",
      message: expect.stringMatching(/^8 failed file\(s\) in client-documents/),
    }]);
    const ids = (await db.sql`select id from files_queue where status = 'failed' order by id limit 3`).map((r) =>
      Number(r.id)
    );
    const [{ n }] = await db.sql`select retry_failed_files(${ids}::bigint[]) as n`;
    expect(n).toBe(3);
    expect(await db.sql`select status, attempts, last_error from files_queue where id = any(${ids}::bigint[])`)
      .toEqual(ids.map(() => ({ status: "pending", attempts: 0, last_error: null })));
    expect(
      (await db.sql`select * from ops_failed_files_count()`).find((r) => r.bucket_id === "client-documents")?.failed,
    ).toBe("5");
  });

  it("retrying failed files is the service role's only", async () => {
    for (const role of ["anon", "authenticated"]) {
      await expect(db.sql.begin(async (tx) => {
        await tx.unsafe(`set local role ${role}`);
        await tx`select retry_failed_files(array[1]::bigint[])`;
      })).rejects.toThrow(/permission denied/);
    }
  });
});

describe("collector", () => {
  it("a MASSIVE run left running with its lease lapsed (its invocation died) fails, naming the run and how to resume it", async () => {
    await db.sql`delete from legifrance_collector_runs`;
    const [live] = await db.sql<{ id: string }[]>`
      insert into legifrance_collector_runs (mode, lease_until) values ('massive', now() + interval '5 minutes') returning id`;
    expect(check(await run(), "collector").status).toBe("ok");
    await db.sql`update legifrance_collector_runs set lease_until = now() - interval '1 second' where id = ${live.id}`;
    const c = check(await run(), "collector");
    expect(c.status).toBe("fail");
    expect(c.detail).toContain(`massive run ${live.id} stalled`);
    expect(c.detail).toContain(`"runId":"${live.id}"`);
    await db.sql`delete from legifrance_collector_runs`;
  });
});

describe("knowledge_base", () => {
  it("never rounds a coverage gap away: 189 of 190 is 99.4 %, not 100 %", async () => {
    await db.sql`create table kb_gap (id int primary key, body text)`;
    await db.sql`select register_embedding_source('kb_gap', content_columns => array['body'])`;
    await db.sql`insert into kb_gap select i, 'texte ' || i from generate_series(1, 190) i`;
    await db
      .sql`insert into documentation_embeddings (source_table, source_id, chunk_index, content, content_hash, embedding, model, token_count, source_version)
                 select 'kb_gap', i::text, 0, 'texte', md5(i::text), array_fill(0.1, array[embedding_dimensions()])::real[]::extensions.vector, 'm', 1, 1
                   from generate_series(1, 189) i`;
    const r = check(await run(), "knowledge_base");
    expect(r.detail).toContain("kb_gap: 190 rows, 189 embedded (99.4%)");
    expect(
      (r.data as { sources: { source_table: string; coverage: number }[] }).sources.find((s) =>
        s.source_table === "kb_gap"
      )?.coverage,
    ).toBe(0.994);
  });
});
