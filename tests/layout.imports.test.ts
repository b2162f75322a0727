// The layout rules, read from the import graph of packages/ and supabase/functions/ (no database):
// - no package imports one that imports it back, however long the way round;
// - what the Edge Functions import never reaches the tooling: the local stack, the test kit (stand-ins,
//   corpora, fakes), the Node-only connection helpers or the kb CLI. Those never ship, and a function
//   that reached them would deploy code meant for a developer's machine, or fail to bundle.
// Imports are read with TypeScript's own pre-processor, so comments and strings are not mistaken for them.
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { dirname, join, normalize } from "node:path";
import { fileURLToPath } from "node:url";
import ts from "typescript";
import { describe, expect, it } from "vitest";

const root = fileURLToPath(new URL("..", import.meta.url));
const TOOLING = ["local-stack", "testkit", "connection", "kb"];

/** Repository-relative (posix) source files under `dir`. */
function sources(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(join(root, dir), { withFileTypes: true })) {
    const p = `${dir}/${e.name}`;
    if (e.isDirectory()) out.push(...sources(p));
    else if (/\.(ts|js|mjs)$/.test(e.name) && !e.name.endsWith(".d.ts")) out.push(p);
  }
  return out;
}

/** Each file's local imports (repository-relative), with the specifiers that resolve to no file. */
function fileGraph(files: string[]): { imports: Map<string, string[]>; missing: string[] } {
  const imports = new Map<string, string[]>();
  const missing: string[] = [];
  for (const f of files) {
    const { importedFiles } = ts.preProcessFile(readFileSync(join(root, f), "utf8"), true, true);
    const local = importedFiles.map((i) => i.fileName).filter((s) => s.startsWith("./") || s.startsWith("../"));
    const targets = local.map((s) => normalize(join(dirname(f), s)).split("\\").join("/"));
    for (const [i, t] of targets.entries()) if (!existsSync(join(root, t))) missing.push(`${f} imports ${local[i]}`);
    imports.set(f, targets);
  }
  return { imports, missing };
}

/** The unit a file belongs to: packages/<name>, or "functions" for supabase/functions/. */
function unitOf(file: string): string | null {
  if (file.startsWith("supabase/functions/")) return "functions";
  const m = /^packages\/([^/]+)\//.exec(file);
  return m ? m[1] : null;
}

/** Package-level edges, each with one file import that makes it (for the message). */
function packageGraph(imports: Map<string, string[]>): Map<string, Map<string, string>> {
  const g = new Map<string, Map<string, string>>();
  for (const [from, targets] of imports) {
    const a = unitOf(from);
    if (!a) continue;
    if (!g.has(a)) g.set(a, new Map());
    for (const to of targets) {
      const b = unitOf(to);
      if (b && b !== a && !g.get(a)!.has(b)) g.get(a)!.set(b, `${from} imports ${to}`);
    }
  }
  return g;
}

/** Every cycle found by a depth-first walk, each as its units in order with the first repeated at the end. */
function findCycles(edges: Map<string, Iterable<string>>): string[][] {
  const cycles: string[][] = [];
  const seen = new Set<string>();
  const key = (c: string[]) => {
    const body = c.slice(0, -1);
    const start = body.indexOf([...body].sort()[0]);
    return [...body.slice(start), ...body.slice(0, start)].join(">");
  };
  const stack: string[] = [];
  const onStack = new Set<string>();
  const done = new Set<string>();
  const visit = (n: string) => {
    stack.push(n);
    onStack.add(n);
    for (const m of edges.get(n) ?? []) {
      if (onStack.has(m)) {
        const cycle = [...stack.slice(stack.indexOf(m)), m];
        if (!seen.has(key(cycle))) {
          seen.add(key(cycle));
          cycles.push(cycle);
        }
      } else if (!done.has(m)) visit(m);
    }
    stack.pop();
    onStack.delete(n);
    done.add(n);
  };
  for (const n of [...edges.keys()].sort()) if (!done.has(n)) visit(n);
  return cycles;
}

/** Files reached from `entries`, each with the chain of imports that reaches it. */
function reach(imports: Map<string, string[]>, entries: string[]): Map<string, string[]> {
  const via = new Map<string, string[]>(entries.map((e) => [e, [e]]));
  const queue = [...entries];
  while (queue.length) {
    const f = queue.shift()!;
    for (const t of imports.get(f) ?? []) {
      if (via.has(t)) continue;
      via.set(t, [...via.get(f)!, t]);
      queue.push(t);
    }
  }
  return via;
}

const files = [...sources("packages"), ...sources("supabase/functions")];
const { imports, missing } = fileGraph(files);

describe("import graph of packages/ and supabase/functions/", () => {
  it("reads the imports (every function reaches core's request guard)", () => {
    const entries = files.filter((f) => /^supabase\/functions\/[^/]+\/index\.ts$/.test(f));
    expect(entries.length).toBeGreaterThan(5);
    const reached = reach(imports, entries);
    expect(reached.has("packages/core/http.ts")).toBe(true);
  });

  it("has no import that points at a missing file", () => {
    expect(missing).toEqual([]);
  });

  it("has no package that imports one that imports it back", () => {
    const g = packageGraph(imports);
    const cycles = findCycles(new Map([...g].map(([a, to]) => [a, to.keys()])));
    const named = cycles.map((c) =>
      `${c.join(" -> ")}: ${c.slice(0, -1).map((a, i) => g.get(a)!.get(c[i + 1])).join("; ")}`
    );
    expect(named, "package import cycles").toEqual([]);
  });

  it("keeps what the functions import apart from the tooling", () => {
    const entries = files.filter((f) => f.startsWith("supabase/functions/"));
    const reached = reach(imports, entries);
    const leaks = [...reached]
      .filter(([f]) => TOOLING.includes(unitOf(f) ?? ""))
      .map(([, chain]) => chain.join(" -> "));
    expect(leaks, "functions reaching local-stack, testkit, connection or kb").toEqual([]);
  });

  it("names a cycle the way round", () => {
    const g = new Map([["a", ["b"]], ["b", ["c"]], ["c", ["a"]], ["d", ["a"]]]);
    expect(findCycles(g)).toEqual([["a", "b", "c", "a"]]);
    expect(findCycles(new Map([["a", ["b"]], ["b", []]]))).toEqual([]);
  });

  it("lists every package it classes as tooling", () => {
    const present = new Set(readdirSync(join(root, "packages")));
    for (const t of TOOLING) expect(present.has(t), `packages/${t}`).toBe(true);
  });
});
