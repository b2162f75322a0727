// `npm run adopt` into a scratch Supabase project that already has a migration newer than all of ours
// and a function of its own, on a fresh database of the shared test server made to look like hosted
// Supabase (the platform bootstrap). The project's own migration is pushed first, as on a live project,
// so `supabase db push` after adopting only succeeds without --include-all if ours come after it.
// A newer version of this project is simulated by a copy of the source tree with migrations added.
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { applyPlatformBootstrap } from "../packages/local-stack/migrate.ts";
import { databaseUrl } from "../packages/testkit/testbed.ts";
import { listFunctions } from "../scripts/adopt/source.ts";

const root = fileURLToPath(new URL("../", import.meta.url));
const bin = (name: string) => join(root, "node_modules/.bin", name);
const OWN_MIGRATION = "20261101120000_notes.sql";
const MANIFEST = "supabase/vector-sync.manifest.json";
const IMPORT_MAP = "supabase/functions/_shared/vector-sync/import_map.json";

let scratch: string;
let newer: string;
let dbName: string;
let dbUrl: string;
let admin: postgres.Sql;

function run(cmd: string, args: string[], cwd: string): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve) => {
    const p = spawn(cmd, args, {
      cwd,
      env: { ...process.env, SUPABASE_TELEMETRY_DISABLED: "1", DO_NOT_TRACK: "1", NO_COLOR: "1" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    let err = "";
    p.stdout.on("data", (d) => (out += d));
    p.stderr.on("data", (d) => (err += d));
    p.on("close", (code) => resolve({ code, out, err }));
  });
}

/** `npm run adopt -- <project>` as run from the source tree at `source`. */
const adopt = (source: string, project: string) => run(bin("tsx"), [join(source, "scripts/adopt.ts"), project], source);

/** `supabase db push` of the scratch project to the test database, without --include-all. */
function push(): ReturnType<typeof run> {
  const url = new URL(dbUrl);
  url.searchParams.set("sslmode", "disable");
  return run(bin("supabase"), ["db", "push", `--remote=${url}`, "--yes", "--workdir", scratch], scratch);
}

async function applied(): Promise<string[]> {
  const sql = postgres(dbUrl, { max: 1, onnotice: () => {} });
  try {
    return (await sql<
      { version: string }[]
    >`select version from supabase_migrations.schema_migrations order by version`).map((r) => r.version);
  } finally {
    await sql.end();
  }
}

const migrationFiles = () => readdirSync(join(scratch, "supabase/migrations")).sort();
const versionOf = (file: string) => file.slice(0, file.indexOf("_"));

/** Every file of the project (path -> sha256), to show what a run wrote and what it left alone. */
function snapshot(dir: string): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile()) out.set(relative(dir, p), createHash("sha256").update(readFileSync(p)).digest("hex"));
    }
  };
  walk(dir);
  return out;
}

function changes(
  before: Map<string, string>,
  after: Map<string, string>,
): { added: string[]; changed: string[]; removed: string[] } {
  return {
    added: [...after.keys()].filter((k) => !before.has(k)).sort(),
    changed: [...after.keys()].filter((k) => before.has(k) && before.get(k) !== after.get(k)).sort(),
    removed: [...before.keys()].filter((k) => !after.has(k)).sort(),
  };
}

function addSourceMigration(name: string, sql: string): void {
  writeFileSync(join(newer, "supabase/migrations", name), sql);
}

beforeAll(async () => {
  // The scratch project: what `supabase init` leaves, one table and one function of its own.
  scratch = mkdtempSync(join(tmpdir(), "adopt-project-"));
  mkdirSync(join(scratch, "supabase/migrations"), { recursive: true });
  mkdirSync(join(scratch, "supabase/functions/hello"), { recursive: true });
  writeFileSync(
    join(scratch, "supabase/config.toml"),
    'project_id = "scratch"\n\n[db]\nmajor_version = 15\n\n[functions.hello]\nverify_jwt = true\n',
  );
  writeFileSync(
    join(scratch, "supabase/migrations", OWN_MIGRATION),
    "create table public.notes (id bigint primary key, body text not null);\n",
  );
  writeFileSync(join(scratch, "supabase/functions/hello/index.ts"), 'Deno.serve(() => new Response("hello"));\n');

  // A newer version of this project: the same tree, to which tests add migrations.
  newer = mkdtempSync(join(tmpdir(), "adopt-newer-source-"));
  for (const p of ["packages", "supabase", "scripts", "package.json", "deno.json"]) {
    cpSync(join(root, p), join(newer, p), { recursive: true });
  }
  symlinkSync(join(root, "node_modules"), join(newer, "node_modules"));

  dbName = `adopt_${Date.now().toString(36)}_${Math.random().toString(36).slice(2, 8)}`;
  admin = postgres(inject("adminUrl"), { max: 1, onnotice: () => {} });
  await admin.unsafe(`create database ${dbName}`);
  dbUrl = databaseUrl(inject("adminUrl"), dbName);
  await applyPlatformBootstrap(dbUrl);
  // The live project is at its own latest migration before it adopts anything.
  const first = await push();
  expect(first.code, first.out + first.err).toBe(0);
  expect(await applied()).toEqual([versionOf(OWN_MIGRATION)]);
}, 180_000);

afterAll(async () => {
  await admin?.unsafe(`drop database if exists ${dbName} with (force)`);
  await admin?.end();
  for (const d of [scratch, newer]) if (d) rmSync(d, { recursive: true, force: true });
});

describe("npm run adopt", () => {
  it("writes our migrations after the project's latest, and db push takes them without --include-all", async () => {
    const ours = readdirSync(join(root, "supabase/migrations")).filter((f) => f.endsWith(".sql")).sort();
    const r = await adopt(root, scratch);
    expect(r.code, r.err).toBe(0);

    const files = migrationFiles();
    expect(files[0]).toBe(OWN_MIGRATION);
    const written = files.slice(1);
    expect(written).toHaveLength(ours.length);
    for (const f of written) expect(versionOf(f) > versionOf(OWN_MIGRATION)).toBe(true);
    // Same content, same order, each recorded in the manifest against the file it came from.
    const manifest = JSON.parse(readFileSync(join(scratch, MANIFEST), "utf8"));
    expect(manifest.migrations.map((m: { source: string }) => m.source)).toEqual(ours);
    expect(manifest.migrations.map((m: { file: string }) => m.file)).toEqual(written);
    ours.forEach((src, i) => {
      expect(readFileSync(join(scratch, "supabase/migrations", written[i]), "utf8")).toBe(
        readFileSync(join(root, "supabase/migrations", src), "utf8"),
      );
    });

    // The project's own function and config stay; ours are added beside them.
    expect(readFileSync(join(scratch, "supabase/functions/hello/index.ts"), "utf8")).toContain('"hello"');
    const config = readFileSync(join(scratch, "supabase/config.toml"), "utf8");
    expect(config).toContain("[functions.hello]\nverify_jwt = true");
    for (const f of listFunctions(root)) {
      expect(config).toContain(
        `[functions.${f}]\nverify_jwt = false\nimport_map = "./functions/_shared/vector-sync/import_map.json"`,
      );
    }

    const p = await push();
    expect(p.code, p.out + p.err).toBe(0);
    expect(await applied()).toEqual(files.map(versionOf));
    const sql = postgres(dbUrl, { max: 1, onnotice: () => {} });
    try {
      const [t] =
        await sql`select to_regclass('public.notes')::text as notes, to_regclass('public.embedding_sync_queue')::text as queue`;
      expect(t).toEqual({ notes: "notes", queue: "embedding_sync_queue" });
    } finally {
      await sql.end();
    }
  }, 240_000);

  it("leaves every function type-checking from the project, offline, with the copied import map", async () => {
    const entries = listFunctions(root).map((f) => `supabase/functions/${f}/index.ts`);
    expect(entries.length).toBeGreaterThan(0);
    // Offline: a new, empty Deno cache and --cached-only, so nothing may be fetched. The npm packages
    // the import map names come from a node_modules folder, as after an npm install in the project.
    const denoDir = mkdtempSync(join(tmpdir(), "adopt-deno-dir-"));
    symlinkSync(join(root, "node_modules"), join(scratch, "node_modules"));
    try {
      const r = await run("env", [
        `DENO_DIR=${denoDir}`,
        bin("deno"),
        "check",
        "--cached-only",
        "--node-modules-dir=manual",
        "--import-map",
        IMPORT_MAP,
        ...entries,
      ], scratch);
      expect(r.code, r.out + r.err).toBe(0);
      for (const e of entries) expect(r.out + r.err).toContain(`Check ${e}`);
    } finally {
      rmSync(join(scratch, "node_modules"));
      rmSync(denoDir, { recursive: true, force: true });
    }
  }, 240_000);

  it("upgrades with exactly the new migrations, in order, after the project's latest", async () => {
    // Since the first adopt the project went on with a migration of its own, pushed.
    const own2 = "20261202000000_notes_title.sql";
    writeFileSync(join(scratch, "supabase/migrations", own2), "alter table public.notes add column title text;\n");
    expect((await push()).code).toBe(0);
    // The newer version has two migrations the project has not seen; b needs a before it.
    addSourceMigration(
      "20260130000000_adopt_probe_a.sql",
      "create table public.adopt_probe (id bigint primary key);\n",
    );
    addSourceMigration(
      "20260130000100_adopt_probe_b.sql",
      "alter table public.adopt_probe add column label text not null default 'b';\n",
    );
    // And one it already has was edited in place since: it is not written again.
    const edited = readdirSync(join(newer, "supabase/migrations")).sort()[0];
    writeFileSync(
      join(newer, "supabase/migrations", edited),
      readFileSync(join(newer, "supabase/migrations", edited), "utf8") + "-- edited\n",
    );
    const before = snapshot(scratch);
    const appliedBefore = await applied();

    const r = await adopt(newer, scratch);
    expect(r.code, r.err).toBe(0);
    expect(r.err).toContain(`${edited} changed in the source after it was adopted`);
    const diff = changes(before, snapshot(scratch));
    expect(diff.added).toEqual([
      "supabase/migrations/20261202000001_adopt_probe_a.sql",
      "supabase/migrations/20261202000002_adopt_probe_b.sql",
    ]);
    // Only the manifest and the health function's list of our versions change with them.
    expect(diff.changed).toEqual([
      "supabase/functions/_shared/vector-sync/ops/migrations.generated.ts",
      MANIFEST,
    ]);
    expect(diff.removed).toEqual([]);
    expect(readFileSync(join(scratch, "supabase/functions/_shared/vector-sync/ops/migrations.generated.ts"), "utf8"))
      .toContain('"20261202000002"');

    const p = await push();
    expect(p.code, p.out + p.err).toBe(0);
    expect(await applied()).toEqual([...appliedBefore, "20261202000001", "20261202000002"]);

    // Run again with nothing new: nothing changes.
    const unchanged = snapshot(scratch);
    const again = await adopt(newer, scratch);
    expect(again.code, again.err).toBe(0);
    expect(again.out).toContain("0 new migration(s)");
    expect(changes(unchanged, snapshot(scratch))).toEqual({ added: [], changed: [], removed: [] });
  }, 240_000);

  it("refuses, writing nothing, when the user changed a file adopt wrote", async () => {
    addSourceMigration(
      "20260130000200_adopt_probe_c.sql",
      "create table public.adopt_probe_c (id bigint primary key);\n",
    );
    const edited = "supabase/functions/_shared/vector-sync/core/http.ts";
    const original = readFileSync(join(scratch, edited), "utf8");
    writeFileSync(join(scratch, edited), original + "// a local tweak\n");
    const before = snapshot(scratch);

    const r = await adopt(newer, scratch);
    expect(r.code).toBe(1);
    expect(r.err).toContain("refused, nothing was written");
    expect(r.err).toContain(`${edited} (changed since the last adopt)`);
    expect(changes(before, snapshot(scratch))).toEqual({ added: [], changed: [], removed: [] });

    // The same for an edit inside our block of config.toml.
    writeFileSync(join(scratch, edited), original);
    const config = join(scratch, "supabase/config.toml");
    writeFileSync(
      config,
      readFileSync(config, "utf8").replace(
        "[functions.search]\nverify_jwt = false",
        "[functions.search]\nverify_jwt = true",
      ),
    );
    const before2 = snapshot(scratch);
    const r2 = await adopt(newer, scratch);
    expect(r2.code).toBe(1);
    expect(r2.err).toContain("supabase/config.toml (the vector-sync block changed since the last adopt)");
    expect(changes(before2, snapshot(scratch))).toEqual({ added: [], changed: [], removed: [] });
  }, 240_000);

  it("refuses, writing nothing, where the project has a function of its own by one of our names", async () => {
    const other = mkdtempSync(join(tmpdir(), "adopt-clash-"));
    try {
      mkdirSync(join(other, "supabase/functions/search"), { recursive: true });
      writeFileSync(
        join(other, "supabase/config.toml"),
        'project_id = "clash"\n\n[functions.search]\nverify_jwt = true\n',
      );
      writeFileSync(join(other, "supabase/functions/search/index.ts"), 'Deno.serve(() => new Response("theirs"));\n');
      const before = snapshot(other);
      const r = await adopt(root, other);
      expect(r.code).toBe(1);
      expect(r.err).toContain("supabase/functions/search/index.ts (the project's own file)");
      expect(r.err).toContain("supabase/config.toml ([functions.search] is the project's own)");
      expect(changes(before, snapshot(other))).toEqual({ added: [], changed: [], removed: [] });
    } finally {
      rmSync(other, { recursive: true, force: true });
    }
  }, 60_000);

  it("refuses a path that is not a Supabase project", async () => {
    const empty = mkdtempSync(join(tmpdir(), "adopt-not-a-project-"));
    try {
      const r = await adopt(root, empty);
      expect(r.code).toBe(1);
      expect(r.err).toContain("has no supabase/config.toml");
      expect(readdirSync(empty)).toEqual([]);
    } finally {
      rmSync(empty, { recursive: true, force: true });
    }
  }, 60_000);
});
