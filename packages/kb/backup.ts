// Backups of the target's affected rows, written before a replace/overwrite push changes anything,
// and `kb restore`, which puts them back in one transaction.
//
// A backup is gzip'd JSON lines under .backups/ (git-ignored, mode 0600): a header (target identity,
// mode, tables), then the keys the push inserts (restore deletes them), then the rows it updates or
// deletes, as they were (restore writes them back), then a seal: the push's kb_sync_log id and an
// HMAC of everything before it under .backups/.kb-backup-key (mode 0600). The file is written under
// a temporary name and gets its final one only once the push has committed.
import { once } from "node:events";
import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import {
  closeSync,
  createReadStream,
  createWriteStream,
  existsSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  rmSync,
  writeSync,
} from "node:fs";
import { basename, join } from "node:path";
import { createInterface } from "node:readline";
import { createGunzip, createGzip } from "node:zlib";
import { z } from "zod";
import type postgres from "postgres";
import { bumpSequences, deleteRows, keepChunksInOneSegment, lockTables, upsertRows } from "./apply.ts";
import { normalizeTableName } from "./catalog.ts";
import { type KbEnvironment, KbError } from "./env.ts";
import { keyExpr, selectTables, type TablePlan } from "./tables.ts";

// A backup names its tables as the push saw them; restore rebuilds each plan from the live catalog
// by name and refuses the file if any of these differ. Nothing here is ever spliced into SQL.
const planSchema = z.object({
  name: z.string(),
  qualified: z.string(),
  key: z.array(z.string()).min(1),
  columns: z.array(z.string()).min(1),
});

const headerSchema = z.object({
  kind: z.literal("kb-backup"),
  version: z.literal(2),
  createdAt: z.string(),
  env: z.string(),
  host: z.string(),
  database: z.string(),
  projectRef: z.string().nullable(),
  label: z.string().nullable(),
  mode: z.enum(["replace", "overwrite"]),
  tables: z.array(planSchema).min(1),
});
export type BackupHeader = z.infer<typeof headerSchema>;

const lineSchema = z.union([
  z.object({ table: z.string(), inserted: z.array(z.string()) }),
  z.object({ table: z.string(), rows: z.array(z.record(z.string(), z.unknown())) }),
]);

// The last line: the kb_sync_log id of the push the backup belongs to, and the HMAC of every line
// before it plus that id, under the key in the backup directory.
const sealSchema = z.object({
  kind: z.literal("kb-backup-seal"),
  logId: z.string().regex(/^\d{1,19}$/),
  hmac: z.string().regex(/^[0-9a-f]{64}$/),
});

const KEY_FILE = ".kb-backup-key";

/** The backup directory's HMAC key (32 random bytes, mode 0600), created on first use. */
function backupKey(dir: string, create: boolean): Buffer | null {
  const file = join(dir, KEY_FILE);
  if (!existsSync(file)) {
    if (!create) return null;
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    try {
      const fd = openSync(file, "wx", 0o600);
      writeSync(fd, randomBytes(32).toString("hex"));
      closeSync(fd);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
    }
  }
  return Buffer.from(readFileSync(file, "utf8").trim(), "hex");
}

export class BackupWriter {
  private readonly gz = createGzip();
  private readonly tmp: string;
  private readonly mac: ReturnType<typeof createHmac>;
  readonly file: string;
  private readonly done: Promise<void>;
  private closed = false;

  constructor(
    dir: string,
    header: Omit<BackupHeader, "kind" | "version" | "createdAt" | "tables" | "mode"> & {
      mode: string;
      tables: TablePlan[];
    },
  ) {
    this.mac = createHmac("sha256", backupKey(dir, true)!);
    const createdAt = new Date().toISOString();
    this.file = join(dir, `${createdAt.replace(/[:.]/g, "-")}-${header.env}-${header.mode}.jsonl.gz`);
    this.tmp = `${this.file}.partial`;
    const out = createWriteStream(this.tmp, { mode: 0o600 });
    this.done = new Promise((resolve, reject) => {
      out.on("close", () => resolve());
      out.on("error", reject);
      this.gz.on("error", reject);
    });
    this.done.catch(() => {});
    this.gz.pipe(out);
    const tables = header.tables.map((t) => ({ name: t.name, qualified: t.qualified, key: t.key, columns: t.columns }));
    void this.line({ kind: "kb-backup", version: 2, createdAt, ...header, tables });
  }

  async line(v: unknown): Promise<void> {
    const l = `${JSON.stringify(v)}\n`;
    this.mac.update(l);
    if (!this.gz.write(l)) await once(this.gz, "drain");
  }

  /** Binds the backup to its push (its kb_sync_log id) and completes the file, still under its temporary name. */
  async seal(logId: string): Promise<void> {
    this.mac.update(`seal ${logId}\n`);
    this.gz.write(`${JSON.stringify({ kind: "kb-backup-seal", logId, hmac: this.mac.digest("hex") })}\n`);
    this.gz.end();
    this.closed = true;
    await this.done;
  }

  /** After the push committed: the backup gets its final name. */
  keep(): string {
    renameSync(this.tmp, this.file);
    return this.file;
  }

  /** The push did not commit: the backup is deleted. Returns its would-be name. */
  discard(): string {
    if (!this.closed) {
      this.closed = true;
      this.gz.destroy();
    }
    rmSync(this.tmp, { force: true });
    return this.file;
  }
}

/** Writes the target's current version of the rows with these keys, 500 at a time. */
export async function backupRows(
  tx: postgres.TransactionSql,
  w: BackupWriter,
  p: TablePlan,
  keys: string[],
): Promise<void> {
  if (!keys.length) return;
  const cursor = tx.unsafe<{ j: Record<string, unknown> }[]>(
    `select to_jsonb(r) as j from ${p.qualified} r where ${keyExpr(p)} = any ($1::text[])`,
    [keys] as never[],
  ).cursor(500);
  for await (const rows of cursor) await w.line({ table: p.name, rows: rows.map((r) => r.j) });
}

async function* readLines(file: string) {
  const rl = createInterface({ input: createReadStream(file).pipe(createGunzip()), crlfDelay: Infinity });
  for await (const l of rl) if (l.trim()) yield l;
}

/** Reads a whole backup, checks its seal, and returns its parts; any damage is a clear refusal (exit 2). */
async function readBackup(
  file: string,
  dir: string,
): Promise<{ header: BackupHeader; logId: string; lines: z.infer<typeof lineSchema>[] }> {
  const name = basename(file);
  const key = backupKey(dir, false);
  if (!key) {
    throw new KbError(
      `${name}: no backup key in the backup directory, so this file cannot be checked: kb restores only backups it wrote here`,
    );
  }
  const mac = createHmac("sha256", key);
  const raw: string[] = [];
  try {
    for await (const l of readLines(file)) raw.push(l);
  } catch (e) {
    throw new KbError(`${name} is not a readable kb backup (${(e as Error).message}); nothing was changed`);
  }
  const parse = (l: string) => {
    try {
      return JSON.parse(l) as unknown;
    } catch {
      return null;
    }
  };
  const header = headerSchema.safeParse(parse(raw[0] ?? ""));
  if (!header.success) throw new KbError(`${name} is not a kb backup (no valid header); nothing was changed`);
  const seal = sealSchema.safeParse(parse(raw[raw.length - 1] ?? ""));
  if (raw.length < 2 || !seal.success) {
    throw new KbError(`${name} has no seal: it is incomplete or not a backup of a committed push; nothing was changed`);
  }
  for (const l of raw.slice(0, -1)) mac.update(`${l}\n`);
  mac.update(`seal ${seal.data.logId}\n`);
  const want = Buffer.from(seal.data.hmac, "hex");
  const got = mac.digest();
  if (want.length !== got.length || !timingSafeEqual(want, got)) {
    throw new KbError(
      `${name} does not match its seal: it was changed after kb wrote it, or was written with another backup key; nothing was changed`,
    );
  }
  const lines = raw.slice(1, -1).map((l) => {
    const r = lineSchema.safeParse(parse(l));
    if (!r.success) throw new KbError(`${name} has a malformed line; nothing was changed`);
    return r.data;
  });
  return { header: header.data, logId: seal.data.logId, lines };
}

export interface RestoreResult {
  deleted: number;
  restored: number;
  perTable: Record<string, { deleted: number; restored: number }>;
}

/**
 * Puts a backup back on `env`, in one transaction: the rows the push inserted are deleted (children
 * first), the rows it updated or deleted are written back as they were (parents first).
 *
 * It acts only on what kb wrote: the file's seal must verify under the backup directory's key, the
 * push it names must be recorded in this database's kb_sync_log with this file, and every table is
 * planned from the live catalog by name (a backup whose schema, table, key or columns differ from
 * it is refused; the platform's schemas are never touched). Later pushes need `yes`.
 */
export async function restoreBackup(
  sql: postgres.Sql,
  env: KbEnvironment,
  file: string,
  o: { dir: string; yes: boolean; log: (l: string) => void; header?: (h: BackupHeader) => void },
): Promise<RestoreResult> {
  const name = basename(file);
  const { header, logId, lines } = await readBackup(file, o.dir);
  o.header?.(header);
  if (header.host !== env.host || header.database !== env.database) {
    throw new KbError(
      `${name} is a backup of ${header.host}/${header.database}, not of ${env.name} (${env.host}/${env.database}): refusing to restore it elsewhere`,
    );
  }
  for (const t of header.tables) normalizeTableName(t.name);
  const [pushRow] = await sql<
    { mode: string; backup_file: string | null }[]
  >`select mode, backup_file from public.kb_sync_log where id = ${logId}`;
  if (!pushRow || pushRow.backup_file !== name || pushRow.mode !== header.mode) {
    throw new KbError(
      `${name} belongs to push #${logId}, which kb_sync_log on ${env.name} does not record with this file: refusing to restore it`,
    );
  }
  const later = await sql<{ id: string; pushed_at: Date; mode: string; from_env: string }[]>`
    select id::text, pushed_at, mode, from_env from public.kb_sync_log where id > ${logId} order by id`;
  if (later.length) {
    o.log(
      `warning: ${later.length} later push${later.length > 1 ? "es" : ""} changed ${env.name} since this backup (` +
        later.slice(0, 5).map((l) => `#${l.id} ${l.mode} from ${l.from_env} at ${l.pushed_at.toISOString()}`).join(
          ", ",
        ) +
        `${
          later.length > 5 ? ", …" : ""
        }); restoring puts back rows as they were before push #${logId} and undoes those rows' later changes`,
    );
    if (!o.yes) throw new KbError(`later pushes exist: add --yes to restore ${name} anyway`);
  }

  // The plans come from the live catalog, by name; the file only says which tables, and must agree.
  const live = await selectTables(sql, sql, { tables: header.tables.map((t) => t.name) });
  const plans: TablePlan[] = [];
  for (const p of live) {
    const h = header.tables.find((t) => t.name === p.name);
    if (!h) continue;
    const diffs = [
      h.qualified !== p.qualified && "schema or table",
      JSON.stringify(h.key) !== JSON.stringify(p.key) && "key",
      JSON.stringify(h.columns) !== JSON.stringify(p.columns) && "columns",
    ].filter(Boolean);
    if (diffs.length) {
      throw new KbError(
        `${name}: table ${p.name} differs from the live ${p.qualified} in its ${diffs.join(", ")}: refusing to restore`,
      );
    }
    plans.push(p);
  }
  for (const l of lines) {
    if (!plans.some((p) => p.name === l.table)) {
      throw new KbError(`${name} has rows for ${l.table}, which its header does not list`);
    }
  }

  // Written back as they were, with the target's own ids: a row matched by natural key keeps its
  // identity value (its children's foreign keys hold it), and references are already the target's.
  const asStored = (p: TablePlan): TablePlan =>
    p.surrogate ? { ...p, columns: [p.surrogate, ...p.columns], overriding: true, refs: [] } : { ...p, refs: [] };
  const result: RestoreResult = { deleted: 0, restored: 0, perTable: {} };
  const per = (n: string) => (result.perTable[n] ??= { deleted: 0, restored: 0 });
  await sql.begin(async (tx) => {
    await lockTables(tx, plans);
    // Like the push it undoes, a restore is bulk work for the embedding queue.
    await tx.unsafe(`set local embedding_sync.lane = 'bulk'`);
    const inserted = new Map<string, string[]>();
    for (const l of lines) {
      if ("inserted" in l) inserted.set(l.table, [...(inserted.get(l.table) ?? []), ...l.inserted]);
    }
    for (const p of [...plans].reverse()) {
      const n = await deleteRows(tx, p, inserted.get(p.name) ?? []);
      per(p.name).deleted += n;
      result.deleted += n;
    }
    for (const p of plans) {
      for (const l of lines) {
        if (!("rows" in l) || l.table !== p.name) continue;
        const r = await upsertRows(
          tx,
          asStored(p),
          `jsonb_populate_recordset(null::${p.qualified}, $1::text::jsonb)`,
          "update",
          [JSON.stringify(l.rows)],
        );
        per(p.name).restored += r.inserted + r.updated;
        result.restored += r.inserted + r.updated;
      }
    }
    if (plans.some((p) => p.isChunks)) await keepChunksInOneSegment(tx);
    for (const p of plans) await bumpSequences(tx, p);
    await tx`insert into public.kb_sync_log (from_env, mode, tables, rows_inserted, rows_updated, rows_deleted, per_table, backup_file)
      values (${`backup ${name}`}, 'restore', ${plans.map((p) => p.name)}, 0, ${result.restored}, ${result.deleted},
              ${tx.json(result.perTable as unknown as postgres.JSONValue)}, ${name})`;
  });
  o.log(`restored ${result.restored} rows and removed ${result.deleted} rows from ${name}, in one transaction`);
  return result;
}
