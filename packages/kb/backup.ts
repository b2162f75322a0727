// Backups of the target's affected rows, written before a replace/overwrite push changes anything,
// and `kb restore`, which puts them back in one transaction.
//
// A backup is gzip'd JSON lines under .backups/ (git-ignored, mode 0600): a header (target identity,
// mode, table plans), then the keys the push inserts (restore deletes them), then the rows it
// updates or deletes, as they were (restore writes them back).
import { once } from "node:events";
import { createReadStream, createWriteStream, mkdirSync, renameSync } from "node:fs";
import { basename, join } from "node:path";
import { createInterface } from "node:readline";
import { createGunzip, createGzip } from "node:zlib";
import { z } from "zod";
import type postgres from "postgres";
import { bumpSequences, deleteRows, keepChunksInOneSegment, lockTables, upsertRows } from "./apply.ts";
import { describeTable } from "./catalog.ts";
import { type KbEnvironment, KbError } from "./env.ts";
import { type TablePlan, keyExpr } from "./tables.ts";

const planSchema = z.object({
  name: z.string(),
  qualified: z.string().regex(/^"[^"]+"\."[^"]+"$/),
  key: z.array(z.string()).min(1),
  columns: z.array(z.string()).min(1),
  overriding: z.boolean(),
  sequenceColumns: z.array(z.string()),
  where: z.string().nullable(),
  isChunks: z.boolean(),
});

const headerSchema = z.object({
  kind: z.literal("kb-backup"),
  version: z.literal(1),
  createdAt: z.string(),
  env: z.string(),
  host: z.string(),
  database: z.string(),
  projectRef: z.string().nullable(),
  label: z.string().nullable(),
  mode: z.string(),
  tables: z.array(planSchema),
});
export type BackupHeader = z.infer<typeof headerSchema>;

const lineSchema = z.union([
  z.object({ table: z.string(), inserted: z.array(z.string()) }),
  z.object({ table: z.string(), rows: z.array(z.record(z.string(), z.unknown())) }),
]);

export class BackupWriter {
  private readonly gz = createGzip();
  private readonly tmp: string;
  readonly file: string;
  private readonly done: Promise<void>;

  constructor(dir: string, header: Omit<BackupHeader, "kind" | "version" | "createdAt">) {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const createdAt = new Date().toISOString();
    this.file = join(dir, `${createdAt.replace(/[:.]/g, "-")}-${header.env}-${header.mode}.jsonl.gz`);
    this.tmp = `${this.file}.partial`;
    const out = createWriteStream(this.tmp, { mode: 0o600 });
    this.done = new Promise((resolve, reject) => {
      out.on("close", () => resolve());
      out.on("error", reject);
      this.gz.on("error", reject);
    });
    this.gz.pipe(out);
    this.line({ kind: "kb-backup", version: 1, createdAt, ...header });
  }

  async line(v: unknown): Promise<void> {
    if (!this.gz.write(`${JSON.stringify(v)}\n`)) await once(this.gz, "drain");
  }

  /** Complete the file: only a finished backup gets its final name. */
  async finish(): Promise<string> {
    this.gz.end();
    await this.done;
    renameSync(this.tmp, this.file);
    return this.file;
  }
}

/** Writes the target's current version of the rows with these keys, 500 at a time. */
export async function backupRows(tx: postgres.TransactionSql, w: BackupWriter, p: TablePlan, keys: string[]): Promise<void> {
  if (!keys.length) return;
  const cursor = tx.unsafe<{ j: Record<string, unknown> }[]>(
    `select to_jsonb(r) as j from ${p.qualified} r where ${keyExpr(p)} = any ($1::text[])`, [keys] as never[],
  ).cursor(500);
  for await (const rows of cursor) await w.line({ table: p.name, rows: rows.map((r) => r.j) });
}

async function* readLines(file: string) {
  const rl = createInterface({ input: createReadStream(file).pipe(createGunzip()), crlfDelay: Infinity });
  for await (const l of rl) if (l.trim()) yield JSON.parse(l) as unknown;
}

export async function readBackupHeader(file: string): Promise<BackupHeader> {
  for await (const first of readLines(file)) {
    const h = headerSchema.safeParse(first);
    if (!h.success) throw new KbError(`${basename(file)} is not a kb backup`);
    return h.data;
  }
  throw new KbError(`${basename(file)} is empty`);
}

export interface RestoreResult {
  deleted: number;
  restored: number;
  perTable: Record<string, { deleted: number; restored: number }>;
}

/**
 * Puts a backup back on `env`, in one transaction: the rows the push inserted are deleted (children
 * first), the rows it updated or deleted are written back as they were (parents first).
 */
export async function restoreBackup(sql: postgres.Sql, env: KbEnvironment, file: string, log: (l: string) => void): Promise<RestoreResult> {
  let header: BackupHeader;
  try {
    header = await readBackupHeader(file);
  } catch (e) {
    if (e instanceof KbError) throw e;
    throw new KbError(`cannot read the backup ${basename(file)}: ${(e as Error).message}`);
  }
  if (header.host !== env.host || header.database !== env.database) {
    throw new KbError(`${basename(file)} is a backup of ${header.host}/${header.database}, not of ${env.name} (${env.host}/${env.database}): refusing to restore it elsewhere`);
  }
  const plans = header.tables as TablePlan[];
  for (const p of plans) {
    const t = await describeTable(sql, p.name);
    const missing = p.columns.filter((c) => !t?.columns.some((x) => x.name === c));
    if (!t || missing.length) throw new KbError(`the target's ${p.name} no longer has ${t ? `columns ${missing.join(", ")}` : "that table"}: cannot restore`);
  }
  const result: RestoreResult = { deleted: 0, restored: 0, perTable: {} };
  const per = (n: string) => (result.perTable[n] ??= { deleted: 0, restored: 0 });
  await sql.begin(async (tx) => {
    await lockTables(tx, plans);
    // Like the push it undoes, a restore is bulk work for the embedding queue.
    await tx.unsafe(`set local embedding_sync.lane = 'bulk'`);
    const inserted = new Map<string, string[]>();
    let deletesDone = false;
    const runDeletes = async () => {
      deletesDone = true;
      for (const p of [...plans].reverse()) {
        const n = await deleteRows(tx, p, inserted.get(p.name) ?? []);
        per(p.name).deleted += n;
        result.deleted += n;
      }
    };
    let first = true;
    for await (const raw of readLines(file)) {
      if (first) {
        first = false;
        continue;
      }
      const line = lineSchema.parse(raw);
      const p = plans.find((x) => x.name === line.table);
      if (!p) throw new KbError(`backup line for unknown table ${line.table}`);
      if ("inserted" in line) {
        inserted.set(p.name, [...(inserted.get(p.name) ?? []), ...line.inserted]);
        continue;
      }
      if (!deletesDone) await runDeletes();
      const r = await upsertRows(tx, p, `jsonb_populate_recordset(null::${p.qualified}, $1::text::jsonb)`, "update", [JSON.stringify(line.rows)]);
      per(p.name).restored += r.inserted + r.updated;
      result.restored += r.inserted + r.updated;
    }
    if (!deletesDone) await runDeletes();
    if (plans.some((p) => p.isChunks)) await keepChunksInOneSegment(tx);
    for (const p of plans) await bumpSequences(tx, p);
    await tx`insert into public.kb_sync_log (from_env, mode, tables, rows_inserted, rows_updated, rows_deleted, per_table, backup_file)
      values (${`backup ${basename(file)}`}, 'restore', ${plans.map((p) => p.name)}, 0, ${result.restored}, ${result.deleted},
              ${tx.json(result.perTable as unknown as postgres.JSONValue)}, ${basename(file)})`;
  });
  log(`restored ${result.restored} rows and removed ${result.deleted} rows from ${basename(file)}, in one transaction`);
  return result;
}
