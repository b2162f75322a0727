// The ticker for the pg_cron stand-in (schema `cron` commented 'local-stack pg_cron stand-in').
// Where the database has the real pg_cron, this never starts: pg_cron runs its own jobs.
//
// Once a second it reads cron.job and runs what is due: standard 5-field expressions (croner) and
// pg_cron's interval form 'N seconds'. Every run is recorded in cron.job_run_details as pg_cron does
// (starting → running → succeeded/failed with return_message). Each job runs on its own
// connection and its errors are caught, so one failing or slow job never stops the others; a job
// still running when it is due again is skipped, as pg_cron does.
import { Cron } from "croner";
import type postgres from "postgres";
import { connectDb } from "../core/db.ts";

export interface CronTickerOptions {
  dbUrl: string;
  log: (line: string) => void;
  tickMs?: number;
}

export interface CronTicker {
  stop(): Promise<void>;
}

interface JobRow {
  jobid: string;
  schedule: string;
  command: string;
}

const SECONDS = /^\s*(\d+)\s+seconds?\s*$/i;

/** Is the stand-in (not the real pg_cron) what this database has? */
export async function hasCronStandIn(sql: postgres.Sql): Promise<boolean> {
  const [row] = await sql<{ d: string | null }[]>`
    select obj_description(oid, 'pg_namespace') as d from pg_namespace where nspname = 'cron'`;
  return row?.d === "local-stack pg_cron stand-in";
}

const parsed = new Map<string, Cron>();

/**
 * Is a job with this schedule due at `now`, given its previous run (or first sighting) at `since`?
 * 'N seconds' (pg_cron's interval form, 1–59): N seconds have passed. A 5-field expression (UTC,
 * as pg_cron's default cron.timezone): a matching minute lies in (since, now]. Throws on a bad schedule.
 */
export function scheduleDue(schedule: string, since: number, now: number): boolean {
  const sec = SECONDS.exec(schedule);
  if (sec) {
    const n = Number(sec[1]);
    if (n < 1 || n > 59) throw new Error("interval must be 1 to 59 seconds");
    // A tick may land a few ms early; 50 ms of slack keeps a '1 seconds' job at one run a second.
    return now - since >= n * 1000 - 50;
  }
  let c = parsed.get(schedule);
  if (!c) {
    c = new Cron(schedule, { paused: true, mode: "5-part", timezone: "Etc/UTC" });
    parsed.set(schedule, c);
  }
  const next = c.nextRun(new Date(since));
  return !!next && next.getTime() <= now;
}

export function startCronTicker(opts: CronTickerOptions): CronTicker {
  // One connection reads the job list; jobs run on a small pool of their own.
  const sql = connectDb(opts.dbUrl, { max: 4, idle_timeout: 30 });
  const lastRun = new Map<string, number>(); // jobid -> ms of the last start (or first sighting)
  const running = new Set<string>();
  const invalid = new Set<string>();
  const runs = new Set<Promise<void>>();
  let stopped = false;
  let ticking = false;

  function isDue(job: JobRow, now: number): boolean {
    const last = lastRun.get(job.jobid);
    if (last === undefined) {
      lastRun.set(job.jobid, now);
      // An interval job first runs one interval after it is first seen; a cron expression may be
      // due within this very tick.
      if (SECONDS.test(job.schedule)) return false;
    }
    try {
      return scheduleDue(job.schedule, last ?? now - (opts.tickMs ?? 1000), now);
    } catch (e) {
      if (!invalid.has(job.jobid)) {
        opts.log(`[cron] job ${job.jobid}: invalid schedule '${job.schedule}': ${e instanceof Error ? e.message : e}`);
      }
      invalid.add(job.jobid);
      return false;
    }
  }

  async function run(job: JobRow): Promise<void> {
    running.add(job.jobid);
    lastRun.set(job.jobid, Date.now());
    let runid: string | null = null;
    try {
      // Only if the job is still scheduled: cron.unschedule may have committed since the tick read it.
      const [r] = await sql<{ runid: string }[]>`
        insert into cron.job_run_details (jobid, job_pid, database, username, command, status, start_time)
        select ${job.jobid}::bigint, ${process.pid}, current_database(), current_user, ${job.command}, 'running', now()
        where exists (select from cron.job where jobid = ${job.jobid}::bigint and active)
        returning runid::text`;
      if (!r) return;
      runid = r.runid;
      const result = await sql.unsafe(job.command);
      const message = `${result.command ?? "OK"} ${result.count ?? ""}`.trim();
      await sql`update cron.job_run_details set status = 'succeeded', return_message = ${message}, end_time = now() where runid = ${runid}::bigint`;
    } catch (e) {
      const message = e instanceof Error ? e.message : String(e);
      if (!stopped) opts.log(`[cron] job ${job.jobid} failed: ${message}`);
      if (runid) {
        await sql`update cron.job_run_details set status = 'failed', return_message = ${message}, end_time = now() where runid = ${runid}::bigint`
          .catch(() => {});
      }
    } finally {
      running.delete(job.jobid);
    }
  }

  async function tick(): Promise<void> {
    if (stopped || ticking) return;
    ticking = true;
    try {
      const jobs = await sql<JobRow[]>`select jobid::text, schedule, command from cron.job where active order by jobid`;
      const now = Date.now();
      const live = new Set(jobs.map((j) => j.jobid));
      for (const id of [...lastRun.keys()]) if (!live.has(id)) (lastRun.delete(id), invalid.delete(id));
      for (const job of jobs) {
        if (running.has(job.jobid) || !isDue(job, now)) continue;
        const p = run(job).finally(() => runs.delete(p));
        runs.add(p);
      }
    } catch (e) {
      if (!stopped) opts.log(`[cron] tick failed: ${e instanceof Error ? e.message : e}`);
    } finally {
      ticking = false;
    }
  }

  const timer = setInterval(() => void tick(), opts.tickMs ?? 1000);
  return {
    stop: async () => {
      stopped = true;
      clearInterval(timer);
      await Promise.race([Promise.allSettled([...runs]), new Promise((r) => setTimeout(r, 3000))]);
      await sql.end({ timeout: 2 });
    },
  };
}
