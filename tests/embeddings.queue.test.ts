// The queue's SQL under concurrency, on the real PostgreSQL: claim/complete/fail/recover as
// separate clients would run them.
import postgres from "postgres";
import { describe, expect, it } from "vitest";
import { useTestDatabase } from "./helpers/db.ts";

const db = useTestDatabase();

async function seedJobs(table: string, n: number) {
  // Set-based: one statement, as resync does.
  await db.sql`insert into embedding_sync_queue (source_table, source_id, action, content)
               select ${table}, g::text, 'INSERT', 'contenu ' || g from generate_series(1, ${n}) g`;
}

describe("embedding_sync_queue under concurrency", () => {
  it("8 concurrent workers on 20,000 jobs: each job claimed and completed exactly once", async () => {
    await seedJobs("bulk", 20_000);
    const clients = Array.from({ length: 8 }, () => postgres(db.url, { max: 1, onnotice: () => {} }));
    const seen = new Map<string, number>();
    try {
      await Promise.all(clients.map(async (c, w) => {
        for (;;) {
          const jobs = await c<{ id: string }[]>`select id from claim_embedding_jobs(${`w${w}`}, 250, 60)`;
          if (jobs.length === 0) return;
          for (const j of jobs) seen.set(j.id, (seen.get(j.id) ?? 0) + 1);
          const [{ n }] = await c<{ n: number }[]>`
            select complete_embedding_jobs(${`w${w}`}, ${`{${jobs.map((j) => j.id).join(",")}}`}::bigint[]) as n`;
          expect(n).toBe(jobs.length);
        }
      }));
    } finally {
      await Promise.all(clients.map((c) => c.end()));
    }
    expect(seen.size).toBe(20_000);
    expect([...seen.values()].every((n) => n === 1)).toBe(true);
    const [s] = await db.sql`select * from embedding_sync_status where source_table = 'bulk'`;
    expect(s).toMatchObject({ pending: "0", processing: "0", completed: "20000", failed: "0" });
  });

  it("only the lease holder completes; fail backs off with jitter, then dead-letters", async () => {
    await seedJobs("lease", 1);
    const [job] = await db.sql`select id from claim_embedding_jobs('holder', 10, 60)`;
    const [{ n }] = await db.sql`select complete_embedding_jobs('intruder', array[${job.id}]::bigint[]) as n`;
    expect(n).toBe(0);
    await db.sql`update embedding_sync_settings set backoff_base_seconds = 10`;
    const waits: number[] = [];
    for (let attempt = 1; attempt <= 3; attempt++) {
      if (attempt > 1) {
        await db.sql`update embedding_sync_queue set run_at = now() where id = ${job.id}`;
        await db.sql`select id from claim_embedding_jobs('holder', 10, 60)`;
      }
      const [r] = await db.sql`select status, extract(epoch from run_at - now())::float8 as wait
                               from fail_embedding_jobs('holder', array[${job.id}]::bigint[], 'boom ' || ${attempt})`;
      if (attempt < 3) {
        expect(r.status).toBe("pending");
        waits.push(r.wait);
      } else {
        expect(r.status).toBe("failed");
      }
    }
    // 10 s * 2^k, jittered by [0.5, 1.5).
    expect(waits[0]).toBeGreaterThanOrEqual(5 - 0.5);
    expect(waits[0]).toBeLessThan(15);
    expect(waits[1]).toBeGreaterThanOrEqual(10 - 0.5);
    expect(waits[1]).toBeLessThan(30);
    const [dead] = await db.sql`select * from embedding_sync_dead_letter where id = ${job.id}`;
    expect(dead).toMatchObject({ retry_count: 3, last_error: "boom 3" });
  });
});
