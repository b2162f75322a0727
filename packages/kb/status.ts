// kb status: per table of the default selection, its rows, rows with an embedding, rows missing
// one, and when a push last wrote it; then the environment's identity and its last pushes.
import { checkMigrations, describeTable, type Sql } from "./catalog.ts";
import { type KbEnvironment } from "./env.ts";
import { CHUNKS_TABLE, embeddingSourceNames } from "./tables.ts";
import { targetIdentity } from "./push.ts";

export interface StatusTable {
  table: string;
  rows: number;
  /** Only for embedding sources (rows the publish filter keeps). */
  rowsWithEmbeddings: number | null;
  rowsMissing: number | null;
  lastPush: string | null;
}

export interface StatusResult {
  environment: string;
  label: string | null;
  identity: string;
  tables: StatusTable[];
  lastPushes: {
    id: string;
    pushed_at: string;
    from_env: string;
    mode: string;
    tables: string[];
    rows_inserted: string;
    rows_updated: string;
    rows_deleted: string;
  }[];
}

export async function status(sql: Sql, env: KbEnvironment): Promise<StatusResult> {
  await checkMigrations(sql, `environment "${env.name}"`);
  const { label, line } = await targetIdentity(sql, env, "environment");
  const sources = await embeddingSourceNames(sql);
  const names: string[] = [];
  const queue = [...sources];
  while (queue.length) {
    const n = queue.shift()!;
    if (names.includes(n)) continue;
    const t = await describeTable(sql, n);
    if (!t) continue;
    names.push(n);
    queue.push(...t.parents);
  }
  names.push(CHUNKS_TABLE);
  const coverage = new Map((await sql<{ source_table: string; rows_with_embeddings: string; rows_missing: string }[]>`
    select source_table, rows_with_embeddings::text, rows_missing::text from public.embedding_sync_coverage`).map((
    r,
  ) => [r.source_table, r]));
  const tables: StatusTable[] = [];
  for (const n of names) {
    const t = (await describeTable(sql, n))!;
    const [c] = await sql.unsafe<{ n: string }[]>(`select count(*)::text as n from ${t.qualified}`);
    const [lp] = await sql<
      { at: Date | null }[]
    >`select max(pushed_at) as at from public.kb_sync_log where ${n} = any (tables)`;
    const cov = coverage.get(n);
    tables.push({
      table: n,
      rows: Number(c.n),
      rowsWithEmbeddings: cov ? Number(cov.rows_with_embeddings) : null,
      rowsMissing: cov ? Number(cov.rows_missing) : null,
      lastPush: lp.at ? lp.at.toISOString() : null,
    });
  }
  const lastPushes = await sql<StatusResult["lastPushes"]>`
    select id::text, pushed_at, from_env, mode, tables, rows_inserted::text, rows_updated::text, rows_deleted::text
    from public.kb_sync_log order by pushed_at desc, id desc limit 5`;
  return { environment: env.name, label, identity: line, tables, lastPushes: [...lastPushes] };
}
