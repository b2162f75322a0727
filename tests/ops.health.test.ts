// The health function end to end: local stack (gateway + Deno) on the real PostgreSQL. A healthy
// stack answers 200; breaking a Vault entry, a cron job or the migration history answers 503 naming
// the failing check; an emptied source table is a warning.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestStack } from "../packages/testkit/stack.ts";
import type { LocalStack } from "../packages/local-stack/index.ts";
import { CHECKS } from "../packages/ops/checks.ts";
import { type HealthReport, healthReportSchema } from "../packages/ops/report.ts";
import { useTestDatabase } from "./helpers/db.ts";

const db = useTestDatabase();
let stack: LocalStack;

beforeAll(async () => {
  stack = await startTestStack({ databaseUrl: db.url, functionEnv: { EMBEDDING_PROVIDER: "offline" } });
  // A healthy project: labelled, one collected document, a coherence check that ran. The schedules
  // stay active (the health check wants them scheduled), but their history is this file's to write.
  await db.sql`select set_environment_label('staging')`;
  await db.sql`insert into legal_documents (id, category, doc_type, title, content, file_path)
               values ('LEGIARTI000000000001', 'codes', 'article', 'Article 1', 'Texte de l''article.', 'codes/LEGIARTI000000000001.json')`;
  await db.sql`select private.files_queue_check_coherence()`;
  // Every job ran just now: a job that never ran, or not within twice its interval, fails schedules.
  await db.sql`insert into cron.job_run_details (jobid, status, return_message, start_time, end_time)
               select jobid, 'succeeded', '1 row', now(), now() from cron.job`;
}, 120_000);

afterAll(async () => {
  await stack?.stop();
});

async function health(key: string | null, query = ""): Promise<{ status: number; body: HealthReport }> {
  const r = await fetch(`${stack.apiUrl}/functions/v1/health${query}`, {
    headers: key ? { authorization: `Bearer ${key}` } : {},
  });
  const body = await r.json();
  return { status: r.status, body: r.status === 200 || r.status === 503 ? healthReportSchema.parse(body) : body };
}

const check = (r: HealthReport, name: string) => r.checks.find((c) => c.name === name)!;

describe("GET /functions/v1/health", () => {
  it("answers 200 on a healthy stack, with every check and its detail for the service role", async () => {
    const { status, body } = await health(stack.serviceRoleKey);
    expect(body.checks.filter((c) => c.status === "fail")).toEqual([]);
    expect(status).toBe(200);
    expect(body.environment).toBe("staging");
    expect(body.checks.map((c) => c.name)).toEqual(CHECKS.map(([name]) => name));
    for (const name of ["database", "environment", "extensions", "migrations", "vault", "knowledge_base", "provider"]) {
      expect(check(body, name), name).toMatchObject({ status: "ok" });
    }
    const [{ db: dbName }] = await db.sql`select current_database() as db`;
    expect(check(body, "database").data).toMatchObject({ database: dbName });
    const [{ n }] = await db.sql`select count(*)::int as n from supabase_migrations.schema_migrations`;
    expect(check(body, "migrations").data).toMatchObject({ applied: n, missing: [] });
    // client_document_pages never held a row: listed, and no warning for it (see ops_knowledge_base).
    expect(check(body, "knowledge_base").data).toMatchObject({
      sources: [{ source_table: "client_document_pages", rows: 0 }, { source_table: "legal_documents", rows: 1 }],
    });
    expect(check(body, "knowledge_base").status).toBe("ok");
    expect(check(body, "provider").data).toMatchObject({
      provider: "offline",
      dimensions: 1536,
      table_dimensions: 1536,
    });
    // Vault values never leave the database: the report names entries only.
    const [{ secret }] = await db
      .sql`select decrypted_secret as secret from vault.decrypted_secrets where name = 'secret_key'`;
    expect(JSON.stringify(body)).not.toContain(secret);
  });

  it("gives any valid caller the status and environment, and no detail; none without a credential", async () => {
    const { status, body } = await health(stack.anonKey);
    expect(status).toBe(200);
    expect(body.environment).toBe("staging");
    expect(body.checks.length).toBe(CHECKS.length);
    expect(body.checks.every((c) => c.detail === null && c.data === undefined && c.ms === undefined)).toBe(true);
    expect((await health(null)).status).toBe(401);
  });

  it("?probe=provider makes one real embedding call (service role)", async () => {
    const { body } = await health(stack.serviceRoleKey, "?probe=provider");
    expect(check(body, "provider").status).toBe("ok");
    expect(check(body, "provider").data?.probe_ms).toEqual(expect.any(Number));
    expect((await health(stack.serviceRoleKey, "?probe=everything")).status).toBe(400);
  });

  it("503 naming vault when a Vault entry is deleted", async () => {
    const [saved] = await db
      .sql`select decrypted_secret as value from vault.decrypted_secrets where name = 'project_url'`;
    await db.sql`delete from vault.secrets where name = 'project_url'`;
    try {
      const { status, body } = await health(stack.serviceRoleKey);
      expect(status).toBe(503);
      expect(body.status).toBe("fail");
      expect(check(body, "vault")).toMatchObject({ status: "fail", detail: expect.stringContaining("project_url") });
      // Any caller sees which check fails, without its detail.
      const anon = await health(stack.anonKey);
      expect(anon.status).toBe(503);
      expect(check(anon.body, "vault")).toEqual({ name: "vault", status: "fail", detail: null });
    } finally {
      await db.sql`select vault.create_secret(${saved.value}, 'project_url')`;
    }
    expect((await health(stack.serviceRoleKey)).status).toBe(200);
  });

  it("503 naming schedules when a cron job is unscheduled", async () => {
    const [job] = await db.sql`select schedule, command from cron.job where jobname = 'files-queue-coherence'`;
    await db.sql`select cron.unschedule('files-queue-coherence')`;
    try {
      const { status, body } = await health(stack.serviceRoleKey);
      expect(status).toBe(503);
      expect(check(body, "schedules")).toMatchObject({
        status: "fail",
        detail: expect.stringContaining("files-queue-coherence not scheduled"),
      });
    } finally {
      // Scheduled again under a new job id, with no run yet: give it one, as the first hour would.
      const [{ jobid }] = await db
        .sql`select cron.schedule('files-queue-coherence', ${job.schedule}, ${job.command}) as jobid`;
      await db
        .sql`insert into cron.job_run_details (jobid, status, return_message, start_time, end_time) values (${jobid}, 'succeeded', '1 row', now(), now())`;
    }
    expect((await health(stack.serviceRoleKey)).status).toBe(200);
  });

  it("503 naming schedules when a job's last run failed", async () => {
    const [job] = await db.sql`select jobid from cron.job where jobname = 'ops-metrics-cleanup'`;
    await db.sql`insert into cron.job_run_details (jobid, status, return_message, start_time, end_time)
                 values (${job.jobid}, 'failed', 'ERROR: boom', now() + interval '1 hour', now() + interval '1 hour')`;
    const { status, body } = await health(stack.serviceRoleKey);
    expect(status).toBe(503);
    expect(check(body, "schedules").detail).toContain("ops-metrics-cleanup last run failed: ERROR: boom");
    await db.sql`delete from cron.job_run_details where jobid = ${job.jobid} and return_message = 'ERROR: boom'`;
  });

  it("warns 'empty knowledge base' (still 200) when a source table is emptied", async () => {
    await db.sql`delete from legal_documents`;
    const { status, body } = await health(stack.serviceRoleKey);
    expect(status).toBe(200);
    expect(body.status).toBe("warn");
    expect(check(body, "knowledge_base")).toMatchObject({
      status: "warn",
      detail: expect.stringMatching(/^empty knowledge base: (\S+, )?legal_documents/),
    });
  });

  it("503 naming migrations when a migration's row is removed from the history", async () => {
    const [row] = await db
      .sql`delete from supabase_migrations.schema_migrations where version = '20260101001100' returning *`;
    try {
      const { status, body } = await health(stack.serviceRoleKey);
      expect(status).toBe(503);
      expect(check(body, "migrations")).toMatchObject({
        status: "fail",
        detail: "1 migration(s) not applied: 20260101001100",
      });
    } finally {
      await db.sql`insert into supabase_migrations.schema_migrations ${db.sql(row)}`;
    }
  });

  it("warns when the environment has no label", async () => {
    await db.sql`select set_environment_label(null)`;
    const { body } = await health(stack.serviceRoleKey);
    expect(body.environment).toBeNull();
    expect(check(body, "environment").status).toBe("warn");
    await db.sql`select set_environment_label('staging')`;
  });

  it("the dashboard data and the retry need the service role", async () => {
    const anon = { authorization: `Bearer ${stack.anonKey}` };
    expect((await fetch(`${stack.apiUrl}/functions/v1/health/dashboard`, { headers: anon })).status).toBe(403);
    const retry = await fetch(`${stack.apiUrl}/functions/v1/health/retry`, {
      method: "POST",
      headers: anon,
      body: JSON.stringify({ ids: [1] }),
    });
    expect(retry.status).toBe(403);
    const bad = await fetch(`${stack.apiUrl}/functions/v1/health/retry`, {
      method: "POST",
      headers: { authorization: `Bearer ${stack.serviceRoleKey}` },
      body: JSON.stringify({ ids: ["1; drop table x"] }),
    });
    expect(bad.status).toBe(400);
  });
});
