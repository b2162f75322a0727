// The four kb commands: resolve the environments, connect, run, print (text or --json), and return
// the exit code. Connections are always closed, whatever happens.
import type { Sql } from "./catalog.ts";
import { checkMigrations } from "./catalog.ts";
import { diffTables, identical, type TableDiff } from "./diff.ts";
import { type KbEnvironment, KbError, resolveEnvironment } from "./env.ts";
import { checkBuckets, parseBuckets, pushFiles } from "./files.ts";
import { fmtInt } from "./progress.ts";
import { push, type PushMode, table, targetIdentity } from "./push.ts";
import { restoreBackup } from "./backup.ts";
import { status } from "./status.ts";
import { selectTables } from "./tables.ts";

export interface CommandIO {
  out: (line: string) => void;
  progress: (line: string) => void;
  json: boolean;
  backupDir: string;
  connect: (url: string) => Sql;
}

async function withDbs<T>(io: CommandIO, envs: KbEnvironment[], fn: (dbs: Sql[]) => Promise<T>): Promise<T> {
  const dbs = envs.map((e) => io.connect(e.dbUrl));
  try {
    return await fn(dbs);
  } finally {
    await Promise.all(dbs.map((d) => d.end({ timeout: 5 })));
  }
}

export async function statusCommand(name: string, io: CommandIO): Promise<number> {
  const env = resolveEnvironment(name);
  return await withDbs(io, [env], async ([sql]) => {
    const s = await status(sql, env);
    if (io.json) {
      io.out(JSON.stringify(s, null, 2));
      return 0;
    }
    io.out(s.identity);
    io.out(table(
      ["table", "rows", "with embedding", "missing one", "last push"],
      s.tables.map((t) => [
        t.table,
        fmtInt(t.rows),
        t.rowsWithEmbeddings === null ? "-" : fmtInt(t.rowsWithEmbeddings),
        t.rowsMissing === null ? "-" : fmtInt(t.rowsMissing),
        t.lastPush ?? "never",
      ]),
    ));
    io.out(s.lastPushes.length ? "last pushes:" : "no push recorded on this environment");
    for (const p of s.lastPushes) {
      io.out(
        `  #${p.id} ${
          new Date(p.pushed_at).toISOString()
        } from ${p.from_env}, ${p.mode}: +${p.rows_inserted} ~${p.rows_updated} -${p.rows_deleted} (${
          p.tables.join(", ")
        })`,
      );
    }
    return 0;
  });
}

export async function diffCommand(
  from: string,
  to: string,
  tables: string[] | undefined,
  io: CommandIO,
): Promise<number> {
  const src = resolveEnvironment(from);
  const tgt = resolveEnvironment(to);
  return await withDbs(io, [src, tgt], async ([s, t]) => {
    await checkMigrations(s, `source "${src.name}"`);
    await checkMigrations(t, `target "${tgt.name}"`);
    // diff compares; it never copies, so a credential-looking column is compared like any other.
    const plans = await selectTables(s, t, { tables });
    const diffs = await diffTables(s, t, plans, io.progress);
    const same = diffs.every(identical);
    if (io.json) {
      io.out(JSON.stringify({ from: src.name, to: tgt.name, identical: same, tables: diffs.map(diffJson) }, null, 2));
    } else {
      io.out(`diff ${src.name} -> ${tgt.name}`);
      io.out(
        table(
          ["table", "only in source", "only in target", "changed", "source checksum", "target checksum"],
          diffs.map((d) => [
            d.table,
            fmtInt(d.onlySource.length),
            fmtInt(d.onlyTarget.length),
            fmtInt(d.changed.length),
            d.sourceChecksum,
            d.targetChecksum,
          ]),
        ),
      );
      io.out(same ? "identical" : "different");
    }
    return same ? 0 : 1;
  });
}

function diffJson(d: TableDiff) {
  return {
    table: d.table,
    sourceRows: d.sourceRows,
    targetRows: d.targetRows,
    onlyInSource: d.onlySource.length,
    onlyInTarget: d.onlyTarget.length,
    changed: d.changed.length,
    sourceChecksum: d.sourceChecksum,
    targetChecksum: d.targetChecksum,
    identical: identical(d),
    sample: {
      onlyInSource: d.onlySource.slice(0, 10),
      onlyInTarget: d.onlyTarget.slice(0, 10),
      changed: d.changed.slice(0, 10),
    },
  };
}

export interface PushArgs {
  from: string;
  to: string;
  mode: PushMode;
  tables?: string[];
  files?: string;
  dryRun: boolean;
  yes: boolean;
  allowEmpty: boolean;
  allowCredentialColumns: string[];
  registerMissingSources: boolean;
  targetModel?: string;
}

export async function pushCommand(a: PushArgs, io: CommandIO): Promise<number> {
  const buckets = a.files ? parseBuckets(a.files) : [];
  const src = resolveEnvironment(a.from, { files: buckets.length > 0 });
  const tgt = resolveEnvironment(a.to, { files: buckets.length > 0 });
  if (src.dbUrl === tgt.dbUrl) throw new KbError(`--from and --to are the same database`);
  return await withDbs(io, [src, tgt], async ([s, t]) => {
    if (buckets.length) await checkBuckets(s, buckets);
    const log = io.json ? io.progress : io.out;
    const r = await push(s, t, {
      from: src,
      to: tgt,
      mode: a.mode,
      tables: a.tables,
      dryRun: a.dryRun,
      yes: a.yes,
      allowEmpty: a.allowEmpty,
      allowCredentialColumns: a.allowCredentialColumns,
      registerMissingSources: a.registerMissingSources,
      targetModel: a.targetModel,
      backupDir: io.backupDir,
      log,
      progress: io.progress,
    });
    if (!r.dryRun) await reportCoverage(t, r.tables, log);
    const files = buckets.length
      ? await pushFiles(s, t, {
        from: src,
        to: tgt,
        buckets,
        mode: a.mode,
        dryRun: a.dryRun,
        log,
        progress: io.progress,
      })
      : [];
    for (const f of files) {
      if (!a.dryRun) {
        log(
          `bucket ${f.bucket}: copied ${fmtInt(f.copied)} objects, deleted ${fmtInt(f.deleted)}, ${
            fmtInt(f.unchanged)
          } unchanged`,
        );
      }
    }
    if (io.json) io.out(JSON.stringify({ ...r, files }, null, 2));
    return 0;
  });
}

// After a push: the promoted sources' rows that have no chunk on the target yet. Rows the push
// inserted or changed are in the target's queue already; others (the source had no chunks for
// them) need `select resync_embedding_sources('<table>')` on the target.
async function reportCoverage(t: Sql, tables: string[], log: (l: string) => void): Promise<void> {
  const rows = await t<{ source_table: string; rows: string; rows_missing: string }[]>`
    select c.source_table, c.rows::text, c.rows_missing::text from public.embedding_sync_coverage c
    where c.source_table = any (${tables}) and c.rows_missing > 0`;
  if (!rows.length) return;
  const [q] = await t<{ n: string }[]>`
    select count(*)::text as n from public.embedding_sync_queue where status = 'pending' and source_table = any (${tables})`;
  for (const r of rows) {
    log(
      `target ${r.source_table}: ${fmtInt(Number(r.rows_missing))} of ${
        fmtInt(Number(r.rows))
      } rows have no embedding yet`,
    );
  }
  log(
    `${fmtInt(Number(q.n))} embedding jobs are pending on the target (process-embedding-queue embeds them; ` +
      `rows not queued need select resync_embedding_sources('<table>'))`,
  );
}

export async function restoreCommand(file: string, name: string, yes: boolean, io: CommandIO): Promise<number> {
  const env = resolveEnvironment(name);
  if (!env.isLocal && !yes) {
    throw new KbError(`environment "${env.name}" (${env.host}) is not local: add --yes to restore into it`);
  }
  return await withDbs(io, [env], async ([sql]) => {
    await checkMigrations(sql, `environment "${env.name}"`);
    io.out((await targetIdentity(sql, env)).line);
    const r = await restoreBackup(sql, env, file, {
      dir: io.backupDir,
      yes,
      log: (l) => io.out(l),
      header: (h) =>
        io.out(
          `restoring ${/^[aeiou]/.test(h.mode) ? "an" : "a"} ${h.mode} backup taken ${h.createdAt} (${
            h.tables.map((t) => t.name).join(", ")
          })`,
        ),
    });
    if (io.json) io.out(JSON.stringify(r, null, 2));
    return 0;
  });
}
