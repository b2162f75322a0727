// Deploy readiness: each function as `supabase functions deploy` sees it. Only the git-tracked files
// its entry reaches, plus the import map the CLI uploads (supabase/functions/deno.json), are copied
// into an empty directory: no node_modules, no package.json. Deno bundles it there, fetching the npm
// packages from the registry npm is configured with, and the bundle then runs with only net/env
// permissions (and read of its own directory) against the test database, answering a real request.
// The closest we can come to the hosted bundler here; no skipping: an unreachable registry fails.
import { execFileSync, spawn } from "node:child_process";
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createNodeClient } from "../packages/connection/node-client.ts";
import { listFunctions } from "../packages/local-stack/function-config.ts";
import type { LocalStack } from "../packages/local-stack/index.ts";
import { functionKeyEnv, signUserJwt } from "../packages/local-stack/keys.ts";
import { startTestStack } from "../packages/testkit/stack.ts";
import { sampleDocuments } from "../packages/testkit/legifrance-corpus.ts";
import { useTestDatabase, waitFor } from "./helpers/db.ts";
import { createAuthUsers } from "./helpers/users.ts";

const root = fileURLToPath(new URL("../", import.meta.url));
const deno = join(root, "node_modules/.bin/deno");
const IMPORT_MAP = "supabase/functions/deno.json";
const db = useTestDatabase();
let stack: LocalStack;
// One Deno cache for the whole file, new for each run: the first bundle is a cold fetch.
const denoDir = mkdtempSync(join(tmpdir(), "deploy-deno-dir-"));
const timings: Record<string, { bundleMs: number; bytes: number }> = {};

/** The registry npm is configured with (never written down anywhere: read from npm's config). */
function npmRegistry(): string {
  const out = execFileSync("npm", ["config", "get", "registry"], {
    cwd: root,
    encoding: "utf8",
    stdio: ["ignore", "pipe", "ignore"],
  }).trim();
  if (!/^https?:\/\//.test(out)) throw new Error(`npm config get registry gave no URL: ${out}`);
  return out;
}

interface Graph {
  modules: { specifier: string; dependencies?: { specifier: string }[] }[];
}

/** Files of this repo that an entry reaches, relative to the repo root, and the bare names it imports. */
function reach(entry: string): { files: string[]; bare: Set<string> } {
  const graph = JSON.parse(
    execFileSync(deno, ["info", "--json", entry], { cwd: root, encoding: "utf8", maxBuffer: 64 << 20 }),
  ) as Graph;
  const files: string[] = [];
  const bare = new Set<string>();
  for (const m of graph.modules) {
    if (!m.specifier.startsWith(`file://${root}`) || m.specifier.includes("/node_modules/")) continue;
    files.push(m.specifier.slice(`file://${root}`.length));
    for (const d of m.dependencies ?? []) {
      if (!/^(\.|\/|node:|npm:|jsr:|https?:)/.test(d.specifier)) bare.add(d.specifier);
    }
  }
  return { files: files.sort(), bare };
}

function tracked(): Set<string> {
  return new Set(execFileSync("git", ["ls-files"], { cwd: root, encoding: "utf8" }).split("\n").filter(Boolean));
}

function run(
  cmd: string,
  args: string[],
  opts: { cwd: string; env: Record<string, string> },
): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const p = spawn(cmd, args, { cwd: opts.cwd, env: opts.env, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    p.stdout.on("data", (d) => (out += d));
    p.stderr.on("data", (d) => (out += d));
    p.on("exit", (code) => resolve({ code, out }));
  });
}

/** Copies what the entry reaches into an empty dir, bundles it there, and serves the bundle. */
async function deployLike(
  name: string,
  env: Record<string, string>,
): Promise<{ url: string; stop: () => void; dir: string }> {
  const entry = `supabase/functions/${name}/index.ts`;
  const { files } = reach(entry);
  const dir = mkdtempSync(join(tmpdir(), `deploy-${name}-`));
  for (const f of [...files, IMPORT_MAP]) {
    mkdirSync(join(dir, dirname(f)), { recursive: true });
    cpSync(join(root, f), join(dir, f));
  }
  const base = { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: dir, DENO_DIR: denoDir, NO_COLOR: "1" };
  const t0 = performance.now();
  const b = await run(deno, ["bundle", "--quiet", "--config", IMPORT_MAP, "-o", "bundle.js", entry], {
    cwd: dir,
    // The machine's own network settings (proxy, CA bundle) apply to the fetch, as they would to a deploy.
    env: { ...process.env as Record<string, string>, ...base, NPM_CONFIG_REGISTRY: npmRegistry() },
  });
  if (b.code !== 0) {
    throw new Error(`deno bundle of ${name} failed in an empty directory (is the npm registry reachable?):\n${b.out}`);
  }
  timings[name] = { bundleMs: Math.round(performance.now() - t0), bytes: statSync(join(dir, "bundle.js")).size };

  // Only net, env, and read of its own directory: no node_modules, no repo, no cache to fall back on.
  const p = spawn(deno, [
    "serve",
    "--no-prompt",
    "--allow-net",
    "--allow-env",
    `--allow-read=${dir}`,
    "--host",
    "127.0.0.1",
    "--port",
    "0",
    "bundle.js",
  ], {
    cwd: dir,
    env: { PATH: base.PATH, HOME: dir, NO_COLOR: "1", DENO_DIR: join(dir, ".deno"), ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let log = "";
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`bundle of ${name} did not listen within 20 s:\n${log}`)), 20_000);
    const onData = (d: Buffer) => {
      log += d;
      const m = /Listening on (http:\/\/[^\s/]+:\d+)/.exec(log);
      if (m) {
        clearTimeout(timer);
        resolve(m[1].replace("0.0.0.0", "127.0.0.1"));
      }
    };
    p.stdout.on("data", onData);
    p.stderr.on("data", onData);
    p.on("exit", (code) => reject(new Error(`bundle of ${name} exited (${code}):\n${log}`)));
  });
  return { url, dir, stop: () => p.kill("SIGKILL") };
}

async function post(url: string, body: unknown, headers: Record<string, string>) {
  const r = await fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: JSON.stringify(body),
  });
  return { status: r.status, body: await r.json() };
}

beforeAll(async () => {
  stack = await startTestStack({ databaseUrl: db.url });
}, 90_000);
afterAll(async () => {
  await stack?.stop();
  rmSync(denoDir, { recursive: true, force: true });
  const total = Object.values(timings);
  if (total.length) {
    console.log(
      `[deploy] bundles: ${
        Object.entries(timings).map(([n, t]) => `${n} ${(t.bytes / 1e6).toFixed(2)} MB in ${t.bundleMs} ms`).join("; ")
      }`,
    );
  }
});

/** What the platform gives every function, for the project on the test database: the new keys only. */
function platformEnv(): Record<string, string> {
  const keys = functionKeyEnv(stack.keys);
  return {
    SUPABASE_URL: stack.apiUrl,
    SUPABASE_DB_URL: db.url,
    SUPABASE_SECRET_KEYS: keys.SUPABASE_SECRET_KEYS,
    SUPABASE_PUBLISHABLE_KEYS: keys.SUPABASE_PUBLISHABLE_KEYS,
    SUPABASE_JWKS: keys.SUPABASE_JWKS,
    EMBEDDING_PROVIDER: "offline",
  };
}

// Each function, and a request whose answer can only come from the database it was pointed at.
const SCENARIOS: Record<string, (url: string) => Promise<void>> = {
  "health": async (url) => {
    await db.sql`select set_environment_label('deploy-check')`;
    const r = await fetch(url, { headers: { apikey: stack.secretKey } });
    const body = await r.json();
    expect([200, 503]).toContain(r.status);
    expect(body.environment).toBe("deploy-check");
    const database = body.checks.find((c: { name: string }) => c.name === "database");
    expect(database).toMatchObject({ status: "ok" });
    expect(JSON.stringify(database.detail)).toContain(new URL(db.url).pathname.slice(1));
  },
  "process-embedding-queue": async (url) => {
    await db.sql`create table deploy_notes (id bigint primary key, body text not null)`;
    await db.sql`select register_embedding_source('deploy_notes', content_columns => array['body'])`;
    await db.sql`alter table embedding_sync_queue disable trigger embedding_sync_queue_webhook`;
    await db.sql`insert into deploy_notes select g, 'note ' || g from generate_series(1, 7) g`;
    const user = await signUserJwt(stack.keys, crypto.randomUUID());
    const r = await post(url, { action: "status" }, { apikey: stack.publishableKey, authorization: `Bearer ${user}` });
    expect(r.status).toBe(200);
    expect(r.body.queue).toEqual([expect.objectContaining({ source_table: "deploy_notes", pending: 7 })]);
    // And it works: the bundle embeds the rows (offline provider) into documentation_embeddings.
    const p = await post(url, { action: "process", batchSize: 50 }, { apikey: stack.secretKey });
    expect(p.body).toMatchObject({ claimed: 7, embedded: 7, dead: 0 });
    const [c] = await db
      .sql`select count(distinct source_id)::int as n from documentation_embeddings where source_table = 'deploy_notes'`;
    expect(c.n).toBe(7);
  },
  "legifrance-collector": async (url) => {
    const [plan] = await db.sql`select count(*)::int as n from legifrance_crawl_plan`;
    const r = await post(url, { mode: "status" }, { apikey: stack.secretKey });
    expect(r.status).toBe(200);
    expect(r.body.plan).toHaveLength(plan.n);
    expect(plan.n).toBeGreaterThan(0);
  },
  "repopulate-files-queue": async (url) => {
    const bucket = "agentbasic-legifrance-raw";
    await db.sql`insert into storage.objects (bucket_id, name, metadata)
                 select ${bucket}, 'deploy/' || g || '.json', '{"size": 2}'::jsonb from generate_series(1, 5) g`;
    await db.sql`delete from files_queue where file_path in ('deploy/2.json', 'deploy/4.json')`;
    const dry = await post(url, { bucket, dryRun: true }, { apikey: stack.secretKey });
    expect(dry.body).toMatchObject({ missing: 2, inserted: 0 });
    const fix = await post(url, { bucket }, { apikey: stack.secretKey });
    expect(fix.body).toMatchObject({ inserted: 2, done: true });
    const [q] = await db.sql`select count(*)::int as n from files_queue where file_path like 'deploy/%'`;
    expect(q.n).toBe(5);
    await db.sql`delete from storage.objects where name like 'deploy/%'`;
    await db.sql`delete from files_queue where file_path like 'deploy/%'`;
  },
  "process-files-queue": async (url) => {
    // A real collected document, uploaded through Storage with the secret key; the bundle downloads
    // it with supabase-js (secret key) and writes its legal_documents row.
    const doc = sampleDocuments()[0];
    const envelope = {
      format: "legifrance-document/v1",
      id: doc.id,
      category: "codes",
      fond: doc.fond,
      endpoint: doc.consult.endpoint,
      data: doc.consult.response,
    };
    const admin = createNodeClient(stack.apiUrl, stack.secretKey);
    const up = await admin.storage.from("agentbasic-legifrance-raw").upload(
      `legifrance/codes/${doc.id}.json`,
      JSON.stringify(envelope),
      { contentType: "application/json" },
    );
    expect(up.error).toBeNull();
    const r = await post(url, { batchSize: 10 }, { apikey: stack.secretKey });
    expect(r.status).toBe(200);
    const row = await waitFor(
      "the legal_documents row",
      async () => (await db.sql`select id, title from legal_documents where id = ${doc.id}`)[0],
    );
    expect(row.title).toBeTruthy();
  },
  search: async (url) => {
    // A user's search through the bundle: the offline provider embeds the query, RLS decides.
    const owner = crypto.randomUUID();
    await createAuthUsers(db.sql, [owner]);
    await db.sql`create table deploy_memos (id int primary key, owner uuid not null, body text not null)`;
    await db.sql`alter table deploy_memos enable row level security`;
    await db.sql`create policy own on deploy_memos for select to authenticated using (owner = auth.uid())`;
    await db.sql`grant select on deploy_memos to authenticated`;
    await db.sql`select register_embedding_source('deploy_memos', content_columns => array['body'])`;
    await db.sql`insert into deploy_memos values (1, ${owner}, 'le mémo de déploiement du propriétaire'),
                                                 (2, ${crypto.randomUUID()}, 'le mémo de déploiement d''un autre')`;
    const { processEmbeddingQueue } = await import("../packages/embeddings/pipeline.ts");
    const { OfflineEmbeddingProvider } = await import("../packages/embeddings/offline.ts");
    await processEmbeddingQueue(db.sql, new OfflineEmbeddingProvider(1536), {
      workerId: "deploy",
      batchSize: 10,
      budgetMs: 30_000,
      leaseSeconds: 60,
      concurrency: 1,
      maxAttempts: 3,
    });
    const jwt = await signUserJwt(stack.keys, owner);
    const r = await post(url, {
      query: "mémo de déploiement",
      includeSource: true,
      filter: { source_table: "deploy_memos" },
    }, { apikey: stack.publishableKey, authorization: `Bearer ${jwt}` });
    expect(r.status).toBe(200);
    expect(r.body.results.map((x: { source_id: string }) => x.source_id)).toEqual(["1"]);
    expect(r.body.results[0].source).toMatchObject({ id: 1, owner });
    const [log] = await db.sql`select user_id::text, question from conversations where id = ${r.body.logId}`;
    expect(log).toEqual({ user_id: owner, question: "mémo de déploiement" });
  },
  conversations: async (url) => {
    const owner = crypto.randomUUID();
    await createAuthUsers(db.sql, [owner]);
    const [entry] = await db
      .sql`insert into conversations (user_id, question) values (${owner}, 'une question') returning id`;
    const jwt = await signUserJwt(stack.keys, owner);
    const headers = { apikey: stack.publishableKey, authorization: `Bearer ${jwt}` };
    expect((await post(url, { action: "answer", logId: entry.id, response: "une réponse" }, headers)).status).toBe(200);
    const l = await post(url, { action: "list" }, headers);
    expect(l.body.entries).toEqual([
      expect.objectContaining({ logId: entry.id, question: "une question", response: "une réponse" }),
    ]);
  },
  invitations: async (url) => {
    const clientId = crypto.randomUUID();
    await db.sql`insert into clients (id, name) values (${clientId}, 'Deploy')`;
    const r = await post(url, { action: "invite", email: "deploy@example.com", clientId }, { apikey: stack.secretKey });
    expect(r.status).toBe(201);
    expect(r.body.token).toMatch(/^[0-9a-f]{64}$/);
    const [inv] = await db.sql`select email, token_hash from invitations where id = ${r.body.invitationId}`;
    expect(inv.email).toBe("deploy@example.com");
    expect(inv.token_hash).not.toBe(r.body.token);
  },
};

describe("deploy readiness: every function bundles from its own files and runs", () => {
  it("covers every function", () => {
    expect(Object.keys(SCENARIOS).sort()).toEqual(listFunctions(join(root, "supabase/functions")));
  });

  it("every bare import a function reaches is mapped to npm:<name>@<the version package.json pins>", () => {
    const map = JSON.parse(readFileSync(join(root, IMPORT_MAP), "utf8")).imports as Record<string, string>;
    const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8"));
    const pinned: Record<string, string> = { ...pkg.dependencies, ...pkg.devDependencies };
    const files = tracked();
    for (const name of Object.keys(SCENARIOS)) {
      const { files: reached, bare } = reach(`supabase/functions/${name}/index.ts`);
      expect(reached.filter((f) => !files.has(f)), `${name} reaches files git does not track`).toEqual([]);
      for (const spec of bare) {
        const key = spec in map ? spec : Object.keys(map).find((k) => k.endsWith("/") && spec.startsWith(k));
        expect(key, `${name} imports "${spec}", which ${IMPORT_MAP} does not map`).toBeTruthy();
      }
    }
    for (const [key, target] of Object.entries(map)) {
      const m = /^npm:\/?((?:@[^/@]+\/)?[^/@]+)@([^/]+)\/?$/.exec(target);
      expect(m, `${key} -> ${target} is not npm:<name>@<exact version>`).toBeTruthy();
      const [, pkgName, version] = m!;
      expect(key.replace(/\/$/, "")).toBe(pkgName);
      expect(version, `${pkgName}: ${IMPORT_MAP} says ${version}, package.json pins ${pinned[pkgName]}`).toBe(
        pinned[pkgName],
      );
    }
  }, 60_000);

  for (const name of Object.keys(SCENARIOS)) {
    it(`${name}: bundled in an empty directory, it answers a real request`, async () => {
      const d = await deployLike(name, platformEnv());
      try {
        await SCENARIOS[name](d.url);
      } finally {
        d.stop();
        rmSync(d.dir, { recursive: true, force: true });
      }
    }, 180_000);
  }
});
