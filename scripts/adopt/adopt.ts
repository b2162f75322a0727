// Adopting into an existing Supabase project, and upgrading it later. Everything is decided first
// (plan), and only a plan with no conflict is written (apply), so a refusal leaves the project as it
// was. The manifest in the project records what was written, with content hashes:
// - migrations are written once, numbered after the project's latest so `supabase db push` takes them
//   without --include-all; one already written is never rewritten, even if ours changed since;
// - code, the import map and our config.toml block are replaced on each run, but only where they are
//   still exactly what the last run wrote: a file the user changed, or one of theirs at the same
//   path, makes the whole run refuse.
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { z } from "zod";
import { generatedModule } from "../../packages/ops/migrations.ts";
import { MIGRATION_FILE, readShipment, sha256, SHARED_DIR, type Shipment, sourceCommit } from "./source.ts";

export const MANIFEST = "supabase/vector-sync.manifest.json";
const CONFIG = "supabase/config.toml";
const BLOCK_START =
  "# >>> vector-sync functions: written by `npm run adopt`, replaced by the next one (edits here make it refuse)";
const BLOCK_END = "# <<< vector-sync functions";
const ANY_MIGRATION = /^(\d+)_.*\.sql$/;
const GENERATED_VERSIONS = `${SHARED_DIR}/ops/migrations.generated.ts`;

const hex64 = z.string().regex(/^[0-9a-f]{64}$/);
const manifestSchema = z.object({
  about: z.string(),
  version: z.literal(1),
  sourceCommit: z.string().optional(),
  migrations: z.array(z.object({
    source: z.string().regex(MIGRATION_FILE),
    file: z.string().regex(ANY_MIGRATION),
    sha256: hex64,
  })),
  files: z.record(z.string(), hex64),
  configBlock: hex64.optional(),
});
export type Manifest = z.infer<typeof manifestSchema>;

export interface Plan {
  conflicts: string[];
  warnings: string[];
  writes: Map<string, string>;
  deletes: string[];
  newMigrations: { source: string; file: string }[];
  manifest: Manifest;
}

function readManifest(project: string): Manifest | undefined {
  const file = join(project, MANIFEST);
  if (!existsSync(file)) return undefined;
  const parsed = manifestSchema.safeParse(JSON.parse(readFileSync(file, "utf8")));
  if (!parsed.success) {
    throw new Error(`${MANIFEST} is not a manifest this adopt can read: ${parsed.error.issues[0]?.message}`);
  }
  return parsed.data;
}

const readIfExists = (file: string): string | undefined => existsSync(file) ? readFileSync(file, "utf8") : undefined;

/** Versions are compared as numbers: Supabase accepts any digits before the first underscore. */
function latestVersion(project: string): bigint | undefined {
  const dir = join(project, "supabase/migrations");
  if (!existsSync(dir)) return undefined;
  let latest: bigint | undefined;
  for (const f of readdirSync(dir)) {
    const m = ANY_MIGRATION.exec(f);
    if (m && (latest === undefined || BigInt(m[1]) > latest)) latest = BigInt(m[1]);
  }
  return latest;
}

/** The version one second after `v` (YYYYMMDDHHMMSS), or plainly v + 1 for other numbering. */
function nextVersion(v: bigint): bigint {
  const s = v.toString();
  const m = /^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})$/.exec(s);
  const t = m ? Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4], +m[5], +m[6]) : NaN;
  if (Number.isNaN(t)) return v + 1n;
  const d = new Date(t + 1000);
  const p = (n: number, w = 2) => String(n).padStart(w, "0");
  return BigInt(
    `${p(d.getUTCFullYear(), 4)}${p(d.getUTCMonth() + 1)}${p(d.getUTCDate())}${p(d.getUTCHours())}${
      p(d.getUTCMinutes())
    }${p(d.getUTCSeconds())}`,
  );
}

interface ConfigBlock {
  /** The file with our block replaced (or appended). */
  next: string;
  /** Hash of the block now in the file, if there is one. */
  current?: string;
  /** Our function names that the project's own tables already use. */
  clashes: string[];
}

function mergeConfig(config: string, sections: string, functions: string[]): ConfigBlock {
  const block = `${BLOCK_START}\n${sections}\n${BLOCK_END}`;
  const start = config.indexOf(BLOCK_START);
  const end = config.indexOf(BLOCK_END);
  const hasBlock = start >= 0 && end > start;
  const outside = hasBlock ? config.slice(0, start) + config.slice(end + BLOCK_END.length) : config;
  const clashes = functions.filter((f) => new RegExp(`^\\s*\\[functions\\.${f}(\\.[^\\]]*)?\\]`, "m").test(outside));
  if (hasBlock) {
    const current = config.slice(start, end + BLOCK_END.length);
    return {
      next: config.slice(0, start) + block + config.slice(end + BLOCK_END.length),
      current: sha256(current),
      clashes,
    };
  }
  const sep = config.endsWith("\n") ? "\n" : "\n\n";
  return { next: `${config}${sep}${block}\n`, clashes };
}

export function planAdoption(sourceRoot: string, project: string, shipment: Shipment = readShipment(sourceRoot)): Plan {
  const previous = readManifest(project);
  const conflicts: string[] = [];
  const warnings: string[] = [];
  const writes = new Map<string, string>();
  const deletes: string[] = [];
  const files: Record<string, string> = {};

  // Migrations: only ours that no run has written yet, in our order, after the project's latest.
  const migrations = [...(previous?.migrations ?? [])];
  const done = new Map(migrations.map((m) => [m.source, m]));
  const newMigrations: Plan["newMigrations"] = [];
  let last = latestVersion(project);
  for (const m of shipment.migrations) {
    const had = done.get(m.name);
    if (had) {
      if (had.sha256 !== sha256(m.content)) {
        warnings.push(
          `${m.name} changed in the source after it was adopted as ${had.file}; adopted migrations are never rewritten`,
        );
      }
      continue;
    }
    const version = last === undefined || BigInt(m.version) > last ? BigInt(m.version) : nextVersion(last);
    last = version;
    const file = `${version}_${m.suffix}.sql`;
    const path = `supabase/migrations/${file}`;
    if (existsSync(join(project, path))) conflicts.push(`${path} (already exists)`);
    writes.set(path, m.content);
    newMigrations.push({ source: m.name, file });
    migrations.push({ source: m.name, file, sha256: sha256(m.content) });
  }
  // The health function compares the database's migration history with the versions it ships: here
  // those are the versions our migrations were given in this project.
  const shipped = new Map(shipment.files);
  if (shipped.has(GENERATED_VERSIONS)) {
    const versions = migrations.map((m) => ANY_MIGRATION.exec(m.file)![1]).sort();
    shipped.set(
      GENERATED_VERSIONS,
      generatedModule(versions).replace(
        /^\/\/.*\n/,
        "// Written by `npm run adopt`: the versions our migrations have in this project. Do not edit.\n",
      ),
    );
  }

  // Code and the import map: ours where the file is absent, identical, or still as we last wrote it.
  for (const [path, content] of shipped) {
    const hash = sha256(content);
    files[path] = hash;
    const current = readIfExists(join(project, path));
    if (current === undefined) writes.set(path, content);
    else if (current === content) continue;
    else if (previous?.files[path] === sha256(current)) writes.set(path, content);
    else {conflicts.push(
        previous?.files[path] ? `${path} (changed since the last adopt)` : `${path} (the project's own file)`,
      );}
  }
  // Files a previous run wrote that this version no longer ships: removed if untouched.
  for (const [path, hash] of Object.entries(previous?.files ?? {})) {
    if (shipped.has(path)) continue;
    const current = readIfExists(join(project, path));
    if (current === undefined) continue;
    if (sha256(current) === hash) deletes.push(path);
    else conflicts.push(`${path} (changed since the last adopt; this version no longer ships it)`);
  }

  // config.toml: our [functions.*] tables live in one marked block.
  const config = readFileSync(join(project, CONFIG), "utf8");
  const merged = mergeConfig(config, shipment.configSections, shipment.functions);
  for (const f of merged.clashes) conflicts.push(`${CONFIG} ([functions.${f}] is the project's own)`);
  const configBlock = sha256(
    merged.next.slice(merged.next.indexOf(BLOCK_START), merged.next.indexOf(BLOCK_END) + BLOCK_END.length),
  );
  if (merged.current && merged.current !== previous?.configBlock && merged.current !== configBlock) {
    conflicts.push(`${CONFIG} (the vector-sync block changed since the last adopt)`);
  }
  if (merged.next !== config) writes.set(CONFIG, merged.next);

  const manifest: Manifest = {
    about: "Written by `npm run adopt` (supabase-vector-sync): what it wrote here, so the next run adds only new " +
      "migrations and refuses to overwrite files changed since. Keep it under version control; do not edit it.",
    version: 1,
    sourceCommit: sourceCommit(sourceRoot),
    migrations,
    files: Object.fromEntries(Object.entries(files).sort(([a], [b]) => a.localeCompare(b))),
    configBlock,
  };
  return { conflicts, warnings, writes, deletes, newMigrations, manifest };
}

/** Writes a plan that has no conflict, the manifest last. */
export function applyPlan(project: string, plan: Plan): void {
  if (plan.conflicts.length) throw new Error("refusing to apply a plan with conflicts");
  for (const path of plan.deletes) rmSync(join(project, path));
  for (const [path, content] of plan.writes) {
    mkdirSync(dirname(join(project, path)), { recursive: true });
    writeFileSync(join(project, path), content);
  }
  writeFileSync(join(project, MANIFEST), JSON.stringify(plan.manifest, null, 2) + "\n");
}
