// pg_net and pg_cron behaviour of the local stack, driven from SQL as a migration or an operator
// would: net.http_post / private.invoke_edge_function, cron.schedule / cron.unschedule.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FIXTURE_CONFIG, FIXTURE_FUNCTIONS_DIR, startTestStack } from "../packages/testkit/stack.ts";
import type { LocalStack } from "../packages/local-stack/index.ts";
import { useTestDatabase, waitFor } from "./helpers/db.ts";

const db = useTestDatabase();
let stack: LocalStack;
const CONCURRENCY = 4;

beforeAll(async () => {
  await db
    .sql`create table public.local_stack_calls (id bigserial primary key, body jsonb, role text, at timestamptz default clock_timestamp())`;
  await db.sql`create table public.ticks (job text, at timestamptz default clock_timestamp())`;
  stack = await startTestStack({
    databaseUrl: db.url,
    functionsDir: FIXTURE_FUNCTIONS_DIR,
    configFile: FIXTURE_CONFIG,
    pgNetConcurrency: CONCURRENCY,
  });
}, 60_000);
afterAll(async () => {
  await stack?.stop();
});

const recordUrl = () => `${stack.apiUrl}/functions/v1/record-call`;
const authHeaders = () =>
  db.sql.json({ "Content-Type": "application/json", Authorization: `Bearer ${stack.serviceRoleKey}` });

describe("pg_net stand-in", () => {
  it("sends a committed net.http_post after commit, never a rolled-back one, and records the response", async () => {
    await db.sql.begin(async (tx) => {
      await tx`select net.http_post(url := ${recordUrl()}, body := '{"tag":"rolled-back"}'::jsonb, headers := ${authHeaders()})`;
      await tx`select pg_sleep(0.3)`; // the sender must not see it while the transaction is open
      throw new Error("rollback on purpose");
    }).catch((e) => expect(String(e)).toContain("rollback on purpose"));

    const [{ id }] = await db.sql.begin(async (tx) => {
      const r = await tx<{ id: string }[]>`
        select net.http_post(url := ${recordUrl()}, body := '{"tag":"committed"}'::jsonb, headers := ${authHeaders()}) as id`;
      await tx`select pg_sleep(0.3)`;
      expect(await db.sql`select body from public.local_stack_calls`).toEqual([]); // not before commit
      return r;
    });
    const response = await waitFor("the committed request's response", async () => {
      const [r] = await db
        .sql`select status_code, content, timed_out, error_msg from net._http_response where id = ${id}::bigint`;
      return r;
    });
    expect(response).toMatchObject({ status_code: 200, timed_out: false, error_msg: null });
    expect(JSON.parse(response.content)).toHaveProperty("recorded");
    expect(await db.sql`select body, role from public.local_stack_calls`).toEqual([{
      body: { tag: "committed" },
      role: "service_role",
    }]);
    expect(await db.sql`select count(*)::int as n from net.http_request_queue`).toEqual([{ n: 0 }]);
  });

  it("private.invoke_edge_function reaches the function through the Vault secrets", async () => {
    const [{ id }] = await db
      .sql`select private.invoke_edge_function('record-call', '{"via":"invoke_edge_function"}'::jsonb) as id`;
    expect(id).not.toBeNull();
    await waitFor(
      "the invoke_edge_function call",
      async () =>
        (await db.sql`select 1 from public.local_stack_calls where body->>'via' = 'invoke_edge_function'`).length === 1,
    );
  });

  it("honours timeout_milliseconds and records timed_out", async () => {
    const t0 = Date.now();
    const [{ id }] = await db.sql`
      select net.http_get(url := ${`${stack.apiUrl}/functions/v1/echo?delay=5000`}, headers := ${authHeaders()},
                          timeout_milliseconds := 300) as id`;
    const r = await waitFor("the timed-out response", async () => {
      const [row] = await db
        .sql`select status_code, timed_out, error_msg from net._http_response where id = ${id}::bigint`;
      return row;
    }, 4000);
    expect(r).toMatchObject({ status_code: null, timed_out: true });
    expect(r.error_msg).toMatch(/timeout/i);
    expect(Date.now() - t0).toBeLessThan(3000);
  });

  it("records errors (connection refused) and HTTP errors with their status", async () => {
    const [{ a, b }] = await db.sql`
      select net.http_post(url := 'http://127.0.0.1:9/nothing-listens-here') as a,
             net.http_post(url := ${`${stack.apiUrl}/functions/v1/echo`}) as b`; // no JWT → 401
    const rows = await waitFor("both responses", async () => {
      const r = await db
        .sql`select id::text, status_code, error_msg from net._http_response where id in (${a}::bigint, ${b}::bigint) order by id`;
      return r.length === 2 && r;
    });
    expect(rows[0]).toMatchObject({ status_code: null });
    expect(rows[0].error_msg).toBeTruthy();
    expect(rows[1]).toMatchObject({ status_code: 401, error_msg: null });
  });

  it("sends concurrently with a bounded number in flight", async () => {
    const n = 12;
    const delay = 400;
    const t0 = Date.now();
    const ids = await db.sql<{ id: string }[]>`
      select net.http_get(url := ${`${stack.apiUrl}/functions/v1/echo?delay=${delay}`}, headers := ${authHeaders()},
                          timeout_milliseconds := 10000)::text as id
      from generate_series(1, ${n})`;
    await waitFor("all responses", async () => {
      const [{ c }] = await db.sql`select count(*)::int as c from net._http_response where id = any(${
        ids.map((r) => r.id)
      }::bigint[]) and status_code = 200`;
      return c === n;
    }, 20_000);
    const elapsed = Date.now() - t0;
    // Sequential would take n*delay; unbounded would take ~delay; CONCURRENCY at a time takes n/CONCURRENCY waves.
    expect(elapsed).toBeGreaterThanOrEqual((n / CONCURRENCY) * delay - 100);
    expect(elapsed).toBeLessThan(n * delay);
  });
});

describe("pg_cron stand-in", () => {
  it("runs a '1 seconds' job repeatedly, records each run, isolates a failing job, stops after unschedule", async () => {
    expect(stack.cronTicker).toBe(true);
    await db.sql`select cron.schedule('tick-ok', '1 seconds', $$insert into public.ticks (job) values ('ok')$$)`;
    await db.sql`select cron.schedule('tick-fail', '1 seconds', $$select 1/0$$)`;
    const [{ jobid }] = await db.sql`select jobid from cron.job where jobname = 'tick-ok'`;

    await waitFor("three successful runs", async () => {
      const [{ c }] = await db
        .sql`select count(*)::int as c from cron.job_run_details where jobid = ${jobid} and status = 'succeeded'`;
      return c >= 3;
    }, 10_000);
    const failed = await db.sql`
      select d.status, d.return_message from cron.job_run_details d join cron.job j using (jobid) where j.jobname = 'tick-fail'`;
    expect(failed.length).toBeGreaterThanOrEqual(2);
    expect(failed.every((r) => r.status === "failed" && /division by zero/.test(r.return_message))).toBe(true);
    const [{ ticks }] = await db.sql`select count(*)::int as ticks from public.ticks`;
    expect(ticks).toBeGreaterThanOrEqual(3);

    await db.sql`select cron.unschedule('tick-ok')`;
    await db.sql`select cron.unschedule('tick-fail')`;
    // A run already started may still finish; none starts after unschedule.
    await waitFor(
      "runs in progress to finish",
      async () => (await db.sql`select 1 from cron.job_run_details where status = 'running'`).length === 0,
    );
    const okTicks = async () =>
      (await db.sql<{ c: number }[]>`select count(*)::int as c from public.ticks where job = 'ok'`)[0].c;
    const after = await okTicks();
    // A witness on the same schedule runs twice: the ticker went round, and the unscheduled job did not
    // run with it (no wall-clock wait decides this).
    await db.sql`select cron.schedule('tick-witness', '1 seconds', $$insert into public.ticks (job) values ('w')$$)`;
    await waitFor(
      "two witness runs",
      async () => (await db.sql`select 1 from public.ticks where job = 'w'`).length >= 2,
      10_000,
    );
    await db.sql`select cron.unschedule('tick-witness')`;
    expect(await okTicks()).toBe(after);
  });

  it("cron.alter_job pauses a job (active => false), resumes it, and changes its command in place", async () => {
    await db.sql`create table public.alter_ticks (job text, at timestamptz default clock_timestamp())`;
    const count = async (job: string) =>
      (await db.sql<{ c: number }[]>`select count(*)::int as c from public.alter_ticks where job = ${job}`)[0].c;
    const [{ id }] = await db
      .sql`select cron.schedule('alter-me', '1 seconds', $$insert into public.alter_ticks (job) values ('a')$$) as id`;
    await db
      .sql`select cron.schedule('alter-witness', '1 seconds', $$insert into public.alter_ticks (job) values ('w')$$)`;
    await waitFor("a first run", async () => (await count("a")) >= 1, 10_000);

    await db.sql`select cron.alter_job(${id}::bigint, active => false)`;
    expect(await db.sql`select active, schedule from cron.job where jobid = ${id}::bigint`).toEqual([{
      active: false,
      schedule: "1 seconds",
    }]);
    await waitFor(
      "runs in progress to finish",
      async () =>
        (await db.sql`select 1 from cron.job_run_details where jobid = ${id}::bigint and status = 'running'`).length ===
          0,
    );
    const paused = await count("a");
    // The witness, on the same schedule, runs twice more: the ticker went round while the job was paused.
    const w = await count("w");
    await waitFor("two more ticks of the witness", async () => (await count("w")) >= w + 2, 10_000);
    expect(await count("a")).toBe(paused);

    await db
      .sql`select cron.alter_job(${id}::bigint, command => $$insert into public.alter_ticks (job) values ('b')$$, active => true)`;
    await waitFor("the resumed job to run its new command", async () => (await count("b")) >= 1, 10_000);
    expect(await count("a")).toBe(paused);

    await expect(db.sql`select cron.alter_job(987654321, active => false)`).rejects.toThrow(
      /could not find valid entry for job 987654321/,
    );
    await db.sql`select cron.unschedule('alter-me'), cron.unschedule('alter-witness')`;
  });

  it("a cron job that calls a function through invoke_edge_function reaches it", async () => {
    await db
      .sql`select cron.schedule('call-fn', '1 seconds', $$select private.invoke_edge_function('record-call', '{"via":"cron"}'::jsonb)$$)`;
    await waitFor(
      "a call from the cron job",
      async () => (await db.sql`select 1 from public.local_stack_calls where body->>'via' = 'cron'`).length >= 1,
      10_000,
    );
    await db.sql`select cron.unschedule('call-fn')`;
  });
});
