import postgres from "postgres";

/**
 * A postgres.js client for SUPABASE_DB_URL. Prepared statements are off when the URL points at
 * Supabase's transaction pooler (port 6543), which cannot keep them across transactions.
 */
export function connectDb(
  url: string,
  options: postgres.Options<Record<string, postgres.PostgresType>> = {},
): postgres.Sql {
  const pooled = new URL(url).port === "6543";
  surviveLostConnectionsOnConnect();
  return postgres(url, { max: 4, idle_timeout: 20, prepare: !pooled, onnotice: () => {}, ...options });
}

let surviving = false;

/**
 * postgres.js looks up the server's array types on every new connection, in a promise no caller
 * holds. When the server goes away during that lookup (a restart, pg_terminate_backend), the
 * rejection is unhandled, and Deno and Node end the process on it: in an edge runtime, every function
 * and every request in flight with it. The statement that wanted the connection fails or is retried
 * on its own, so that rejection carries nothing to act on: it is logged and the process stays up.
 * Any other unhandled rejection still ends the process.
 */
export function surviveLostConnectionsOnConnect(): void {
  if (surviving) return;
  surviving = true;
  const warn = (e: unknown) =>
    console.warn(`database connection lost while connecting (${(e as { code?: string }).code}); retried on use`);
  const g = globalThis as {
    Deno?: unknown;
    addEventListener?: (type: string, fn: (e: { reason: unknown; preventDefault(): void }) => void) => void;
    process?: { on(event: string, fn: (reason: unknown) => void): void };
  };
  if (g.Deno !== undefined && g.addEventListener) {
    g.addEventListener("unhandledrejection", (e) => {
      if (!isConnectionLost(e.reason)) return;
      e.preventDefault();
      warn(e.reason);
    });
  } else {
    g.process?.on("unhandledRejection", (reason) => {
      if (!isConnectionLost(reason)) throw reason;
      warn(reason);
    });
  }
}

// What postgres.js and PostgreSQL report when the server went away (a restart, a crash, a failover,
// pg_terminate_backend), as opposed to a statement that failed on its own merits.
const CONNECTION_LOST = new Set([
  "CONNECTION_CLOSED",
  "CONNECTION_ENDED",
  "CONNECTION_DESTROYED",
  "CONNECT_TIMEOUT",
  "ECONNREFUSED",
  "ECONNRESET",
  "EPIPE",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "57P01", // admin_shutdown (pg_terminate_backend, a fast shutdown)
  "57P02", // crash_shutdown (another backend crashed, or the postmaster was killed)
  "57P03", // cannot_connect_now (the server is starting up or in recovery)
  "08000",
  "08001",
  "08003",
  "08004",
  "08006",
]);

export function isConnectionLost(e: unknown): boolean {
  const code = (e as { code?: unknown } | null)?.code;
  return typeof code === "string" && CONNECTION_LOST.has(code);
}

/**
 * Runs `run` again while it fails because the database is unreachable, until `deadline` (epoch ms),
 * waiting 0.25 s, 0.5 s, ... up to 2 s between tries; postgres.js opens a fresh connection for each
 * try. Any other error, or the deadline, is thrown. Only for statements that are safe to send twice:
 * when a connection dies, whether its last statement committed is unknown.
 */
export function retryWhileUnreachable<T>(
  run: () => Promise<T>,
  deadline: number,
  onWait?: (e: unknown) => void,
): Promise<T> {
  return retryWhile(isConnectionLost, run, deadline, onWait);
}

/** retryWhileUnreachable's waits, for any failure `transient` recognises (a service restarting). */
export async function retryWhile<T>(
  transient: (e: unknown) => boolean,
  run: () => Promise<T>,
  deadline: number,
  onWait?: (e: unknown) => void,
): Promise<T> {
  for (let delay = 250;; delay = Math.min(2_000, delay * 2)) {
    try {
      return await run();
    } catch (e) {
      if (!transient(e) || Date.now() + delay > deadline) throw e;
      onWait?.(e);
      await new Promise((r) => setTimeout(r, delay));
    }
  }
}
