// The sending half of the pg_net stand-in (the platform bootstrap holds the SQL half).
//
// Like pg_net's background worker, it only ever sees committed rows of net.http_request_queue, so a
// request made in a transaction that rolls back is never sent. It wakes on the NOTIFY that
// net._enqueue issues (delivered at commit, on PGlite too: pglite-server.ts routes notifications)
// and also sweeps every second, because a notification can be missed while reconnecting.
// At most `concurrency` requests are in flight; each honours its timeout_milliseconds. The answer
// (or the timeout / error) goes to net._http_response under the request's id, and the request row
// is deleted in the same transaction.
import { connectDb } from "../core/db.ts";

export interface PgNetSenderOptions {
  dbUrl: string;
  concurrency?: number;
  sweepMs?: number;
  listen?: boolean;
  log: (line: string) => void;
}

interface QueuedRequest {
  id: string;
  method: string;
  url: string;
  headers: Record<string, unknown> | null;
  body: Buffer | null;
  timeout_milliseconds: number;
}

export interface PgNetSender {
  stop(): Promise<void>;
  /** Requests sent since start (for tests and status). */
  stats(): { sent: number; inFlight: number };
}

export async function startPgNetSender(opts: PgNetSenderOptions): Promise<PgNetSender> {
  const concurrency = opts.concurrency ?? 16;
  const sql = connectDb(opts.dbUrl, { max: 3, idle_timeout: 0 });
  const inFlight = new Set<string>();
  const pending = new Set<Promise<void>>();
  let stopped = false;
  let sweeping = false;
  let again = false;
  let sent = 0;

  async function sweep(): Promise<void> {
    if (stopped) return;
    if (sweeping) {
      again = true;
      return;
    }
    sweeping = true;
    try {
      do {
        again = false;
        const room = concurrency - inFlight.size;
        if (room <= 0) break;
        const exclude = [...inFlight];
        const rows = await sql<QueuedRequest[]>`
          select id::text, method, url, headers, body, timeout_milliseconds
          from net.http_request_queue
          where not (id::text = any(${exclude}::text[]))
          order by id limit ${room}`;
        for (const r of rows) {
          inFlight.add(r.id);
          const p = send(r).finally(() => {
            inFlight.delete(r.id);
            pending.delete(p);
            void sweep();
          });
          pending.add(p);
        }
        if (rows.length === room) again = true;
      } while (again && !stopped);
    } catch (e) {
      if (!stopped) opts.log(`[pg_net] sweep failed: ${e instanceof Error ? e.message : e}`);
    } finally {
      sweeping = false;
    }
  }

  async function send(r: QueuedRequest): Promise<void> {
    const timeout = Math.max(1, r.timeout_milliseconds);
    let status: number | null = null;
    let content: string | null = null;
    let contentType: string | null = null;
    let headers: Record<string, string> | null = null;
    let timedOut = false;
    let errorMsg: string | null = null;
    try {
      const res = await fetch(r.url, {
        method: r.method,
        // jsonb may hold numbers or booleans; HTTP headers are strings.
        headers: Object.fromEntries(
          Object.entries(r.headers ?? {}).map(([k, v]) => [k, typeof v === "string" ? v : JSON.stringify(v)]),
        ),
        body: r.body && r.method !== "GET" && r.method !== "DELETE" ? new Uint8Array(r.body) : undefined,
        signal: AbortSignal.timeout(timeout),
      });
      status = res.status;
      content = await res.text();
      headers = Object.fromEntries(res.headers.entries());
      contentType = res.headers.get("content-type");
    } catch (e) {
      const err = e as Error;
      if (err.name === "TimeoutError" || err.name === "AbortError") {
        timedOut = true;
        errorMsg = `Timeout of ${timeout} ms reached`;
      } else {
        errorMsg = String((err as { cause?: { message?: string } }).cause?.message ?? err.message);
      }
    }
    try {
      await sql.begin(async (tx) => {
        await tx`
          insert into net._http_response (id, status_code, content_type, headers, content, timed_out, error_msg)
          values (${r.id}::bigint, ${status}, ${contentType}, ${
          headers ? tx.json(headers) : null
        }, ${content}, ${timedOut}, ${errorMsg})`;
        await tx`delete from net.http_request_queue where id = ${r.id}::bigint`;
      });
      sent++;
    } catch (e) {
      if (!stopped) opts.log(`[pg_net] could not record response ${r.id}: ${e instanceof Error ? e.message : e}`);
    }
  }

  if (opts.listen) {
    await sql.listen("net_http_request", () => void sweep());
  }
  const timer = setInterval(() => void sweep(), opts.sweepMs ?? (opts.listen ? 1000 : 100));
  // pg_net keeps responses for 6 hours (pg_net.ttl) and then deletes them; so does the stand-in.
  const ttl = async () => {
    await sql`delete from net._http_response where created < now() - interval '6 hours'`
      .catch((e) => !stopped && opts.log(`[pg_net] ttl cleanup failed: ${e instanceof Error ? e.message : e}`));
  };
  const ttlTimer = setInterval(() => void ttl(), 10 * 60_000);
  void ttl();
  void sweep();

  return {
    stats: () => ({ sent, inFlight: inFlight.size }),
    stop: async () => {
      stopped = true;
      clearInterval(timer);
      clearInterval(ttlTimer);
      // Give requests in flight a moment to finish and be recorded; one still running after that
      // stays in the queue and is sent again on the next start (at-least-once, like a crash).
      await Promise.race([Promise.allSettled([...pending]), new Promise((r) => setTimeout(r, 3000))]);
      await sql.end({ timeout: 2 });
    },
  };
}
