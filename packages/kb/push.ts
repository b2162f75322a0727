// kb push: makes the target's selected tables match the source, in ONE transaction on the target.
//
// 1. plan: select the tables (FK order), check columns and credentials, compare row hashes, decide
//    whether chunks travel (same model and dimension only), refuse an empty source;
// 2. print the target's identity and the row counts it is about to change (--dry-run stops here);
// 3. in one transaction on the target: lock the tables against writers, compare again (the truth),
//    back up the rows it will change (replace/overwrite), stream the needed source rows with COPY
//    into temp tables, upsert parents first, delete children first, record kb_sync_log, commit.
// The source is read in one REPEATABLE READ, READ ONLY transaction, so the plan and the copied rows
// come from the same snapshot. Any failure rolls everything back: the target is exactly as before.
import { basename } from "node:path";
import { Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import type postgres from "postgres";
import { bumpSequences, deleteRows, keepChunksInOneSegment, lockTables, upsertRows } from "./apply.ts";
import { backupRows, BackupWriter } from "./backup.ts";
import {
  checkMigrations,
  checkMigrationVersions,
  connectKb,
  environmentLabel,
  quoteLiteral,
  type Sql,
} from "./catalog.ts";
import { findCredentials, refuseCredentials } from "./credentials.ts";
import { compare, rowHashes, type TableDiff } from "./diff.ts";
import { type KbEnvironment, KbError } from "./env.ts";
import { fmtInt, Progress } from "./progress.ts";
import {
  columnList,
  keyExpr,
  portableSelectList,
  resolvedRows,
  selectTables,
  stageSelectList,
  type TablePlan,
  unresolvedRefs,
  whereClause,
} from "./tables.ts";

export type PushMode = "replace" | "upsert" | "overwrite";

/**
 * What a push is doing right now, for an interrupted run (SIGINT/SIGTERM) to say what it leaves:
 * before the commit is sent, the target is unchanged (closing the connection rolls it back) and the
 * backup being written is discarded.
 */
export const pushInFlight: { backup: BackupWriter | null; committing: boolean } = { backup: null, committing: false };

export interface PushOptions {
  from: KbEnvironment;
  to: KbEnvironment;
  mode: PushMode;
  tables?: string[];
  dryRun?: boolean;
  yes?: boolean;
  allowEmpty?: boolean;
  allowCredentialColumns?: string[];
  /** Register on the target the sources whose chunks travel but which the target does not sync. */
  registerMissingSources?: boolean;
  /** The model the target embeds with, when its chunks cannot tell (it has none yet). */
  targetModel?: string;
  backupDir: string;
  log: (line: string) => void;
  progress: (line: string) => void;
}

export interface TableCounts {
  inserted: number;
  updated: number;
  deleted: number;
}

export interface PushResult {
  dryRun: boolean;
  tables: string[];
  chunksCopied: boolean;
  chunksNote: string;
  planned: Record<string, TableCounts & { targetRows: number }>;
  applied: Record<string, TableCounts>;
  totals: TableCounts;
  backupFile: string | null;
  logId: string | null;
}

/** What a mode writes, from a diff: replace everything, overwrite without deletes, upsert only the missing. */
export function plannedChanges(
  mode: PushMode,
  d: TableDiff,
): { copy: string[]; inserted: number; updated: number; deleted: string[] } {
  return {
    copy: mode === "upsert" ? d.onlySource : [...d.onlySource, ...d.changed],
    inserted: d.onlySource.length,
    updated: mode === "upsert" ? 0 : d.changed.length,
    deleted: mode === "replace" ? d.onlyTarget : [],
  };
}

export async function targetIdentity(
  tgt: Sql,
  env: KbEnvironment,
  role = "target",
): Promise<{ label: string | null; line: string }> {
  const label = await environmentLabel(tgt);
  const line =
    `${role} "${env.name}": host ${env.host}, database ${env.database}, project ref ${env.projectRef ?? "(none)"}, ` +
    `environment label ${label ? `"${label}"` : "(no label)"}${env.isLocal ? " [local]" : ""}`;
  return { label, line };
}

/** Chunks travel only when the target embeds with the same model and dimension as the source's chunks. */
async function chunkCompatibility(
  src: Sql,
  tgt: Sql,
  chunks: TablePlan,
  targetModel?: string,
): Promise<{ copy: boolean; note: string }> {
  const [[sd], [td]] = await Promise.all([
    src<{ d: number }[]>`select public.embedding_dimensions() as d`,
    tgt<{ d: number }[]>`select public.embedding_dimensions() as d`,
  ]);
  if (sd.d !== td.d) {
    return {
      copy: false,
      note:
        `chunks not copied: dimension ${sd.d} in the source, ${td.d} in the target; the target embeds the rows itself`,
    };
  }
  const srcModels = (await src.unsafe<{ model: string }[]>(
    `select distinct model from public.documentation_embeddings r ${whereClause(chunks)} order by 1`,
  )).map((r) => r.model);
  let tm = targetModel ?? null;
  if (!tm) {
    const tgtModels =
      (await tgt<{ model: string }[]>`select distinct model from public.documentation_embeddings order by 1`).map((r) =>
        r.model
      );
    if (tgtModels.length > 1) {
      return {
        copy: false,
        note: `chunks not copied: the target holds chunks of several models (${
          tgtModels.join(", ")
        }); give --target-model`,
      };
    }
    tm = tgtModels[0] ?? null;
    if (!tm) {
      if (srcModels.length > 1) {
        return {
          copy: false,
          note: `chunks not copied: the source holds several models and the target none; give --target-model`,
        };
      }
      return {
        copy: true,
        note: srcModels.length
          ? `chunks copied (${
            srcModels[0]
          }, ${sd.d}-d): the target has no chunks yet, so it is taken to embed with the same model (--target-model otherwise)`
          : "no chunks in the source",
      };
    }
  }
  const other = srcModels.filter((m) => m !== tm);
  if (other.length) {
    return {
      copy: false,
      note: `chunks not copied: source model ${
        other.join(", ")
      } differs from the target's ${tm}; the target embeds the rows itself`,
    };
  }
  return {
    copy: true,
    note: `chunks copied with their content hash (${tm}, ${sd.d}-d): the target's queue will find them unchanged`,
  };
}

export async function push(src: Sql, tgt: Sql, o: PushOptions): Promise<PushResult> {
  if (!o.dryRun && !o.to.isLocal && !o.yes) {
    throw new KbError(`target "${o.to.name}" (${o.to.host}) is not local: check it with --dry-run, then add --yes`);
  }
  await checkMigrations(src, `source "${o.from.name}"`);
  await checkMigrations(tgt, `target "${o.to.name}"`);
  await checkMigrationVersions(src, tgt, o.to.name);
  let plans = await selectTables(src, tgt, { tables: o.tables });
  let chunksCopied = false;
  let chunksNote = "chunks not selected";
  const chunks = plans.find((p) => p.isChunks);
  if (chunks) {
    const c = await chunkCompatibility(src, tgt, chunks, o.targetModel);
    chunksCopied = c.copy;
    chunksNote = c.note;
    if (!c.copy) plans = plans.filter((p) => !p.isChunks);
  }
  const toRegister = chunksCopied ? await unsyncedSources(src, tgt, plans, !!o.registerMissingSources) : [];
  const { label: targetLabel, line: identity } = await targetIdentity(tgt, o.to);
  const sourceLabel = await environmentLabel(src);

  const s = await src.reserve();
  try {
    await s`begin isolation level repeatable read, read only`;
    // Each COPY runs on its own connection in this same snapshot (see copyRows).
    const [{ snapshot }] = await s<{ snapshot: string }[]>`select pg_export_snapshot() as snapshot`;
    refuseCredentials(await findCredentials(s, plans, o.allowCredentialColumns ?? []));
    const sourceHashes = new Map<string, Map<string, string>>();
    const planned: PushResult["planned"] = {};
    for (const p of plans) {
      const t0 = Date.now();
      const [sh, th] = await Promise.all([rowHashes(s, p), rowHashes(tgt, p)]);
      o.progress(
        `compared ${p.name}: ${fmtInt(sh.size)} source rows, ${fmtInt(th.size)} target rows, ${
          ((Date.now() - t0) / 1000).toFixed(1)
        } s`,
      );
      sourceHashes.set(p.name, sh);
      const c = plannedChanges(o.mode, compare(p.name, sh, th));
      planned[p.name] = { targetRows: th.size, inserted: c.inserted, updated: c.updated, deleted: c.deleted.length };
    }
    refuseEmptySource(o, plans, sourceHashes, planned);

    o.log(identity);
    o.log(
      `source "${o.from.name}" (${sourceLabel ? `label "${sourceLabel}"` : "no label"}), mode ${o.mode}; ${chunksNote}`,
    );
    o.log(formatCounts(plans, planned));
    const plannedTotal = sum(Object.values(planned));
    if (o.dryRun) {
      o.log("dry run: nothing was changed");
      return {
        dryRun: true,
        tables: plans.map((p) => p.name),
        chunksCopied,
        chunksNote,
        planned,
        applied: {},
        totals: plannedTotal,
        backupFile: null,
        logId: null,
      };
    }

    const applied: Record<string, TableCounts> = {};
    let backup: BackupWriter | null = null;
    let logId: string | null = null;
    try {
      await tgt.begin(async (tx) => {
        o.progress(`locking ${plans.map((p) => p.name).join(", ")} on the target against writers`);
        await lockTables(tx, plans);
        // A promotion is bulk work: its rows' embedding jobs must not delay the target's live edits.
        await tx.unsafe(`set local embedding_sync.lane = 'bulk'`);
        for (const r of toRegister) {
          o.log(
            `registering ${r.source_table} as an embedding source on the target (--register-missing-sources), as the source has it`,
          );
          await tx`select public.register_embedding_source(${r.source_table}::regclass, content_columns => ${r.content_columns}::text[],
            content_function => ${r.content_function}::regprocedure, publish_filter => ${r.publish_filter}, chunk_tokens => ${r.chunk_tokens},
            chunk_overlap_tokens => ${r.chunk_overlap_tokens}, metadata_columns => ${r.metadata_columns}::text[])`;
        }
        o.progress("comparing again under the lock");
        // The plan above was made before the lock: this comparison, under it, is what is applied.
        const work = [] as {
          p: TablePlan;
          copy: string[];
          deleted: string[];
          sourceRows: number;
          targetKeys: Set<string>;
        }[];
        for (const p of plans) {
          const sh = sourceHashes.get(p.name)!;
          const th = await rowHashes(tx, p);
          const c = plannedChanges(o.mode, compare(p.name, sh, th));
          work.push({ p, copy: c.copy, deleted: c.deleted, sourceRows: sh.size, targetKeys: new Set(th.keys()) });
        }
        // upsert never changes or deletes a target row, and a push that changes nothing has nothing to keep.
        if (o.mode !== "upsert" && work.some((w) => w.copy.length || w.deleted.length)) {
          backup = new BackupWriter(o.backupDir, {
            env: o.to.name,
            host: o.to.host,
            database: o.to.database,
            projectRef: o.to.projectRef,
            label: targetLabel,
            mode: o.mode,
            tables: plans,
          });
          pushInFlight.backup = backup;
          // Restore deletes what the push inserts, and writes back what it updates or deletes.
          for (const w of work) {
            await backup.line({
              table: w.p.name,
              inserted: w.copy.filter((k) => !w.targetKeys.has(k)),
            });
          }
          for (const w of work) {
            await backupRows(tx, backup, w.p, [...w.copy.filter((k) => w.targetKeys.has(k)), ...w.deleted]);
          }
        }

        let i = 0;
        for (const w of work) {
          applied[w.p.name] = { inserted: 0, updated: 0, deleted: 0 };
          if (!w.copy.length) continue;
          if (!w.p.refs.length && w.copy.every((k) => !w.targetKeys.has(k))) {
            // Only new rows and no reference to rewrite: COPY straight into the table, as
            // pg_dump | psql would (row triggers and constraints fire on COPY too); no staging table.
            await copyRows(
              o.from.dbUrl,
              snapshot,
              tx,
              w.p,
              w.copy,
              w.copy.length === w.sourceRows,
              w.p.qualified,
              o.progress,
            );
            applied[w.p.name].inserted = w.copy.length;
          } else {
            const stage = `kb_stage_${i++}`;
            await tx.unsafe(
              `create temp table ${stage} on commit drop as select ${
                stageSelectList(w.p)
              } from ${w.p.qualified} with no data`,
            );
            await copyRows(
              o.from.dbUrl,
              snapshot,
              tx,
              w.p,
              w.copy,
              w.copy.length === w.sourceRows,
              `pg_temp.${stage}`,
              o.progress,
            );
            if (w.p.refs.length) await refuseUnresolved(tx, w.p, `pg_temp.${stage}`);
            const r = await upsertRows(
              tx,
              w.p,
              resolvedRows(w.p, `pg_temp.${stage}`),
              o.mode === "upsert" ? "nothing" : "update",
            );
            applied[w.p.name].inserted = r.inserted;
            applied[w.p.name].updated = r.updated;
          }
          await bumpSequences(tx, w.p);
        }
        for (const w of [...work].reverse()) applied[w.p.name].deleted = await deleteRows(tx, w.p, w.deleted);
        if (work.some((w) => w.p.isChunks && w.copy.length)) await keepChunksInOneSegment(tx);
        o.progress("recording the push in kb_sync_log and committing");

        const t = sum(Object.values(applied));
        const [row] = await tx<{ id: string }[]>`
          insert into public.kb_sync_log (from_env, mode, tables, rows_inserted, rows_updated, rows_deleted, per_table, chunks_copied, backup_file)
          values (${sourceLabel ?? o.from.name}, ${o.mode}, ${
          plans.map((p) => p.name)
        }, ${t.inserted}, ${t.updated}, ${t.deleted},
                  ${tx.json(applied as unknown as postgres.JSONValue)}, ${chunksCopied}, ${
          backup ? basename(backup.file) : null
        })
          returning id::text`;
        logId = row.id;
        // The backup names the push it belongs to, and is sealed before the commit is sent.
        if (backup) await backup.seal(row.id);
        pushInFlight.committing = true;
      });
    } catch (e) {
      pushInFlight.committing = false;
      const discarded = backup ? (backup as BackupWriter).discard() : null;
      if (e instanceof KbError) throw e;
      const msg = e instanceof Error ? e.message : String(e);
      throw new KbError(
        `push failed and was rolled back, the target is unchanged: ${msg}${
          discarded ? ` (its backup was discarded: ${discarded})` : ""
        }`,
        1,
      );
    }
    // Committed: only now does the backup get its final name (a restore needs a committed push).
    const backupFile = backup ? (backup as BackupWriter).keep() : null;
    pushInFlight.backup = null;
    pushInFlight.committing = false;
    if (backupFile) o.log(`backup of the affected target rows: ${backupFile}`);
    const totals = sum(Object.values(applied));
    o.log(
      `pushed in one transaction: ${fmtInt(totals.inserted)} inserted, ${fmtInt(totals.updated)} updated, ${
        fmtInt(totals.deleted)
      } deleted (kb_sync_log #${logId})`,
    );
    return {
      dryRun: false,
      tables: plans.map((p) => p.name),
      chunksCopied,
      chunksNote,
      planned,
      applied,
      totals,
      backupFile,
      logId,
    };
  } finally {
    await s`rollback`.catch(() => {});
    s.release();
  }
}

/** A staged reference naming a row the target does not have would be written as null or fail late: refuse, naming it. */
async function refuseUnresolved(tx: postgres.TransactionSql, p: TablePlan, stage: string): Promise<void> {
  const bad = await tx.unsafe<{ col: string; k: string }[]>(unresolvedRefs(p, stage));
  if (bad.length) {
    throw new KbError(
      `${p.name}: ${bad.map((b) => `${b.col} = ${b.k}`).join(", ")} name rows the target does not have ` +
        `(matched by natural key); push their table too. Nothing was written.`,
    );
  }
}

interface SourceSettings {
  source_table: string;
  content_columns: string[] | null;
  content_function: string | null;
  publish_filter: string | null;
  chunk_tokens: number;
  chunk_overlap_tokens: number;
  metadata_columns: string[] | null;
  registered: boolean;
}

/**
 * Chunks travel only for sources the target syncs the same way: registered there, with the same
 * content, filter and chunking (the model is checked by chunkCompatibility). A source the target
 * does not register is refused, or returned for registration with --register-missing-sources; one
 * registered differently is refused.
 */
async function unsyncedSources(src: Sql, tgt: Sql, plans: TablePlan[], register: boolean): Promise<SourceSettings[]> {
  const names = plans.filter((p) => !p.isChunks).map((p) => p.name);
  const read = (sql: Sql) =>
    sql<SourceSettings[]>`
    select source_table, content_columns, content_function::text as content_function, publish_filter, chunk_tokens,
           chunk_overlap_tokens, metadata_columns, registered
    from public.embedding_sources where source_table = any (${names}) order by source_table`;
  const [ss, ts] = await Promise.all([read(src), read(tgt)]);
  const target = new Map(ts.map((t) => [t.source_table, t]));
  const missing: SourceSettings[] = [];
  const differ: string[] = [];
  const same = (a: unknown, b: unknown) => JSON.stringify(a ?? null) === JSON.stringify(b ?? null);
  for (const s of ss) {
    const t = target.get(s.source_table);
    if (!t || !t.registered) {
      missing.push(s);
      continue;
    }
    const fields =
      (["content_columns", "content_function", "publish_filter", "chunk_tokens", "chunk_overlap_tokens"] as const)
        .filter((f) => !same(s[f], t[f]));
    if (fields.length) {
      differ.push(
        `${s.source_table} (${
          fields.map((f) => `${f}: ${JSON.stringify(s[f])} in the source, ${JSON.stringify(t[f])} in the target`).join(
            "; ",
          )
        })`,
      );
    }
  }
  const lines: string[] = [];
  if (differ.length) {
    lines.push(
      `the target syncs ${
        differ.join(", ")
      } differently: its chunks would not match what its own worker writes; register them alike on both sides`,
    );
  }
  if (missing.length && !register) {
    lines.push(
      `the target does not sync ${
        missing.map((m) => m.source_table).join(", ")
      } (not a registered embedding source there): ` +
        `its chunks would be searchable with nothing keeping them current. Register it there, or add --register-missing-sources`,
    );
  }
  if (lines.length) throw new KbError(`refusing to copy chunks: ${lines.join("; ")}. Nothing was written.`);
  return missing;
}

function refuseEmptySource(
  o: PushOptions,
  plans: TablePlan[],
  sh: Map<string, Map<string, string>>,
  planned: PushResult["planned"],
) {
  if (o.allowEmpty) return;
  const data = plans.filter((p) => !p.isChunks);
  if (data.length && data.every((p) => sh.get(p.name)!.size === 0)) {
    throw new KbError(
      `source "${o.from.name}" has no rows in ${
        data.map((p) => p.name).join(", ")
      }: refusing to push an empty source (is it the right database?); --allow-empty pushes it anyway`,
    );
  }
  if (o.mode === "replace") {
    const emptied = data.filter((p) => sh.get(p.name)!.size === 0 && planned[p.name].targetRows > 0);
    if (emptied.length) {
      throw new KbError(
        `source "${o.from.name}" has no rows in ${
          emptied.map((p) => p.name).join(", ")
        }, so replace would empty them on the target: refusing; --allow-empty pushes it anyway`,
      );
    }
  }
}

/**
 * Streams the source rows with these keys into `into` on the target: a stage table, or the table
 * itself when every row is new (COPY both ways).
 *
 * The source side runs on a connection of its own, in the plan's exported snapshot, and that
 * connection is thrown away afterwards: postgres.js pauses the socket when a COPY stream's buffer is
 * full, and when that happens on the last chunk nothing resumes it, so the connection cannot run
 * another query (seen as a hang on the next statement).
 */
async function copyRows(
  srcUrl: string,
  snapshot: string,
  tx: postgres.TransactionSql,
  p: TablePlan,
  keys: string[],
  all: boolean,
  into: string,
  progress: (l: string) => void,
): Promise<void> {
  const filter = all ? undefined : `${keyExpr(p)} = any (${keyArray(keys)})`;
  const c = connectKb(srcUrl, 1);
  try {
    await c`begin isolation level repeatable read, read only`;
    await c`set transaction snapshot ${c.unsafe(quoteLiteral(snapshot))}`;
    const readable = await c.unsafe(
      `copy (select ${portableSelectList(p)} from ${p.qualified} r ${whereClause(p, filter)}) to stdout`,
    ).readable();
    const copied = await pipeInto(readable, tx, p, keys.length, into, progress);
    if (copied !== keys.length) {
      throw new Error(
        `${p.name}: copied ${copied} rows, expected ${keys.length} (the source changed under its snapshot?)`,
      );
    }
  } finally {
    await c.end({ timeout: 0 });
  }
}

async function pipeInto(
  readable: NodeJS.ReadableStream,
  tx: postgres.TransactionSql,
  p: TablePlan,
  rows: number,
  into: string,
  progress: (l: string) => void,
): Promise<number> {
  const writable = await tx.unsafe(`copy ${into} (${columnList(p)}) from stdin`).writable();
  const bar = new Progress(`copy ${p.name}`, rows, null, progress);
  const count = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      // Text COPY ends every row with a newline (newlines in values are escaped).
      let n = 0;
      for (let i = chunk.indexOf(10); i !== -1; i = chunk.indexOf(10, i + 1)) n++;
      bar.add(n, chunk.length);
      cb(null, chunk);
    },
  });
  await pipeline(readable, count, writable);
  return bar.done().rows;
}

function keyArray(keys: string[]): string {
  return `array[${keys.map(quoteLiteral).join(",")}]::text[]`;
}

function sum(xs: TableCounts[]): TableCounts {
  return xs.reduce(
    (a, x) => ({ inserted: a.inserted + x.inserted, updated: a.updated + x.updated, deleted: a.deleted + x.deleted }),
    { inserted: 0, updated: 0, deleted: 0 },
  );
}

export function formatCounts(plans: TablePlan[], planned: PushResult["planned"]): string {
  const rows = plans.map((
    p,
  ) => [
    p.name,
    fmtInt(planned[p.name].targetRows),
    fmtInt(planned[p.name].inserted),
    fmtInt(planned[p.name].updated),
    fmtInt(planned[p.name].deleted),
  ]);
  return table(["table", "target rows", "insert", "update", "delete"], rows);
}

export function table(head: string[], rows: string[][]): string {
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const fmt = (r: string[]) => r.map((c, i) => (i ? c.padStart(w[i]) : c.padEnd(w[i]))).join("  ");
  return [fmt(head), w.map((n) => "-".repeat(n)).join("  "), ...rows.map(fmt)].join("\n");
}
