// The SQL side of operations on the real PostgreSQL: the environment label, the per-minute metrics
// sample and its cleanup, hourly alerts (opened once, posted once through pg_net, resolved when the
// condition clears) and the dead-letter retry.
import { describe, expect, it } from "vitest";
import { useTestDatabase } from "./helpers/db.ts";

const db = useTestDatabase();
const BUCKET = "agentbasic-legifrance-raw";

async function job(status: string, sourceId: string, extra: Record<string, unknown> = {}) {
  const [r] = await db.sql`insert into embedding_sync_queue ${
    db.sql({ source_table: "legal_documents", source_id: sourceId, action: "INSERT", status, ...extra })
  } returning id`;
  return Number(r.id);
}

describe("environment label", () => {
  it("is null until set, set by set_environment_label, refused to anon and authenticated", async () => {
    expect((await db.sql`select environment_label() as l`)[0].l).toBeNull();
    expect((await db.sql`select set_environment_label('production') as l`)[0].l).toBe("production");
    expect((await db.sql`select environment_label() as l`)[0].l).toBe("production");
    await expect(db.sql`select set_environment_label('bad;label')`).rejects.toThrow(/check constraint/);
    for (const role of ["anon", "authenticated"]) {
      await expect(db.sql.begin(async (tx) => {
        await tx.unsafe(`set local role ${role}`);
        await tx`select set_environment_label('hacked')`;
      })).rejects.toThrow(/permission denied/);
    }
    expect((await db.sql`select environment_label() as l`)[0].l).toBe("production");
  });
});

describe("metrics", () => {
  it("a sample holds the backlog by status, coherence per bucket, files inserted and jobs completed in the last minute", async () => {
    const prev = db.sql`date_trunc('minute', now()) - interval '30 seconds'`;
    await job("pending", "A1");
    await job("pending", "A2");
    await job("failed", "A3");
    await db.sql`insert into embedding_sync_queue (source_table, source_id, action, status, processed_at)
                 values ('legal_documents', 'C1', 'INSERT', 'completed', ${prev}),
                        ('legal_documents', 'C2', 'INSERT', 'completed', ${prev}),
                        ('legal_documents', 'C3', 'INSERT', 'completed', now() - interval '1 hour')`;
    await db
      .sql`insert into storage.objects (bucket_id, name, metadata) values (${BUCKET}, 'm/one.json', '{"size": 10}')`;
    await db.sql`insert into files_queue (file_path, bucket_id, file_size, status, created_at)
                 values ('m/two.json', ${BUCKET}, 5, 'pending', ${prev}), ('m/three.json', ${BUCKET}, 5, 'pending', ${prev})`;
    const [s] = await db.sql`select (private.ops_sample_metrics()).*`;
    expect(s.queue_by_status).toEqual({ pending: 2, failed: 1 });
    // Jobs inserted by hand take the session's lane: live (issue 9's lanes).
    expect(s.queue_by_lane).toEqual({ live: { pending: 2, failed: 1 } });
    // m/one.json got its queue row from the Storage trigger (now, not in the previous minute).
    expect(s.files_coherence).toEqual({
      [BUCKET]: { storage: 1, queue: 3 },
      "client-documents": { storage: 0, queue: 0 },
    });
    expect(s.files_inserted).toBe(2);
    expect(s.jobs_completed).toBe(2);
    // A second sample in the same minute replaces it: one row per minute.
    await db.sql`select private.ops_sample_metrics()`;
    expect((await db.sql`select count(*)::int as n from ops_metrics`)[0].n).toBe(1);
  });

  it("the daily cleanup keeps 7 days", async () => {
    await db.sql`insert into ops_metrics (sampled_at, queue_by_status, files_coherence, files_inserted, jobs_completed)
                 values (now() - interval '8 days', '{}', '{}', 0, 0), (now() - interval '6 days', '{}', '{}', 0, 0)`;
    expect((await db.sql`select private.ops_cleanup_metrics() as n`)[0].n).toBe(1);
    expect((await db.sql`select count(*)::int as n from ops_metrics where sampled_at < now() - interval '7 days'`)[0].n)
      .toBe(0);
  });

  it("is scheduled every minute, with a daily cleanup and an hourly alert check", async () => {
    const jobs = await db.sql`select jobname, schedule from cron.job where jobname like 'ops-%' order by jobname`;
    expect(jobs.map((j) => [j.jobname, j.schedule])).toEqual([["ops-alerts", "12 * * * *"], [
      "ops-metrics-cleanup",
      "41 4 * * *",
    ], ["ops-metrics-sample", "* * * * *"]]);
  });
});

describe("alerts", () => {
  it("opens each condition once, posts it once to the webhook, and resolves it when it clears", async () => {
    await db.sql`delete from embedding_sync_queue`;
    await db.sql`select vault.create_secret('http://127.0.0.1:9/hook', 'alert_webhook_url')`;
    const dead = await job("failed", "D1", { last_error: "provider said no" });
    await job("processing", "S1", {
      locked_by: "w",
      locked_at: db.sql`now() - interval '1 hour'`,
      lease_until: db.sql`now() - interval '50 minutes'`,
    });
    await job("pending", "P1", { created_at: db.sql`now() - interval '2 hours'` });
    const [cronJob] = await db.sql`select jobid from cron.job where jobname = 'process-files-queue'`;
    await db
      .sql`insert into cron.job_run_details (jobid, status, return_message, start_time) values (${cronJob.jobid}, 'failed', 'ERROR: x', now())`;
    await db.sql`select set_environment_label('staging')`;
    await db.sql`select private.files_queue_check_coherence()`;

    const opened = await db.sql`select kind, subject from private.ops_check_alerts() order by kind, subject`;
    expect(opened.map((a) => `${a.kind}:${a.subject}`)).toEqual([
      // Every source is empty here (a whole empty knowledge base), so each one is named.
      "cron_failed:process-files-queue",
      "dead_letters:",
      "empty_knowledge_base:client_document_pages",
      "empty_knowledge_base:legal_documents",
      // The metrics test left two queue rows without an object, which the hourly check found.
      "files_drift:agentbasic-legifrance-raw",
      "queue_age:",
      "stuck_jobs:",
    ]);
    const posts = await db
      .sql`select url, convert_from(body, 'utf8')::jsonb as body from net.http_request_queue where url = 'http://127.0.0.1:9/hook' order by id`;
    expect(posts.length).toBe(7);
    expect(posts.map((p) => p.body.text)).toContain("[staging] 1 embedding job(s) in the dead letter");
    expect(
      (await db
        .sql`select count(*)::int as n from ops_alerts where notified_at is not null and notify_request_id is not null`)[
          0
        ].n,
    ).toBe(7);

    // Still true an hour later: nothing new, nothing posted again.
    expect((await db.sql`select * from private.ops_check_alerts()`).length).toBe(0);
    expect(
      (await db.sql`select count(*)::int as n from net.http_request_queue where url = 'http://127.0.0.1:9/hook'`)[0].n,
    ).toBe(7);

    // The dead letter is retried: its alert resolves; the others stay open.
    expect((await db.sql`select retry_embedding_dead_letter(${[dead]}::bigint[]) as n`)[0].n).toBe(1);
    const [back] = await db.sql`select status, retry_count, last_error from embedding_sync_queue where id = ${dead}`;
    expect(back).toEqual({ status: "pending", retry_count: 0, last_error: null });
    await db.sql`select private.ops_check_alerts()`;
    const open = await db.sql`select kind from ops_alerts where resolved_at is null order by kind`;
    expect(open.map((a) => a.kind)).toEqual([
      "cron_failed",
      "empty_knowledge_base",
      "empty_knowledge_base",
      "files_drift",
      "queue_age",
      "stuck_jobs",
    ]);
    const [resolved] = await db.sql`select resolved_at from ops_alerts where kind = 'dead_letters'`;
    expect(resolved.resolved_at).toBeInstanceOf(Date);
  });

  it("a retry never overrides a newer pending job of the same row", async () => {
    await db.sql`delete from embedding_sync_queue`;
    const dead = await job("failed", "R1");
    await job("pending", "R1");
    expect((await db.sql`select retry_embedding_dead_letter(${[dead]}::bigint[]) as n`)[0].n).toBe(0);
    expect((await db.sql`select status from embedding_sync_queue where id = ${dead}`)[0].status).toBe("failed");
  });

  it("without a webhook, alerts are recorded and nothing is posted", async () => {
    await db.sql`delete from vault.secrets where name = 'alert_webhook_url'`;
    await db.sql`update ops_alerts set resolved_at = now() where resolved_at is null`;
    const before = (await db.sql`select count(*)::int as n from net.http_request_queue`)[0].n;
    const opened = await db.sql`select * from private.ops_check_alerts()`;
    expect(opened.length).toBeGreaterThan(0);
    expect(opened.every((a) => a.notified_at === null)).toBe(true);
    expect((await db.sql`select count(*)::int as n from net.http_request_queue`)[0].n).toBe(before);
  });
});
