// Row-level comparison of two projects: per table, rows only in the source, only in the target, and
// changed (same key, different hash of the copied columns), plus a checksum per side.
import { createHash } from "node:crypto";
import type { AnySql, Sql } from "./catalog.ts";
import { keyExpr, rowHashExpr, type TablePlan, whereClause } from "./tables.ts";

export type RowHashes = Map<string, string>;

export async function rowHashes(sql: AnySql, p: TablePlan): Promise<RowHashes> {
  const rows = await sql.unsafe<{ k: string; h: string }[]>(
    `select ${keyExpr(p)} as k, ${rowHashExpr(p)} as h from ${p.qualified} r ${whereClause(p)}`,
  );
  return new Map(rows.map((r) => [r.k, r.h]));
}

export interface TableDiff {
  table: string;
  sourceRows: number;
  targetRows: number;
  onlySource: string[];
  onlyTarget: string[];
  changed: string[];
  sourceChecksum: string;
  targetChecksum: string;
}

export function checksum(h: RowHashes): string {
  const hash = createHash("sha256");
  for (const k of [...h.keys()].sort()) hash.update(`${k}\t${h.get(k)}\n`);
  return hash.digest("hex").slice(0, 16);
}

export function compare(table: string, s: RowHashes, t: RowHashes): TableDiff {
  const onlySource: string[] = [];
  const changed: string[] = [];
  for (const [k, h] of s) {
    const th = t.get(k);
    if (th === undefined) onlySource.push(k);
    else if (th !== h) changed.push(k);
  }
  const onlyTarget = [...t.keys()].filter((k) => !s.has(k));
  return {
    table,
    sourceRows: s.size,
    targetRows: t.size,
    onlySource,
    onlyTarget,
    changed,
    sourceChecksum: checksum(s),
    targetChecksum: checksum(t),
  };
}

export async function diffTables(
  src: Sql,
  tgt: Sql,
  plans: TablePlan[],
  progress: (l: string) => void = () => {},
): Promise<TableDiff[]> {
  const out: TableDiff[] = [];
  for (const p of plans) {
    const t0 = Date.now();
    const [s, t] = await Promise.all([rowHashes(src, p), rowHashes(tgt, p)]);
    progress(
      `compared ${p.name}: ${s.size} source rows, ${t.size} target rows, ${((Date.now() - t0) / 1000).toFixed(1)} s`,
    );
    out.push(compare(p.name, s, t));
  }
  return out;
}

export const identical = (d: TableDiff) => !d.onlySource.length && !d.onlyTarget.length && !d.changed.length;
