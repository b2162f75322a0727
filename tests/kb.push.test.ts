// npm run kb against two (and three) real databases cloned from the migrated template: each mode's
// outcome, all-or-nothing on a failure, no provider call after promoting embedded rows, refusals
// (credential column, empty source, unknown environment/table, differing columns, no migrations,
// non-local target without --yes), diff's exit codes, and restore from a backup.
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { OpenAIEmbeddingProvider } from "../packages/embeddings/openai.ts";
import { processEmbeddingQueue } from "../packages/embeddings/pipeline.ts";
import { type FakeOpenAI, startFakeOpenAI } from "../packages/testkit/fake-openai.ts";
import { databaseUrl } from "../packages/testkit/testbed.ts";
import { useTestDatabase } from "./helpers/db.ts";
import { runKb } from "./helpers/kb.ts";

const dev = useTestDatabase();
const prod = useTestDatabase();
const empty = useTestDatabase();
let fake: FakeOpenAI;
let provider: OpenAIEmbeddingProvider;
const backupDir = mkdtempSync(join(tmpdir(), "kb-backups-"));
let env: Record<string, string>;

const schema = `
  create table kb_categories (id int primary key, name text not null);
  create table kb_articles (
    id int primary key,
    category_id int not null references kb_categories (id),
    title text not null,
    body text not null,
    is_published boolean not null default true,
    updated_at timestamptz not null default '2026-01-01T00:00:00Z');
  select register_embedding_source('kb_articles', content_columns => array['title', 'body'], publish_filter => 'is_published');`;

async function embedAll(sql: postgres.Sql) {
  return await processEmbeddingQueue(sql, provider, {
    workerId: `kb-test-${Math.random()}`,
    batchSize: 100,
    budgetMs: 60_000,
    leaseSeconds: 60,
    concurrency: 2,
    maxAttempts: 2,
  });
}

async function rows(sql: postgres.Sql) {
  const cats = await sql`select * from kb_categories order by id`;
  const arts = await sql`select id, category_id, title, body, is_published from kb_articles order by id`;
  const chunks =
    await sql`select source_table, source_id, chunk_index, content_hash, model from documentation_embeddings
                           where source_table = 'kb_articles' order by source_id::int, chunk_index`;
  return { cats: [...cats], arts: [...arts], chunks: [...chunks] };
}

const kb = (...args: string[]) => runKb(args, env);

beforeAll(async () => {
  fake = await startFakeOpenAI();
  provider = new OpenAIEmbeddingProvider({
    apiKey: fake.apiKey,
    baseURL: fake.url,
    model: "text-embedding-3-small",
    dimensions: 1536,
    timeoutMs: 10_000,
  });
  for (const db of [dev, prod, empty]) {
    await db.sql.unsafe(schema);
    await db.sql`update cron.job set active = false`;
  }
  await dev.sql`insert into kb_categories select g, 'category ' || g from generate_series(1, 3) g`;
  await dev.sql`insert into kb_articles (id, category_id, title, body)
    select g, 1 + g % 3, 'Article ' || g, 'Le texte de l''article numéro ' || g || ' sur le droit des contrats.' from generate_series(1, 30) g`;
  const r = await embedAll(dev.sql);
  expect(r.embedded).toBe(30);
  env = { DEV_DB_URL: dev.url, PROD_DB_URL: prod.url, EMPTY_DB_URL: empty.url, KB_BACKUP_DIR: backupDir };
}, 120_000);

afterAll(async () => {
  await fake?.stop();
  rmSync(backupDir, { recursive: true, force: true });
});

describe("kb diff and push --mode replace", () => {
  it("diff exits 1 when the sides differ, with counts per table and a checksum per side", async () => {
    const r = await kb("diff", "--from", "dev", "--to", "prod", "--json");
    expect(r.code, r.stderr).toBe(1);
    const out = JSON.parse(r.stdout);
    expect(out.identical).toBe(false);
    const byTable = Object.fromEntries(out.tables.map((t: { table: string }) => [t.table, t]));
    expect(byTable.kb_articles).toMatchObject({
      onlyInSource: 30,
      onlyInTarget: 0,
      changed: 0,
      sourceRows: 30,
      targetRows: 0,
    });
    expect(byTable.kb_categories).toMatchObject({ onlyInSource: 3 });
    expect(byTable.documentation_embeddings).toMatchObject({ onlyInSource: 30 });
    expect(byTable.kb_articles.sourceChecksum).not.toBe(byTable.kb_articles.targetChecksum);
  });

  it("--dry-run prints the target's identity and the counts, and changes nothing", async () => {
    const r = await kb("push", "--from", "dev", "--to", "prod", "--dry-run");
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(
      /target "prod": host 127\.0\.0\.1, database t_\w+, project ref \(none\), environment label \(no label\)/,
    );
    expect(r.stdout).toMatch(/kb_articles\s+0\s+30\s+0\s+0/);
    expect(r.stdout).toContain("dry run: nothing was changed");
    expect(r.stdout).not.toContain("postgres:postgres");
    expect((await rows(prod.sql)).arts).toHaveLength(0);
    expect((await prod.sql`select count(*)::int as n from kb_sync_log`)[0].n).toBe(0);
  });

  it("copies parents before children with their chunks, records the push, and the target's queue then makes 0 provider calls", async () => {
    const r = await kb("push", "--from", "dev", "--to", "prod");
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain("chunks copied (text-embedding-3-small, 1536-d)");
    const [d, p] = [await rows(dev.sql), await rows(prod.sql)];
    expect(p).toEqual(d);
    expect(p.chunks).toHaveLength(30);

    const [log] = await prod.sql`select * from kb_sync_log order by id desc limit 1`;
    expect(log).toMatchObject({
      from_env: "dev",
      mode: "replace",
      rows_inserted: "63",
      rows_updated: "0",
      rows_deleted: "0",
      chunks_copied: true,
    });
    expect(log.tables).toEqual(
      expect.arrayContaining(["kb_categories", "kb_articles", "documentation_embeddings", "legal_documents"]),
    );
    expect(log.per_table.kb_articles).toEqual({ inserted: 30, updated: 0, deleted: 0 });

    // The triggers fired: one job per promoted row, all in the bulk lane (a promotion never delays the
    // target's live edits), and every chunk is found unchanged.
    expect(
      (await prod
        .sql`select count(*)::int as n from embedding_sync_queue where status = 'pending' and source_table = 'kb_articles'`)[
          0
        ].n,
    ).toBe(30);
    expect(await prod.sql`select distinct lane from embedding_sync_queue where status = 'pending'`).toEqual([{
      lane: "bulk",
    }]);
    const before = fake.stats.requests;
    const q = await embedAll(prod.sql);
    expect(q.claimed).toBe(30);
    expect(q.providerCalls).toBe(0);
    expect(q.unchanged).toBe(30);
    expect(fake.stats.requests).toBe(before);
    expect((await rows(prod.sql)).chunks).toEqual(d.chunks);
    const [cov] = await prod
      .sql`select rows::int, rows_with_embeddings::int, rows_missing::int from embedding_sync_coverage where source_table = 'kb_articles'`;
    expect(cov).toEqual({ rows: 30, rows_with_embeddings: 30, rows_missing: 0 });

    const again = await kb("diff", "--from", "dev", "--to", "prod");
    expect(again.code, again.stdout + again.stderr).toBe(0);
    expect(again.stdout).toContain("identical");
  });

  it("a second push writes nothing", async () => {
    const r = await kb("push", "--from", "dev", "--to", "prod", "--json");
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout).totals).toEqual({ inserted: 0, updated: 0, deleted: 0 });
    expect(JSON.parse(r.stdout).backupFile).toBeNull();
  });

  it("status shows rows, embeddings, the last push and the label", async () => {
    const r = await kb("status", "--env", "prod");
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain("environment label (no label)");
    expect(r.stdout).toMatch(/kb_articles\s+30\s+30\s+0\s+20\d\d-/);
    expect(r.stdout).toMatch(/#\d+ .* from dev, replace: \+0 ~0 -0/);
  });

  it("replace deletes the target's extra rows and updates changed ones; restore puts the target back", async () => {
    await prod
      .sql`insert into kb_articles (id, category_id, title, body) values (100, 1, 'Only in prod', 'Écrit en production.')`;
    await prod.sql`update kb_articles set title = 'Edited in prod' where id = 5`;
    await dev
      .sql`insert into kb_articles (id, category_id, title, body) values (31, 2, 'New in dev', 'Nouveau texte.')`;
    await embedAll(dev.sql);
    await embedAll(prod.sql);
    const beforePush = await rows(prod.sql);

    const diff = await kb("diff", "--from", "dev", "--to", "prod", "--tables", "kb_articles", "--json");
    expect(diff.code).toBe(1);
    const arts = JSON.parse(diff.stdout).tables.find((t: { table: string }) => t.table === "kb_articles");
    expect(arts).toMatchObject({ onlyInSource: 1, onlyInTarget: 1, changed: 1 });
    expect(arts.sample).toEqual({ onlyInSource: ["31"], onlyInTarget: ["100"], changed: ["5"] });

    const r = await kb("push", "--from", "dev", "--to", "prod", "--json");
    expect(r.code, r.stderr).toBe(0);
    const res = JSON.parse(r.stdout);
    expect(res.applied.kb_articles).toEqual({ inserted: 1, updated: 1, deleted: 1 });
    expect(res.backupFile).toMatch(/\.jsonl\.gz$/);
    const after = await rows(prod.sql);
    expect(after).toEqual(await rows(dev.sql));

    const restored = await kb("restore", res.backupFile, "--env", "prod");
    expect(restored.code, restored.stderr).toBe(0);
    expect(restored.stdout).toContain("in one transaction");
    expect(await rows(prod.sql)).toEqual(beforePush);
    const [log] = await prod
      .sql`select mode, rows_updated::int, rows_deleted::int from kb_sync_log order by id desc limit 1`;
    expect(log.mode).toBe("restore");
    // Back to equal for the next tests.
    expect((await kb("push", "--from", "dev", "--to", "prod")).code).toBe(0);
    await embedAll(prod.sql);
  }, 180_000);
});

describe("upsert and overwrite", () => {
  it("upsert inserts only the missing rows and keeps existing ones as they are", async () => {
    await prod.sql`update kb_articles set title = 'Kept in prod' where id = 7`;
    await prod
      .sql`insert into kb_articles (id, category_id, title, body) values (200, 1, 'Extra', 'Reste en production.')`;
    await dev
      .sql`insert into kb_articles (id, category_id, title, body) values (32, 3, 'Another new one', 'Encore un texte.')`;
    await embedAll(dev.sql);
    const r = await kb("push", "--from", "dev", "--to", "prod", "--mode", "upsert", "--json");
    expect(r.code, r.stderr).toBe(0);
    const res = JSON.parse(r.stdout);
    expect(res.applied.kb_articles).toEqual({ inserted: 1, updated: 0, deleted: 0 });
    expect(res.backupFile).toBeNull();
    const titles = await prod.sql`select id, title from kb_articles where id in (7, 32, 200) order by id`;
    expect(titles.map((t) => t.title)).toEqual(["Kept in prod", "Another new one", "Extra"]);
  });

  it("overwrite inserts missing rows, updates changed ones and keeps extra ones", async () => {
    await dev
      .sql`insert into kb_articles (id, category_id, title, body) values (33, 1, 'Third new', 'Troisième texte.')`;
    await embedAll(dev.sql);
    const r = await kb("push", "--from", "dev", "--to", "prod", "--mode", "overwrite", "--json");
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout).applied.kb_articles).toEqual({ inserted: 1, updated: 1, deleted: 0 });
    const titles = await prod.sql`select id, title from kb_articles where id in (7, 33, 200) order by id`;
    expect(titles.map((t) => t.title)).toEqual(["Article 7", "Third new", "Extra"]);
  });
});

describe("all or nothing", () => {
  it("a row that breaks a CHECK on the target fails the push: the target is unchanged and earlier backups are untouched", async () => {
    await prod.sql`alter table kb_articles add constraint no_forbidden_title check (title <> 'Forbidden')`;
    await dev.sql`update kb_articles set title = 'Forbidden' where id = 20`;
    await dev.sql`update kb_articles set body = 'Corps modifié.' where id = 2`;
    await dev.sql`insert into kb_categories values (4, 'category 4')`;
    await embedAll(dev.sql);
    const backupsBefore = new Map(readdirSync(backupDir).map((f) => [f, readFileSync(join(backupDir, f))]));
    const before = await rows(prod.sql);
    const [{ n: logBefore }] = await prod.sql`select count(*)::int as n from kb_sync_log`;
    const [{ n: queueBefore }] = await prod.sql`select count(*)::int as n from embedding_sync_queue`;

    const r = await kb("push", "--from", "dev", "--to", "prod");
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("rolled back, the target is unchanged");
    expect(r.stderr).toContain("no_forbidden_title");
    expect(await rows(prod.sql)).toEqual(before);
    expect((await prod.sql`select count(*)::int as n from kb_sync_log`)[0].n).toBe(logBefore);
    expect((await prod.sql`select count(*)::int as n from embedding_sync_queue`)[0].n).toBe(queueBefore);
    for (const [f, bytes] of backupsBefore) expect(readFileSync(join(backupDir, f)).equals(bytes)).toBe(true);

    await prod.sql`alter table kb_articles drop constraint no_forbidden_title`;
  });
});

describe("foreign keys stay on", () => {
  it("writes parents before children and deletes children before parents, whatever order --tables gives", async () => {
    await prod.sql`insert into kb_categories values (60, 'only in prod')`;
    await prod.sql`insert into kb_articles (id, category_id, title, body) values (300, 60, 'Child in prod', 'Enfant.')`;
    await dev.sql`insert into kb_categories values (70, 'new parent')`;
    await dev
      .sql`insert into kb_articles (id, category_id, title, body) values (301, 70, 'New child', 'Nouvel enfant.')`;
    const r = await kb("push", "--from", "dev", "--to", "prod", "--tables", "kb_articles,kb_categories", "--json");
    expect(r.code, r.stderr).toBe(0);
    const res = JSON.parse(r.stdout);
    expect(res.tables.slice(0, 2)).toEqual(["kb_categories", "kb_articles"]);
    // Besides 60/70 and 300/301: category 4 and the two article edits of the rolled-back push above,
    // and article 200, which overwrite kept and replace now deletes.
    expect(res.applied.kb_categories).toEqual({ inserted: 2, updated: 0, deleted: 1 });
    expect(res.applied.kb_articles).toEqual({ inserted: 1, updated: 2, deleted: 2 });
    const left = await prod.sql`select (select count(*)::int from kb_categories where id in (60, 70)) as cats,
                                       (select count(*)::int from kb_articles where id in (300, 301)) as arts`;
    expect(left[0]).toEqual({ cats: 1, arts: 1 });
    expect((await rows(prod.sql)).cats).toEqual((await rows(dev.sql)).cats);
  });
});

describe("chunks follow the model", () => {
  it("when the target embeds with another model, chunks are not copied and the target embeds the rows itself", async () => {
    const r = await kb(
      "push",
      "--from",
      "dev",
      "--to",
      "prod",
      "--target-model",
      "text-embedding-3-large",
      "--tables",
      "kb_categories,kb_articles",
    );
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(
      "chunks not copied: source model text-embedding-3-small differs from the target's text-embedding-3-large",
    );
    expect(r.stdout).toMatch(/target kb_articles: \d+ of \d+ rows have no embedding yet/);
    const [{ n: changed }] = await prod
      .sql`select count(*)::int as n from embedding_sync_queue where status = 'pending' and source_table = 'kb_articles'`;
    expect(changed).toBeGreaterThan(0);
    const before = fake.stats.requests;
    const q = await embedAll(prod.sql);
    expect(q.providerCalls).toBeGreaterThan(0);
    expect(fake.stats.requests).toBeGreaterThan(before);
  });
});

describe("environment labels", () => {
  it("shows the target's label before writing and records the source's label, not its URL", async () => {
    // The project's label, set the documented way (migration 20260101001600_ops).
    await dev.sql`select set_environment_label('development')`;
    await prod.sql`select set_environment_label('production')`;
    await dev.sql`insert into kb_categories values (5, 'labelled')`;
    const r = await kb("push", "--from", "dev", "--to", "prod", "--tables", "kb_categories");
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(`environment label "production"`);
    expect(r.stdout.indexOf(`environment label "production"`)).toBeLessThan(
      r.stdout.indexOf("pushed in one transaction"),
    );
    const [log] = await prod.sql`select from_env, tables from kb_sync_log order by id desc limit 1`;
    expect(log).toEqual({ from_env: "development", tables: ["kb_categories"] });
    const s = await kb("status", "--env", "prod");
    expect(s.stdout).toContain(`environment label "production"`);
    expect(s.stdout).toMatch(/from development, replace: \+1 ~0 -0 \(kb_categories\)/);
  });
});

describe("refusals change nothing", () => {
  it("refuses a credential column unless allowed by name", async () => {
    for (const db of [dev, prod]) await db.sql`alter table kb_categories add column api_key text`;
    await dev.sql`update kb_categories set api_key = 'sk-dev-not-for-prod' where id = 1`;
    const before = await prod.sql`select * from kb_categories order by id`;
    const r = await kb("push", "--from", "dev", "--to", "prod");
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("kb_categories.api_key: its name looks like a credential");
    expect(r.stderr).toContain("--copy-credential-column kb_categories.api_key");
    expect(await prod.sql`select * from kb_categories order by id`).toEqual(before);
    expect((await prod.sql`select count(*)::int as n from kb_categories where api_key is not null`)[0].n).toBe(0);
    for (const db of [dev, prod]) await db.sql`alter table kb_categories drop column api_key`;
  });

  it("refuses a push from an empty source unless --allow-empty", async () => {
    const before = await rows(prod.sql);
    const r = await kb("push", "--from", "empty", "--to", "prod");
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`source "empty" has no rows`);
    expect(r.stderr).toContain("--allow-empty");
    expect(await rows(prod.sql)).toEqual(before);
    // Into an empty target the other way round it is allowed with the flag (nothing to copy).
    const ok = await kb("push", "--from", "empty", "--to", "dev", "--mode", "upsert", "--allow-empty", "--json");
    expect(ok.code, ok.stderr).toBe(0);
    expect(JSON.parse(ok.stdout).totals).toEqual({ inserted: 0, updated: 0, deleted: 0 });
  });

  it("names the columns when a table differs between the two sides", async () => {
    await dev.sql`create table kb_tags (id int primary key, label text, weight int)`;
    await prod.sql`create table kb_tags (id int primary key, label text, colour text)`;
    await dev.sql`insert into kb_tags values (1, 'a', 1)`;
    const r = await kb("push", "--from", "dev", "--to", "prod", "--tables", "kb_tags");
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("only in the source: weight; only in the target: colour");
    expect((await prod.sql`select count(*)::int as n from kb_tags`)[0].n).toBe(0);
  });

  it("rejects an unknown environment, a missing variable, an unknown table and a non-local target without --yes", async () => {
    const a = await kb("diff", "--from", "dev", "--to", "staging");
    expect([a.code, a.stderr]).toEqual([2, expect.stringContaining("STAGING_DB_URL is not set")]);
    const b = await kb("push", "--from", "dev", "--to", "prod", "--tables", "no_such_table");
    expect([b.code, b.stderr]).toEqual([2, expect.stringContaining(`unknown table "no_such_table"`)]);
    const c = await runKb(["push", "--from", "dev", "--to", "remote"], {
      ...env,
      REMOTE_DB_URL: "postgres://postgres.abcdefghijklmnopqrst:pw@aws-0-eu-west-3.pooler.supabase.com:5432/postgres",
    });
    expect([c.code, c.stderr]).toEqual([
      2,
      expect.stringContaining(`target "remote" (aws-0-eu-west-3.pooler.supabase.com) is not local`),
    ]);
    expect(c.stderr).not.toContain(":pw@");
    const d = await kb("push", "--from", "dev", "--to", "prod", "--files", "../etc");
    expect([d.code, d.stderr]).toEqual([2, expect.stringContaining(`"../etc" is not a bucket id`)]);
    const e = await kb("push", "--from", "dev", "--to", "prod", "--mode", "merge");
    expect([e.code, e.stderr]).toEqual([2, expect.stringContaining("--mode must be replace, upsert or overwrite")]);
  });

  it("restore refuses a backup taken of another database", async () => {
    const file = readdirSync(backupDir).find((f) => f.endsWith(".jsonl.gz"))!;
    const before = await rows(dev.sql);
    const r = await kb("restore", join(backupDir, file), "--env", "dev");
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/is a backup of 127\.0\.0\.1\/t_\w+, not of dev/);
    expect(await rows(dev.sql)).toEqual(before);
  });

  it("refuses a target without this project's migrations", async () => {
    const name = `kb_nomig_${Date.now().toString(36)}`;
    const admin = postgres(inject("adminUrl"), { max: 1, onnotice: () => {} });
    try {
      await admin.unsafe(`create database ${name}`);
      const r = await runKb(["push", "--from", "dev", "--to", "bare"], {
        ...env,
        BARE_DB_URL: databaseUrl(inject("adminUrl"), name),
      });
      expect(r.code).toBe(2);
      expect(r.stderr).toContain(`target "bare" does not have this project's migrations`);
    } finally {
      await admin.unsafe(`drop database if exists ${name} with (force)`);
      await admin.end();
    }
  });
});

describe("chunks in the target's bulk segments", () => {
  it("a copied chunk joins its row's other chunks: the row ends in one segment, each chunk once", async () => {
    await dev.sql`insert into kb_articles (id, category_id, title, body) values (500, 1, 'Bulk', 'Court.')`;
    await embedAll(dev.sql);
    expect((await kb("push", "--from", "dev", "--to", "prod", "--mode", "overwrite")).code).toBe(0);
    // The target's row 500 sits in a bulk segment (made as private.maintain_embedding_segments makes one).
    await prod.sql.unsafe(`
      create table private.documentation_embeddings_s7 (like public.documentation_embeddings including defaults including generated);
      alter table private.documentation_embeddings_s7 add constraint documentation_embeddings_s7_segment check (segment = 7);
      alter table public.documentation_embeddings attach partition private.documentation_embeddings_s7 for values in (7);
      insert into embedding_segments (id, state) values (7, 'sealed');
      update documentation_embeddings set segment = 7 where source_table = 'kb_articles' and source_id = '500';`);
    // In the source it grows to two chunks: chunk 0 changes (updated where it is), chunk 1 is new.
    await dev.sql`update kb_articles set body = repeat('contrat de travail ', 400) where id = 500`;
    await embedAll(dev.sql);
    const r = await kb("push", "--from", "dev", "--to", "prod", "--mode", "overwrite", "--json");
    expect(r.code, r.stderr).toBe(0);
    const chunks = await prod.sql`select chunk_index, segment from documentation_embeddings
                                  where source_table = 'kb_articles' and source_id = '500' order by chunk_index`;
    expect(chunks.length).toBeGreaterThan(1);
    expect(new Set(chunks.map((c) => c.segment))).toEqual(new Set([0]));
    expect((await rows(prod.sql)).chunks.filter((c) => c.source_id === "500"))
      .toEqual((await rows(dev.sql)).chunks.filter((c) => c.source_id === "500"));
  });
});
