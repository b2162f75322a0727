// A private PostgreSQL 15 cluster for crash tests: its own data directory under a temp dir, its own
// port, and the settings a hosted project runs with (fsync, synchronous_commit, full_page_writes on),
// so a SIGKILLed postmaster loses exactly what a hosted server would lose, nothing more. The shared
// test bed runs with those settings off for speed, which makes any crash test on it meaningless.
//
// It is killed and restarted by process id only: the postmaster's pid comes from postmaster.pid and
// its children from /proc, never from a process name (other people's servers run on this machine).
import { execFileSync, spawn } from "node:child_process";
import {
  chmodSync,
  chownSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import postgres from "postgres";

const BIN = process.env.PG15_BIN ?? "/usr/lib/postgresql/15/bin";
const PORTS = { from: 55400, to: 55499 };

export interface DurableCluster {
  /** Superuser URL of the cluster's `database`. */
  url: string;
  /** Superuser URL of the `postgres` maintenance database. */
  adminUrl: string;
  database: string;
  port: number;
  dataDir: string;
  /** The postmaster's pid, read from postmaster.pid (null when it is not running). */
  postmasterPid(): number | null;
  /** kill -9 of the postmaster (by pid), then waits until every process of the old server is gone. */
  sigkill(): Promise<{ pid: number; children: number }>;
  /** Starts the server again (crash recovery included); resolves once it accepts connections. */
  start(): Promise<number>;
  /** Clean stop and removal of the data directory. */
  destroy(): Promise<void>;
  /** Settings as the running server reports them (fsync, synchronous_commit, full_page_writes…). */
  settings(): Promise<Record<string, string>>;
}

export interface DurableClusterOptions {
  database?: string; // default "faults"; pg_cron runs its jobs in this database
  port?: number; // default: the first free port in 55400-55499
  log?: (line: string) => void;
  extraConf?: string;
}

function osUser(): { uid: number; gid: number } | null {
  if (process.getuid?.() !== 0) return null; // initdb refuses root; as another user, run as ourselves
  const line = readFileSync("/etc/passwd", "utf8").split("\n").find((l) => l.startsWith("postgres:"));
  if (!line) throw new Error("running as root but there is no `postgres` OS user to own the cluster");
  const [, , uid, gid] = line.split(":");
  return { uid: Number(uid), gid: Number(gid) };
}

function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.once("error", () => resolve(false));
    srv.listen(port, "127.0.0.1", () => srv.close(() => resolve(true)));
  });
}

async function pickPort(): Promise<number> {
  // Start at a random offset so two runs at once rarely race for the same port.
  const span = PORTS.to - PORTS.from + 1;
  const offset = Math.floor(Math.random() * span);
  for (let i = 0; i < span; i++) {
    const p = PORTS.from + ((offset + i) % span);
    if (!existsSync(`/tmp/.s.PGSQL.${p}`) && (await portFree(p))) return p;
  }
  throw new Error(`no free port in ${PORTS.from}-${PORTS.to}`);
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** pids whose parent is `pid` (from /proc). */
function childrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, "utf8");
      // pid (comm) state ppid ...: comm may hold spaces, so read after the last ')'.
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      if (ppid === pid) out.push(Number(d));
    } catch {
      // the process ended while we read
    }
  }
  return out;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    // A zombie still answers signal 0; it is gone for our purposes.
    const state = readFileSync(`/proc/${pid}/stat`, "utf8");
    return state.slice(state.lastIndexOf(")") + 2)[0] !== "Z";
  } catch {
    return false;
  }
}

export async function startDurableCluster(opts: DurableClusterOptions = {}): Promise<DurableCluster> {
  const log = opts.log ?? (() => {});
  const database = opts.database ?? "faults";
  if (!/^[a-z_][a-z0-9_]{0,40}$/.test(database)) throw new Error("database: a plain lower-case identifier");
  const port = opts.port ?? (await pickPort());
  const owner = osUser();
  const root = mkdtempSync(join(tmpdir(), "durable-pg-"));
  const dataDir = join(root, "data");
  const socketDir = join(root, "run");
  mkdirSync(socketDir);
  if (owner) {
    chownSync(root, owner.uid, owner.gid);
    chownSync(socketDir, owner.uid, owner.gid);
  }
  chmodSync(root, 0o700);
  const asOwner = owner ? { uid: owner.uid, gid: owner.gid } : {};
  const env = { ...process.env, LC_ALL: "C.UTF-8", LANG: "C.UTF-8", PGTZ: "UTC" };

  execFileSync(`${BIN}/initdb`, [
    "-D",
    dataDir,
    "-U",
    "postgres",
    "--auth=trust",
    "-E",
    "UTF8",
    "--locale=C.UTF-8",
    "--no-sync",
  ], {
    ...asOwner,
    env,
    stdio: ["ignore", "ignore", "pipe"],
  });
  // Durability as hosted: these three are the defaults, written out so the intent is visible and a
  // copied test-bed configuration cannot switch them off. Local connections only, trust auth: the
  // cluster lives for one run, on a private port, and is deleted afterwards.
  writeFileSync(
    join(dataDir, "postgresql.auto.conf"),
    [
      `port = ${port}`,
      `listen_addresses = '127.0.0.1'`,
      `unix_socket_directories = '${socketDir}'`,
      `fsync = on`,
      `synchronous_commit = on`,
      `full_page_writes = on`,
      `shared_preload_libraries = 'pg_cron'`,
      `cron.database_name = '${database}'`,
      // pg_cron runs jobs in background workers, so it needs no password to connect back.
      `cron.use_background_workers = on`,
      `max_worker_processes = 32`,
      `max_connections = 200`,
      `shared_buffers = '128MB'`,
      `maintenance_work_mem = '256MB'`,
      `log_min_messages = warning`,
      `timezone = 'UTC'`,
      opts.extraConf ?? "",
      "",
    ].join("\n"),
  );
  const logFile = join(root, "server.log");
  const adminUrl = `postgres://postgres:postgres@127.0.0.1:${port}/postgres`;
  const url = `postgres://postgres:postgres@127.0.0.1:${port}/${database}`;

  const readPid = (): number | null => {
    try {
      const pid = Number(readFileSync(join(dataDir, "postmaster.pid"), "utf8").split("\n")[0]);
      return Number.isInteger(pid) && pid > 0 && alive(pid) ? pid : null;
    } catch {
      return null;
    }
  };

  const ready = async (deadlineMs: number) => {
    const end = Date.now() + deadlineMs;
    for (;;) {
      const sql = postgres(adminUrl, { max: 1, connect_timeout: 2, onnotice: () => {} });
      try {
        await sql`select 1`;
        return;
      } catch (e) {
        if (Date.now() > end) throw new Error(`PostgreSQL on ${port} not ready after ${deadlineMs} ms: ${e}`);
      } finally {
        await sql.end({ timeout: 1 }).catch(() => {});
      }
      await sleep(100);
    }
  };

  const startOnce = async (): Promise<number> => {
    const t0 = Date.now();
    // postgres itself (not pg_ctl), detached in its own process group so a Ctrl-C of ours does not reach it.
    const child = spawn(`${BIN}/postgres`, ["-D", dataDir], {
      ...asOwner,
      env,
      detached: true,
      stdio: ["ignore", "ignore", "ignore"],
    });
    child.unref();
    const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
    await Promise.race([
      ready(120_000),
      exited.then((code) => {
        throw new Error(`postgres exited during start-up (code ${code}); see ${logFile}`);
      }),
    ]);
    log(`[pg] up on ${port} (pid ${child.pid}) in ${Date.now() - t0} ms`);
    return child.pid!;
  };
  // After a SIGKILL, a backend of the old server that has not yet noticed its postmaster's death still
  // holds the shared memory, and a new postmaster exits at once ("pre-existing shared memory block is
  // still in use"). That clears by itself within seconds: try again, as an operator's restart would.
  const start = async (): Promise<number> => {
    for (let attempt = 1;; attempt++) {
      try {
        return await startOnce();
      } catch (e) {
        if (attempt >= 10 || !/exited during start-up/.test(String(e))) throw e;
        log(`[pg] ${String(e)}; trying again`);
        await sleep(1_000);
      }
    }
  };

  writeFileSync(join(dataDir, "pg_hba.conf"), "local all all trust\nhost all all 127.0.0.1/32 trust\n");
  if (owner) chownSync(join(dataDir, "pg_hba.conf"), owner.uid, owner.gid);
  await start();
  const admin = postgres(adminUrl, { max: 1, onnotice: () => {} });
  try {
    await admin.unsafe(`alter user postgres password 'postgres'`);
    if (database !== "postgres") await admin.unsafe(`create database ${database}`);
  } finally {
    await admin.end();
  }

  const cluster: DurableCluster = {
    url,
    adminUrl,
    database,
    port,
    dataDir,
    postmasterPid: readPid,
    async sigkill() {
      const pid = readPid();
      if (!pid) throw new Error("the postmaster is not running");
      const children = childrenOf(pid);
      process.kill(pid, "SIGKILL");
      // Backends notice the postmaster's death and exit; until the last one has, its shared memory
      // is still attached and a new postmaster refuses to start. A backend busy in a long statement
      // notices late, so it gets a SIGKILL of its own after a short grace (by pid, as recorded).
      const end = Date.now() + 5_000;
      while ([pid, ...children].some(alive)) {
        if (Date.now() > end) { for (const c of children) if (alive(c)) process.kill(c, "SIGKILL"); }
        if (Date.now() > end + 15_000) {
          throw new Error(`processes of the killed server still alive: ${children.filter(alive)}`);
        }
        await sleep(50);
      }
      return { pid, children: children.length };
    },
    start,
    async settings() {
      const sql = postgres(adminUrl, { max: 1, onnotice: () => {} });
      try {
        const rows = await sql<{ name: string; setting: string }[]>`
          select name, setting from pg_settings
          where name in ('fsync', 'synchronous_commit', 'full_page_writes', 'shared_preload_libraries', 'port', 'data_directory')`;
        return Object.fromEntries(rows.map((r) => [r.name, r.setting]));
      } finally {
        await sql.end();
      }
    },
    async destroy() {
      const pid = readPid();
      if (pid) {
        process.kill(pid, "SIGINT"); // fast shutdown
        const end = Date.now() + 20_000;
        while (alive(pid) && Date.now() < end) await sleep(100);
        if (alive(pid)) {
          const kids = childrenOf(pid);
          process.kill(pid, "SIGKILL");
          for (const c of kids) if (alive(c)) process.kill(c, "SIGKILL");
        }
      }
      rmSync(root, { recursive: true, force: true });
    },
  };
  return cluster;
}
