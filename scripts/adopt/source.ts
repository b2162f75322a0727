// What ships from this project, read from a source tree: each function entry and every local file it
// imports (Deno's own module graph, so nothing reached is missed), the import map, the functions'
// config.toml sections and the migrations. Paths are given as they will be written in the adopting
// project: entries keep supabase/functions/<name>/, the runtime packages they import move under
// supabase/functions/_shared/vector-sync/ (Supabase's place for shared function code), and the
// relative imports that cross between the two are rewritten to match.
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join, posix, sep } from "node:path";
import { pathToFileURL } from "node:url";
import { z } from "zod";

export const SHARED_DIR = "supabase/functions/_shared/vector-sync";
export const IMPORT_MAP = `${SHARED_DIR}/import_map.json`;
const SOURCE_IMPORT_MAP = "supabase/functions/deno.json";
const FUNCTION_NAME = /^[a-z0-9][a-z0-9_-]*$/;
export const MIGRATION_FILE = /^(\d{14})_([a-z0-9_]+)\.sql$/;

export interface SourceMigration {
  /** The file name in this project, e.g. 20260101000000_extensions_and_invoke.sql. */
  name: string;
  version: string;
  suffix: string;
  content: string;
}

export interface Shipment {
  functions: string[];
  /** Project-relative path (posix) -> content, for code and the import map. */
  files: Map<string, string>;
  /** The [functions.<name>] tables, with their comments, import_map pointing at the copied map. */
  configSections: string;
  migrations: SourceMigration[];
}

export const sha256 = (text: string): string => createHash("sha256").update(text).digest("hex");

const graphSchema = z.object({
  modules: z.array(z.object({
    specifier: z.string(),
    dependencies: z.array(z.object({
      specifier: z.string(),
      code: z.object({ specifier: z.string() }).optional(),
      type: z.object({ specifier: z.string() }).optional(),
    })).optional(),
  })),
});

const toPosix = (p: string) => p.split(sep).join("/");

/** Where a file of the source tree goes in the adopting project (or an error for anything else). */
function targetPath(sourceRel: string): string {
  if (sourceRel.startsWith("supabase/functions/")) return sourceRel;
  if (sourceRel.startsWith("packages/")) return `${SHARED_DIR}/${sourceRel.slice("packages/".length)}`;
  throw new Error(`a function imports ${sourceRel}, outside supabase/functions/ and packages/: it would not deploy`);
}

function relativeSpecifier(fromFile: string, toFile: string): string {
  const rel = posix.relative(posix.dirname(fromFile), toFile);
  return rel.startsWith(".") ? rel : `./${rel}`;
}

export function listFunctions(sourceRoot: string): string[] {
  const dir = join(sourceRoot, "supabase/functions");
  return readdirSync(dir, { withFileTypes: true })
    .filter((d) => d.isDirectory() && FUNCTION_NAME.test(d.name) && existsSync(join(dir, d.name, "index.ts")))
    .map((d) => d.name)
    .sort();
}

/** Local files (source-relative) each entry reaches, with the local imports of each. */
function moduleGraph(sourceRoot: string, entries: string[]): Map<string, { specifier: string; target: string }[]> {
  const deno = join(sourceRoot, "node_modules/.bin/deno");
  const rootUrl = pathToFileURL(sourceRoot + sep).href;
  const local = (url: string) => url.startsWith(rootUrl) && !url.includes("/node_modules/");
  const graph = new Map<string, { specifier: string; target: string }[]>();
  for (const entry of entries) {
    const out = execFileSync(deno, ["info", "--json", entry], {
      cwd: sourceRoot,
      encoding: "utf8",
      maxBuffer: 64 << 20,
    });
    for (const m of graphSchema.parse(JSON.parse(out)).modules) {
      if (!local(m.specifier)) continue;
      const from = decodeURIComponent(m.specifier.slice(rootUrl.length));
      const deps = (m.dependencies ?? []).flatMap((d) => {
        const to = d.code?.specifier ?? d.type?.specifier;
        return to && local(to)
          ? [{ specifier: d.specifier, target: decodeURIComponent(to.slice(rootUrl.length)) }]
          : [];
      });
      graph.set(from, deps);
    }
  }
  return graph;
}

function rewriteImports(content: string, fromTarget: string, deps: { specifier: string; target: string }[]): string {
  let out = content;
  for (const d of deps) {
    const wanted = relativeSpecifier(fromTarget, targetPath(d.target));
    if (wanted === d.specifier) continue;
    for (const q of [`"`, `'`]) out = out.split(`${q}${d.specifier}${q}`).join(`${q}${wanted}${q}`);
  }
  return out;
}

/** The [functions.<name>] tables of config.toml, each with the comment lines just above it. */
export function functionSections(configToml: string, names: string[]): string {
  const lines = configToml.split(/\r?\n/);
  const blocks: string[] = [];
  for (let i = 0; i < lines.length; i++) {
    const m = /^\[functions\.([A-Za-z0-9_-]+)\]\s*$/.exec(lines[i]);
    if (!m || !names.includes(m[1])) continue;
    let start = i;
    while (start > 0 && lines[start - 1].startsWith("#")) start--;
    let end = i + 1;
    while (end < lines.length && !/^\s*\[/.test(lines[end])) end++;
    let body = lines.slice(start, end);
    while (body.length && (body[body.length - 1].trim() === "" || body[body.length - 1].startsWith("#"))) {
      body = body.slice(0, -1);
    }
    body = body.map((l) =>
      l.replace(/^(\s*import_map\s*=\s*)"[^"]*"/, `$1"./${posix.relative("supabase", IMPORT_MAP)}"`)
    );
    blocks.push(body.join("\n"));
  }
  const missing = names.filter((n) => !blocks.some((b) => b.includes(`[functions.${n}]`)));
  if (missing.length) throw new Error(`supabase/config.toml has no [functions.${missing[0]}] section`);
  return blocks.join("\n\n");
}

export function readMigrations(sourceRoot: string): SourceMigration[] {
  const dir = join(sourceRoot, "supabase/migrations");
  return readdirSync(dir)
    .filter((f) => f.endsWith(".sql"))
    .sort()
    .map((name) => {
      const m = MIGRATION_FILE.exec(name);
      if (!m) throw new Error(`supabase/migrations/${name} is not named <14-digit timestamp>_<name>.sql`);
      return { name, version: m[1], suffix: m[2], content: readFileSync(join(dir, name), "utf8") };
    });
}

export function readShipment(sourceRoot: string): Shipment {
  const functions = listFunctions(sourceRoot);
  const graph = moduleGraph(sourceRoot, functions.map((f) => `supabase/functions/${f}/index.ts`));
  const files = new Map<string, string>();
  for (const [from, deps] of [...graph].sort(([a], [b]) => a.localeCompare(b))) {
    const to = targetPath(toPosix(from));
    files.set(to, rewriteImports(readFileSync(join(sourceRoot, from), "utf8"), to, deps));
  }
  files.set(IMPORT_MAP, readFileSync(join(sourceRoot, SOURCE_IMPORT_MAP), "utf8"));
  const configSections = functionSections(readFileSync(join(sourceRoot, "supabase/config.toml"), "utf8"), functions);
  return { functions, files, configSections, migrations: readMigrations(sourceRoot) };
}

export function sourceCommit(sourceRoot: string): string | undefined {
  try {
    return execFileSync("git", ["rev-parse", "HEAD"], {
      cwd: sourceRoot,
      encoding: "utf8",
      stdio: ["ignore", "pipe", "ignore"],
    }).trim();
  } catch {
    return undefined;
  }
}
