// files_queue's SQL on the real PostgreSQL: the Storage trigger's transaction, keyset repopulate,
// concurrent repopulates, the anti-join repair, coherence/alert, and the worker's queue rules.
import { describe, expect, it } from "vitest";
import postgres from "postgres";
import { useTestDatabase } from "./helpers/db.ts";

const BUCKET = "agentbasic-legifrance-raw";
const db = useTestDatabase();

async function seedObjects(n: number, prefix: string) {
  await db.sql`insert into storage.buckets (id, name) values (${BUCKET}, ${BUCKET}) on conflict do nothing`;
  // Set-based, and with the trigger on: each object enqueues itself.
  await db.sql`
    insert into storage.objects (bucket_id, name, metadata)
    select ${BUCKET}, ${prefix} || lpad(g::text, 6, '0') || '.json', jsonb_build_object('size', 100 + g, 'mimetype', 'application/json')
      from generate_series(1, ${n}) g`;
}

async function coherence() {
  const [c] = await db.sql`select * from files_queue_coherence where bucket_id = ${BUCKET}`;
  return Object.fromEntries(Object.entries(c).map(([k, v]) => [k, k === "bucket_id" ? v : Number(v)]));
}

describe("the Storage trigger", () => {
  it("enqueues in the object's own transaction: a rolled-back upload leaves no row, a committed one has one", async () => {
    await db.sql`insert into storage.buckets (id, name) values (${BUCKET}, ${BUCKET}) on conflict do nothing`;
    await db.sql.begin(async (tx) => {
      await tx`insert into storage.objects (bucket_id, name, metadata) values (${BUCKET}, 'tx/a.json', '{"size": 5}')`;
      const [inside] = await tx`select status, file_size from files_queue where file_path = 'tx/a.json'`;
      expect(inside).toMatchObject({ status: "pending", file_size: "5" });
      throw new Error("upload failed: rollback");
    }).catch((e) => expect(String(e)).toMatch(/rollback/));
    expect(await db.sql`select 1 from files_queue where file_path = 'tx/a.json'`).toHaveLength(0);

    await db
      .sql`insert into storage.objects (bucket_id, name, metadata) values (${BUCKET}, 'tx/a.json', '{"size": 5}')`;
    expect(await db.sql`select 1 from files_queue where file_path = 'tx/a.json'`).toHaveLength(1);
  });

  it("a re-upload resets a completed row to pending and takes the new size; a delete marks the row", async () => {
    await db.sql`update files_queue set status = 'completed', processed = true where file_path = 'tx/a.json'`;
    await db.sql`update storage.objects set metadata = '{"size": 9}', version = 'v2' where name = 'tx/a.json'`;
    const [row] = await db.sql`select status, processed, file_size from files_queue where file_path = 'tx/a.json'`;
    expect(row).toEqual({ status: "pending", processed: false, file_size: "9" });
    await db.sql`update storage.objects set last_accessed_at = now() where name = 'tx/a.json'`;
    await db.sql`delete from storage.objects where name = 'tx/a.json'`;
    const [gone] = await db.sql`select status from files_queue where file_path = 'tx/a.json'`;
    expect(gone.status).toBe("deleted");
    await db.sql`delete from files_queue`;
  });
});

describe("repopulate and repair", () => {
  const N = 20_000;

  it("TRUNCATE, then keyset repopulate restores exactly the missing rows", async () => {
    await seedObjects(N, "rp/");
    expect(await coherence()).toMatchObject({ storage_count: N, queue_count: N, missing_in_queue: 0 });
    await db.sql`truncate files_queue`;
    expect(await db.sql`select public.files_queue_drift_alert(${BUCKET}) as a`).toEqual([{ a: true }]);

    const [dry] = await db.sql`select * from files_queue_repopulate_batch(${BUCKET}, null, 100000, true)`;
    expect(dry).toMatchObject({ inserted: "20000", scanned: "20000", done: true });
    expect(await db.sql`select 1 from files_queue limit 1`).toHaveLength(0);

    let cursor: string | null = null;
    let inserted = 0;
    let batches = 0;
    for (;;) {
      const [b]: { inserted: string; scanned: string; cursor: string; done: boolean }[] = await db
        .sql`select * from files_queue_repopulate_batch(${BUCKET}, ${cursor}, 3000)`;
      inserted += Number(b.inserted);
      cursor = b.cursor;
      batches++;
      if (b.done) break;
    }
    expect(batches).toBe(Math.ceil(N / 3000) + (N % 3000 === 0 ? 1 : 0));
    expect(inserted).toBe(N);
    expect(await coherence()).toMatchObject({
      storage_count: N,
      queue_count: N,
      missing_in_queue: 0,
      queued_without_object: 0,
    });
    const [sizes] = await db.sql`select count(*) filter (where q.file_size = (o.metadata->>'size')::bigint)::int as same
                                   from storage.objects o join files_queue q on q.file_path = o.name`;
    expect(sizes.same).toBe(N);
    expect(await db.sql`select public.files_queue_drift_alert(${BUCKET}) as a`).toEqual([{ a: false }]);
  });

  it("4 concurrent repopulate runs create no duplicate and leave no gap", async () => {
    await db.sql`truncate files_queue`;
    const clients = Array.from({ length: 4 }, () => postgres(db.url, { max: 1, onnotice: () => {} }));
    try {
      const totals = await Promise.all(clients.map(async (sql, i) => {
        let cursor: string | null = null;
        let inserted = 0;
        for (;;) {
          const batch = 1000 + i * 777; // different batch sizes: the runs interleave differently
          const [b]: { inserted: string; cursor: string; done: boolean }[] =
            await sql`select * from files_queue_repopulate_batch(${BUCKET}, ${cursor}, ${batch})`;
          inserted += Number(b.inserted);
          cursor = b.cursor;
          if (b.done) return inserted;
        }
      }));
      expect(totals.reduce((a, b) => a + b, 0)).toBe(N);
    } finally {
      await Promise.all(clients.map((c) => c.end()));
    }
    const [c] = await db.sql`select count(*)::int as n, count(distinct file_path)::int as d from files_queue`;
    expect(c).toEqual({ n: N, d: N });
    expect(await coherence()).toMatchObject({ missing_in_queue: 0 });
  });

  it("a 1% drift is repaired by the anti-join with exactly the missing rows, and the hourly check does it on alert", async () => {
    await db.sql`delete from files_queue where file_path like '%00.json'`;
    const missing = (await coherence()).missing_in_queue as number;
    expect(missing).toBe(N / 100);
    const [r] = await db.sql`select public.files_queue_repair_missing(${BUCKET}) as n`;
    expect(Number(r.n)).toBe(missing);
    expect(await coherence()).toMatchObject({ queue_count: N, missing_in_queue: 0 });

    // 1,500 missing (> 1,000) plus a row whose object never existed: the check alerts and repairs both.
    await db.sql`delete from files_queue where id in (select id from files_queue order by id limit 1500)`;
    await db.sql`insert into files_queue (file_path, bucket_id, file_size) values ('rp/ghost.json', ${BUCKET}, 1)`;
    const [check] = await db.sql`select * from private.files_queue_check_coherence()`;
    expect(check).toMatchObject({
      alert: true,
      missing_in_queue: "1500",
      queued_without_object: "1",
      repaired: "1500",
      marked_deleted: "1",
    });
    expect(await coherence()).toMatchObject({ missing_in_queue: 0, queued_without_object: 0, queue_count: N });
    const [again] = await db.sql`select * from private.files_queue_check_coherence()`;
    expect(again).toMatchObject({ alert: false, repaired: "0" });
  });

  it("the runbook's statements run unchanged", async () => {
    await db.sql.unsafe(`
      INSERT INTO files_queue (file_path, bucket_id, file_size, status, processed, created_at)
      SELECT name, bucket_id, (metadata->>'size')::bigint, 'pending', false, created_at
      FROM storage.objects
      WHERE bucket_id = 'agentbasic-legifrance-raw'
      ON CONFLICT (file_path) DO NOTHING`);
    const [cmp] = await db.sql.unsafe(`
      SELECT
        (SELECT COUNT(*) FROM storage.objects WHERE bucket_id = 'agentbasic-legifrance-raw') AS storage_count,
        (SELECT COUNT(*) FROM files_queue WHERE bucket_id = 'agentbasic-legifrance-raw') AS queue_count,
        (SELECT SUM((metadata->>'size')::bigint) FROM storage.objects WHERE bucket_id = 'agentbasic-legifrance-raw') AS storage_size,
        (SELECT SUM(file_size) FROM files_queue WHERE bucket_id = 'agentbasic-legifrance-raw') AS queue_size`);
    expect(Number(cmp.queue_count)).toBe(Number(cmp.storage_count) + 1); // + the ghost row, kept as 'deleted'
    const [m] = await db.sql.unsafe(`
      SELECT COUNT(*) AS missing_in_queue
      FROM storage.objects o
      LEFT JOIN files_queue fq ON fq.file_path = o.name
      WHERE o.bucket_id = 'agentbasic-legifrance-raw' AND fq.file_path IS NULL`);
    expect(Number(m.missing_in_queue)).toBe(0);
    const rate = await db.sql.unsafe(`
      SELECT date_trunc('minute', created_at) AS minute, COUNT(*) AS inserted
      FROM files_queue
      WHERE created_at > NOW() - INTERVAL '10 minutes'
      GROUP BY 1 ORDER BY 1 DESC`);
    expect(rate.reduce((a, r) => a + Number(r.inserted), 0)).toBeGreaterThan(0);
    const view = await db.sql`select * from files_queue_insertion_rate`;
    expect(view).toHaveLength(10);
  });
});

describe("the worker's queue rules", () => {
  it("claims with SKIP LOCKED: 4 concurrent workers claim every row exactly once", async () => {
    await db.sql`truncate files_queue`;
    await db
      .sql`insert into files_queue (file_path, bucket_id) select 'w/' || g, ${BUCKET} from generate_series(1, 2000) g`;
    const clients = Array.from({ length: 4 }, () => postgres(db.url, { max: 1, onnotice: () => {} }));
    const seen: string[] = [];
    try {
      await Promise.all(clients.map(async (sql, i) => {
        for (;;) {
          const rows = await sql<{ id: string }[]>`select id from claim_files_queue(${"w" + i}, 37, 60)`;
          if (!rows.length) return;
          seen.push(...rows.map((r) => String(r.id)));
          await sql`select complete_files_queue(${"w" + i}, ${rows.map((r) => r.id)}::bigint[])`;
        }
      }));
    } finally {
      await Promise.all(clients.map((c) => c.end()));
    }
    expect(seen).toHaveLength(2000);
    expect(new Set(seen).size).toBe(2000);
    const [s] = await db
      .sql`select count(*) filter (where status = 'completed' and processed and processed_at is not null)::int as n from files_queue`;
    expect(s.n).toBe(2000);
  });

  it("only the lease holder completes; failures back off, then dead-letter with the error; expired leases come back", async () => {
    await db.sql`truncate files_queue`;
    await db.sql`insert into files_queue (file_path, bucket_id) values ('l/1', ${BUCKET}), ('l/2', ${BUCKET})`;
    const [a] = await db.sql`select id from claim_files_queue('A', 1, 60)`;
    expect(await db.sql`select * from complete_files_queue('B', ${[a.id]}::bigint[])`).toHaveLength(0);

    const [f1] = await db.sql`select fail_files_queue('A', ${a.id}, 'boom 1') as s`;
    expect(f1.s).toBe("pending");
    const [r1] = await db
      .sql`select status, attempts, last_error, run_at > now() as later from files_queue where id = ${a.id}`;
    expect(r1).toEqual({ status: "pending", attempts: 1, last_error: "boom 1", later: true });
    for (let i = 2; i <= 3; i++) {
      await db.sql`update files_queue set run_at = now() - interval '1 hour' where id = ${a.id}`;
      const [c] = await db.sql`select id from claim_files_queue('A', 1, 60) where file_path = 'l/1'`;
      expect(c?.id).toBe(a.id);
      await db.sql`select fail_files_queue('A', ${a.id}, ${"boom " + i})`;
    }
    const [dead] = await db.sql`select status, attempts, last_error from files_queue where id = ${a.id}`;
    expect(dead).toEqual({ status: "failed", attempts: 3, last_error: "boom 3" });

    const [b] = await db.sql`select id from claim_files_queue('C', 1, 60) where file_path = 'l/2'`;
    await db.sql`update files_queue set lease_expires_at = now() - interval '1 second' where id = ${b.id}`;
    const [back] = await db.sql`select id, locked_by from claim_files_queue('D', 5, 60)`;
    expect(back).toEqual({ id: b.id, locked_by: "D" });
    expect(await db.sql`select * from complete_files_queue('C', ${[b.id]}::bigint[])`).toHaveLength(0);
    const [perm] = await db.sql`select fail_files_queue('D', ${b.id}, 'malformed JSON', true) as s`;
    expect(perm.s).toBe("failed");
  });

  it("the every-minute dispatcher fans out by backlog", async () => {
    await db.sql`truncate files_queue`;
    await db.sql`delete from vault.secrets where name in ('project_url', 'service_role_key')`;
    await db
      .sql`select vault.create_secret('http://127.0.0.1:9', 'project_url'), vault.create_secret('local-test-key', 'service_role_key')`;
    const count = async () =>
      (await db.sql`select count(*)::int as n from net.http_request_queue where url like '%process-files-queue'`)[0].n;
    const [k0] = await db.sql`select private.dispatch_files_workers(4, 50) as k`;
    expect(k0.k).toBe(0);
    await db
      .sql`insert into files_queue (file_path, bucket_id) select 'd/' || g, ${BUCKET} from generate_series(1, 120) g`;
    const before = await count();
    const [k] = await db.sql`select private.dispatch_files_workers(4, 50) as k`;
    expect(k.k).toBe(3);
    expect((await count()) - before).toBe(3);
    const jobs = await db.sql`select jobname, schedule from cron.job where jobname in
      ('legifrance-collector-maintenance', 'process-files-queue', 'files-queue-coherence') order by jobname`;
    expect(jobs.map((j) => [j.jobname, j.schedule])).toEqual([
      ["files-queue-coherence", "7 * * * *"],
      ["legifrance-collector-maintenance", "0 */2 * * *"],
      ["process-files-queue", "* * * * *"],
    ]);
  });
});

describe("lanes", () => {
  it("MASSIVE's bulk uploads never hold back a maintenance file; bulk keeps its share; repopulate keeps the lane", async () => {
    await db.sql`truncate files_queue`;
    await db.sql`delete from storage.objects where bucket_id = ${BUCKET}`;
    await db.sql`insert into storage.objects (bucket_id, name, metadata, user_metadata)
                 select ${BUCKET}, 'lanes/m' || lpad(g::text, 4, '0') || '.json', '{"size": 1}', '{"lane": "bulk"}'
                   from generate_series(1, 500) g`;
    await db.sql`insert into storage.objects (bucket_id, name, metadata, user_metadata)
                 select ${BUCKET}, 'lanes/x' || g || '.json', '{"size": 1}', '{"lane": "live"}' from generate_series(1, 3) g`;
    const [st] = await db.sql`select pending_live::int, pending_bulk::int from files_queue_status
                              where bucket_id = ${BUCKET} and status = 'pending'`;
    expect(st).toEqual({ pending_live: 3, pending_bulk: 500 });

    const batch = await db.sql<
      { file_path: string; lane: string }[]
    >`select file_path, lane from claim_files_queue('w', 20, 60)`;
    // The 3 maintenance files, bulk's reserved 4 (20%) and the 13 live left unused.
    expect(batch.filter((r) => r.lane === "live").map((r) => r.file_path).sort()).toEqual([
      "lanes/x1.json",
      "lanes/x2.json",
      "lanes/x3.json",
    ]);
    expect(batch.filter((r) => r.lane === "bulk")).toHaveLength(17);

    // A steady stream of maintenance files: bulk still gets its 4 of every 20.
    await db.sql`insert into storage.objects (bucket_id, name, metadata)
                 select ${BUCKET}, 'lanes/y' || g || '.json', '{"size": 1}' from generate_series(1, 100) g`;
    const next = await db.sql<{ lane: string }[]>`select lane from claim_files_queue('w', 20, 60)`;
    expect(next.filter((r) => r.lane === "bulk")).toHaveLength(4);

    // After a TRUNCATE, repopulate and repair take each object's lane from its metadata again.
    await db.sql`truncate files_queue`;
    await db.sql`select * from files_queue_repopulate_batch(${BUCKET}, null, 100000)`;
    const lanes = await db.sql`select lane, count(*)::int as n from files_queue group by lane order by lane`;
    expect(lanes).toEqual([{ lane: "bulk", n: 500 }, { lane: "live", n: 103 }]);
    await db.sql`delete from files_queue where file_path like 'lanes/m%'`;
    await db.sql`select files_queue_repair_missing(${BUCKET})`;
    const [m] = await db.sql`select count(*)::int as n from files_queue where lane = 'bulk'`;
    expect(m.n).toBe(500);
  });

  it("resync_legal_documents re-queues the bucket in the bulk lane", async () => {
    await db.sql`update files_queue set status = 'completed', processed = true`;
    await db.sql`select resync_legal_documents(${BUCKET})`;
    const [r] = await db
      .sql`select count(*) filter (where lane = 'bulk')::int as bulk, count(*)::int as n from files_queue where status = 'pending'`;
    expect(r.bulk).toBe(r.n);
    expect(r.n).toBeGreaterThan(0);
  });
});
