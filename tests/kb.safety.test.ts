// npm run kb where a careless promotion would corrupt the target, carry a secret or restore what it
// did not write, on three real databases (dev, prod and a third, "old"), through the real CLI:
//   - rows matched by a natural key: children (three levels, composite natural keys) and chunks
//     follow their parent to the target's ids, along the exact upsert/overwrite/replace sequence;
//   - a reference without a foreign key is refused before anything is written;
//   - crafted and tampered backups, an uncommitted push's backup, later pushes before a restore;
//   - the four credential shapes (a *_key name, a domain over text, json keys, a webhook URL) and
//     credential-shaped values;
//   - chunks of a source the target does not sync; a target missing migrations;
//   - SIGINT mid-push.
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createHmac } from "node:crypto";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gunzipSync, gzipSync } from "node:zlib";
import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { OpenAIEmbeddingProvider } from "../packages/embeddings/openai.ts";
import { processEmbeddingQueue } from "../packages/embeddings/pipeline.ts";
import { type FakeOpenAI, startFakeOpenAI } from "../packages/testkit/fake-openai.ts";
import { useTestDatabase, waitFor } from "./helpers/db.ts";
import { runKb } from "./helpers/kb.ts";

const dev = useTestDatabase();
const prod = useTestDatabase();
const old = useTestDatabase();
let fake: FakeOpenAI;
let provider: OpenAIEmbeddingProvider;
const backupDir = mkdtempSync(join(tmpdir(), "kb-safety-"));
let env: Record<string, string>;
const kb = (...args: string[]) => runKb(args, env);
const TABLES = "kb_articles,kb_tags,kb_sections,kb_notes";

// The tables, plus two more levels under kb_articles whose natural keys are composite and
// include the reference to their parent.
const schema = `
  create table kb_articles (id bigint generated always as identity primary key, slug text unique not null,
    title text not null, body text not null, published boolean not null default true);
  select register_embedding_source('kb_articles', content_columns => array['title', 'body'], publish_filter => 'published');
  create table kb_tags (id serial primary key, article_id bigint references kb_articles (id) on delete cascade, tag text not null);
  create table kb_sections (id bigint generated always as identity primary key,
    article_id bigint not null references kb_articles (id) on delete cascade, position int not null, heading text not null,
    unique (article_id, position));
  create table kb_notes (id bigint generated always as identity primary key,
    section_id bigint not null references kb_sections (id) on delete cascade, lang text not null, note text not null,
    unique (section_id, lang));`;

async function embedAll(sql: postgres.Sql) {
  return await processEmbeddingQueue(sql, provider, {
    workerId: `kb-safety-${Math.random()}`,
    batchSize: 200,
    budgetMs: 60_000,
    leaseSeconds: 60,
    concurrency: 2,
    maxAttempts: 2,
  });
}

/** The tree as seen by natural keys: what must be equal on both sides whatever the ids. */
async function tree(sql: postgres.Sql) {
  const arts = await sql`select slug, title, body, published from kb_articles order by slug`;
  const tags =
    await sql`select t.id, a.slug, t.tag from kb_tags t left join kb_articles a on a.id = t.article_id order by t.id`;
  const notes = await sql`select a.slug, s.position, s.heading, n.lang, n.note from kb_notes n
    join kb_sections s on s.id = n.section_id join kb_articles a on a.id = s.article_id order by 1, 2, 4`;
  const chunks = await sql`select a.slug, d.chunk_index, d.content, d.content_hash from documentation_embeddings d
    left join kb_articles a on a.id::text = d.source_id where d.source_table = 'kb_articles' order by 1, 2`;
  return { arts: [...arts], tags: [...tags], notes: [...notes], chunks: [...chunks] };
}

async function coverage(sql: postgres.Sql) {
  const [c] =
    await sql`select rows::int, rows_missing::int, orphan_embeddings::int from embedding_sync_coverage where source_table = 'kb_articles'`;
  return c;
}

beforeAll(async () => {
  fake = await startFakeOpenAI();
  provider = new OpenAIEmbeddingProvider({
    apiKey: fake.apiKey,
    baseURL: fake.url,
    model: "text-embedding-3-small",
    dimensions: 1536,
    timeoutMs: 10_000,
  });
  for (const db of [dev, prod, old]) {
    await db.sql.unsafe(schema);
    await db.sql`update cron.job set active = false`;
  }
  await dev.sql`insert into kb_articles (slug, title, body)
    select 'a' || g, 'Article ' || g, 'Le texte de l''article ' || g || ' sur le bail commercial.' from generate_series(1, 200) g`;
  await dev
    .sql`insert into kb_sections (article_id, position, heading) select a.id, p, 'Section ' || p || ' de ' || a.slug
    from kb_articles a, generate_series(1, 2) p where a.id <= 5`;
  await dev.sql`insert into kb_notes (section_id, lang, note) select s.id, l, 'Note ' || l || ' ' || s.heading
    from kb_sections s, unnest(array['fr', 'en']) l`;
  expect((await embedAll(dev.sql)).embedded).toBe(200);
  env = { DEV_DB_URL: dev.url, PROD_DB_URL: prod.url, OLD_DB_URL: old.url, KB_BACKUP_DIR: backupDir };
}, 120_000);

afterAll(async () => {
  await fake?.stop();
  rmSync(backupDir, { recursive: true, force: true });
});

describe("references follow the rows they point to", () => {
  it(
    "push, diverge, upsert, tag, overwrite, replace: every tag, section, note and chunk stays on its own article",
    async () => {
      let r = await kb("push", "--from", "dev", "--to", "prod", "--tables", TABLES);
      expect(r.code, r.stderr).toBe(0);
      expect((await prod.sql`select count(*)::int as n from kb_articles`)[0].n).toBe(200);

      // dev drops 190-200 and adds new1 (id 201); prod gets prodonly directly (also id 201), embedded there.
      await dev.sql`delete from kb_articles where id between 190 and 200`;
      await dev
        .sql`insert into kb_articles (slug, title, body) values ('new1', 'New one', 'Texte propre au nouvel article new1.')`;
      await prod
        .sql`insert into kb_articles (slug, title, body) values ('prodonly', 'Prod only', 'Écrit directement en production.')`;
      expect((await dev.sql`select id::int from kb_articles where slug = 'new1'`)[0].id).toBe(201);
      expect((await prod.sql`select id::int from kb_articles where slug = 'prodonly'`)[0].id).toBe(201);
      await embedAll(dev.sql);
      await embedAll(prod.sql);

      r = await kb("push", "--from", "dev", "--to", "prod", "--tables", TABLES, "--mode", "upsert");
      expect(r.code, r.stderr).toBe(0);
      const [{ id: new1 }] = await prod.sql`select id::int from kb_articles where slug = 'new1'`;
      expect(new1).toBe(202);
      // new1's chunk is under prod's id for new1; prodonly's chunk is still prodonly's text.
      const chunkText = async (id: number) =>
        (await prod.sql`select content from documentation_embeddings
      where source_table = 'kb_articles' and source_id = ${String(id)}`).map((c) => c.content).join(" ");
      expect(await chunkText(202)).toContain("new1");
      expect(await chunkText(201)).toContain("directement en production");
      expect(await chunkText(201)).not.toContain("new1");

      // In dev, new1 gets a tag and a section with a note (three levels under it).
      await dev.sql`insert into kb_tags (article_id, tag) values (201, 'tag-for-new1')`;
      await dev.sql`insert into kb_sections (article_id, position, heading) values (201, 1, 'Section de new1')`;
      await dev
        .sql`insert into kb_notes (section_id, lang, note) select id, 'fr', 'Note de new1' from kb_sections where article_id = 201`;
      r = await kb("push", "--from", "dev", "--to", "prod", "--tables", TABLES, "--mode", "overwrite");
      expect(r.code, r.stderr).toBe(0);
      const [tag] = await prod
        .sql`select t.article_id::int, a.slug from kb_tags t join kb_articles a on a.id = t.article_id where t.tag = 'tag-for-new1'`;
      expect(tag).toEqual({ article_id: 202, slug: "new1" });
      const [note] = await prod.sql`select a.slug, s.position from kb_notes n join kb_sections s on s.id = n.section_id
      join kb_articles a on a.id = s.article_id where n.note = 'Note de new1'`;
      expect(note).toEqual({ slug: "new1", position: 1 });

      // replace: prodonly goes (with its chunk), new1's tag, section and note stay.
      r = await kb("push", "--from", "dev", "--to", "prod", "--tables", TABLES);
      expect(r.code, r.stderr).toBe(0);
      expect(await prod.sql`select slug from kb_articles where slug = 'prodonly'`).toHaveLength(0);
      expect(await prod.sql`select 1 from kb_tags where tag = 'tag-for-new1'`).toHaveLength(1);
      expect(await tree(prod.sql)).toEqual(await tree(dev.sql));

      const diff = await kb("diff", "--from", "dev", "--to", "prod", "--tables", TABLES);
      expect(diff.code, diff.stdout + diff.stderr).toBe(0);
      expect(diff.stdout).toContain("identical");
      const q = await embedAll(prod.sql);
      expect(q.providerCalls).toBe(0);
      expect(await coverage(prod.sql)).toEqual({ rows: 190, rows_missing: 0, orphan_embeddings: 0 });
      expect(await tree(prod.sql)).toEqual(await tree(dev.sql));
    },
    300_000,
  );

  it("refuses, before writing, a reference to a natural-keyed table through a column with no foreign key", async () => {
    for (const db of [dev, prod]) await db.sql`create table kb_links (id int primary key, article_id bigint, url text)`;
    await dev.sql`insert into kb_links values (1, 201, 'https://www.legifrance.gouv.fr/')`;
    await dev.sql`update kb_articles set title = 'Changed before the refusal' where slug = 'a1'`;
    const r = await kb("push", "--from", "dev", "--to", "prod", "--tables", "kb_articles,kb_links");
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("kb_links.article_id looks like a reference to kb_articles");
    expect(r.stderr).toContain("has no foreign key");
    expect(await prod.sql`select * from kb_links`).toHaveLength(0);
    expect((await prod.sql`select title from kb_articles where slug = 'a1'`)[0].title).toBe("Article 1");
    await dev.sql`update kb_articles set title = 'Article 1' where slug = 'a1'`;
    for (const db of [dev, prod]) await db.sql`drop table kb_links`;
  });
});

describe("restore acts only on what kb wrote", () => {
  const keyFile = () => join(backupDir, ".kb-backup-key");
  const gz = (lines: unknown[]) => gzipSync(lines.map((l) => `${JSON.stringify(l)}\n`).join(""));
  /** A file sealed with the backup directory's real key: only the catalog checks can stop it. */
  const sealed = (lines: unknown[], logId: string) => {
    const text = lines.map((l) => `${JSON.stringify(l)}\n`).join("");
    const hmac = createHmac("sha256", Buffer.from(readFileSync(keyFile(), "utf8").trim(), "hex")).update(text).update(
      `seal ${logId}\n`,
    ).digest("hex");
    return gzipSync(text + `${JSON.stringify({ kind: "kb-backup-seal", logId, hmac })}\n`);
  };
  const header = (tables: unknown[]) => {
    const u = new URL(prod.url);
    return {
      kind: "kb-backup",
      version: 2,
      createdAt: new Date().toISOString(),
      env: "prod",
      host: u.hostname,
      database: u.pathname.slice(1),
      projectRef: null,
      label: null,
      mode: "replace",
      tables,
    };
  };
  let vaultIds: string[];

  beforeAll(async () => {
    await prod.sql`select vault.create_secret('not-for-anyone', 'kb_test_secret')`;
    vaultIds = (await prod.sql`select id::text from vault.secrets`).map((r) => r.id);
  });

  it("refuses a crafted backup naming vault.secrets, sealed or not, and a non-gzip file: exit 2, vault untouched", async () => {
    const restore = async (name: string, bytes: Buffer, expected: string) => {
      writeFileSync(join(backupDir, name), bytes);
      const r = await kb("restore", join(backupDir, name), "--env", "prod", "--yes");
      expect(r.code, `${name}: ${r.stderr}`).toBe(2);
      expect(r.stderr).toContain(expected);
      rmSync(join(backupDir, name));
      expect((await prod.sql`select id::text from vault.secrets`).map((x) => x.id)).toEqual(vaultIds);
    };
    // The file an attacker writes by hand: a plain header whose kb_articles "lives" in vault (its
    // columns exist in kb_articles, so a check by name alone passes it).
    const crafted = {
      ...header([{
        name: "kb_articles",
        qualified: `"vault"."secrets"`,
        key: ["id"],
        columns: ["id"],
        overriding: false,
        sequenceColumns: [],
        where: null,
        isChunks: false,
      }]),
      version: 1,
    };
    await restore(
      "crafted.jsonl.gz",
      gz([crafted, { table: "kb_articles", inserted: vaultIds }]),
      "is not a kb backup",
    );
    await restore(
      "crafted-v2.jsonl.gz",
      gz([{ ...crafted, version: 2 }, { table: "kb_articles", inserted: vaultIds }]),
      "has no seal",
    );
    // Even sealed with the real key, a platform schema is refused by name.
    await restore(
      "sealed-vault.jsonl.gz",
      sealed([header([{ name: "vault.secrets", qualified: `"vault"."secrets"`, key: ["id"], columns: ["name"] }]), {
        table: "vault.secrets",
        inserted: vaultIds,
      }], "1"),
      "kb does not copy tables of schema vault",
    );
    await restore("not-gzip.jsonl.gz", Buffer.from("id,title\n1,plain csv\n"), "is not a readable kb backup");
    expect(await prod.sql`select 1 from kb_sync_log where mode = 'restore'`).toHaveLength(0);
  });

  it("refuses a sealed backup whose table plan differs from the live catalog, and a tampered real one", async () => {
    await dev.sql`update kb_articles set title = 'Backup me' where slug = 'a2'`;
    const r = await kb("push", "--from", "dev", "--to", "prod", "--tables", TABLES, "--json");
    expect(r.code, r.stderr).toBe(0);
    const { backupFile, logId } = JSON.parse(r.stdout);
    expect(backupFile).toMatch(/\.jsonl\.gz$/);
    const lines = gunzipSync(readFileSync(backupFile)).toString().trim().split("\n").map((l) => JSON.parse(l));
    // Same push, same file name, valid seal: but the header says kb_articles lives in vault.
    const bad = structuredClone(lines.slice(0, -1));
    bad[0].tables[0].qualified = `"vault"."secrets"`;
    const original = readFileSync(backupFile);
    writeFileSync(backupFile, sealed(bad, logId));
    let x = await kb("restore", backupFile, "--env", "prod");
    expect(x.code, x.stderr).toBe(2);
    expect(x.stderr).toMatch(/table kb_articles differs from the live "public"\."kb_articles" in its schema or table/);
    // A row changed by hand after kb wrote it, seal left as it was.
    const tampered = gunzipSync(original).toString().replace("Article 2", "Article 2 (edited)");
    writeFileSync(backupFile, gzipSync(tampered));
    x = await kb("restore", backupFile, "--env", "prod");
    expect(x.code).toBe(2);
    expect(x.stderr).toContain("does not match its seal");
    writeFileSync(backupFile, original);
    expect((await prod.sql`select title from kb_articles where slug = 'a2'`)[0].title).toBe("Backup me");

    // Later pushes: a warning, and nothing without --yes.
    await dev.sql`update kb_articles set title = 'Later' where slug = 'a3'`;
    expect((await kb("push", "--from", "dev", "--to", "prod", "--tables", TABLES)).code).toBe(0);
    x = await kb("restore", backupFile, "--env", "prod");
    expect(x.code).toBe(2);
    expect(x.stdout).toMatch(/warning: 1 later push changed prod since this backup \(#\d+ replace from dev/);
    expect(x.stderr).toContain("add --yes");
    expect((await prod.sql`select title from kb_articles where slug = 'a2'`)[0].title).toBe("Backup me");
    x = await kb("restore", backupFile, "--env", "prod", "--yes");
    expect(x.code, x.stderr).toBe(0);
    expect(x.stdout).toContain("restoring a replace backup");
    expect((await prod.sql`select title from kb_articles where slug = 'a2'`)[0].title).toBe("Article 2");
    // Put prod back in step with dev.
    expect((await kb("push", "--from", "dev", "--to", "prod", "--tables", TABLES)).code).toBe(0);
    expect(await tree(prod.sql)).toEqual(await tree(dev.sql));
  }, 240_000);

  it("keeps no backup of a push that did not commit", async () => {
    await prod.sql`alter table kb_articles add constraint kb_no_forbidden check (title <> 'Forbidden')`;
    await dev.sql`update kb_articles set title = 'Forbidden' where slug = 'a4'`;
    const before = readdirSync(backupDir).sort();
    const r = await kb("push", "--from", "dev", "--to", "prod", "--tables", TABLES);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("its backup was discarded");
    expect(readdirSync(backupDir).sort()).toEqual(before);
    await prod.sql`alter table kb_articles drop constraint kb_no_forbidden`;
    await dev.sql`update kb_articles set title = 'Article 4' where slug = 'a4'`;
  });
});

describe("secrets never travel", () => {
  beforeAll(async () => {
    for (const db of [dev, prod]) {
      await db.sql.unsafe(`
        create domain stripe_key as text;
        create table kb_settings (id int primary key, openai_key text, stripe_api_key stripe_key, config jsonb, webhook_url text,
          notes text, aliases text[]);`);
    }
  });

  it("refuses a *_key column, a domain over text, json keys at any depth and a webhook URL, naming each", async () => {
    await dev.sql`insert into kb_settings (id, openai_key, stripe_api_key, config, webhook_url) values
      (1, 'sk-proj-aaaaaaaaaaaaaaaaaaaaaaaa', 'sk_live_bbbbbbbbbbbbbbbbbbbb',
       '{"model": "x", "auth": {"api_key": "k", "password": "p"}}', 'https://hooks.slack.com/services/T000/B000/XXXX')`;
    const r = await kb("push", "--from", "dev", "--to", "prod", "--tables", "kb_settings");
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("kb_settings.openai_key: its name looks like a credential");
    expect(r.stderr).toContain("kb_settings.stripe_api_key: its name looks like a credential");
    expect(r.stderr).toContain("kb_settings.webhook_url: its name looks like a credential");
    expect(r.stderr).toContain("kb_settings.config: a json key looks like a credential ($.auth.api_key) (row 1)");
    expect(await prod.sql`select * from kb_settings`).toHaveLength(0);
  });

  it("refuses credential-shaped values in innocent columns, and lets a column through only by --copy-credential-column", async () => {
    await dev
      .sql`update kb_settings set openai_key = null, stripe_api_key = null, webhook_url = null, config = '{"v": [{"x": "ok"}]}',
      notes = 'slack xoxb-123456789012-abcdefgh', aliases = array['fine', 'eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoic2VydmljZSJ9.c2lnbmF0dXJl']`;
    const allowNames = [
      "--copy-credential-column",
      "kb_settings.openai_key",
      "--copy-credential-column",
      "kb_settings.stripe_api_key",
      "--copy-credential-column",
      "kb_settings.webhook_url",
    ];
    let r = await kb("push", "--from", "dev", "--to", "prod", "--tables", "kb_settings", ...allowNames);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("kb_settings.notes: a value looks like a Slack token (xox?-…) (row 1)");
    expect(r.stderr).toContain("kb_settings.aliases: a value looks like a JWT (row 1)");
    expect(await prod.sql`select * from kb_settings`).toHaveLength(0);
    r = await kb(
      "push",
      "--from",
      "dev",
      "--to",
      "prod",
      "--tables",
      "kb_settings",
      ...allowNames,
      "--copy-credential-column",
      "kb_settings.notes",
      "--copy-credential-column",
      "kb_settings.aliases",
    );
    expect(r.code, r.stderr).toBe(0);
    expect((await prod.sql`select notes from kb_settings`)[0].notes).toContain("xoxb-");
  });
});

describe("only what the target syncs", () => {
  it("refuses chunks of a source the target has but does not sync, unless --register-missing-sources", async () => {
    for (const db of [dev, prod]) {
      await db.sql`create table kb_faq (id int primary key, question text not null, answer text not null)`;
    }
    await dev.sql`select register_embedding_source('kb_faq', content_columns => array['question', 'answer'])`;
    await dev.sql`insert into kb_faq select g, 'Question ' || g, 'Réponse ' || g from generate_series(1, 6) g`;
    await embedAll(dev.sql);
    await embedAll(prod.sql); // the earlier tests' jobs, so that the count below is kb_faq's alone
    let r = await kb("push", "--from", "dev", "--to", "prod", "--tables", "kb_faq");
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("the target does not sync kb_faq");
    expect(r.stderr).toContain("--register-missing-sources");
    expect(await prod.sql`select 1 from kb_faq`).toHaveLength(0);
    expect(await prod.sql`select 1 from documentation_embeddings where source_table = 'kb_faq'`).toHaveLength(0);

    r = await kb("push", "--from", "dev", "--to", "prod", "--tables", "kb_faq", "--register-missing-sources");
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain("registering kb_faq as an embedding source on the target");
    expect(await prod.sql`select content_columns from embedding_sources where source_table = 'kb_faq'`).toEqual([{
      content_columns: ["question", "answer"],
    }]);
    expect(await prod.sql`select 1 from documentation_embeddings where source_table = 'kb_faq'`).toHaveLength(6);
    expect((await embedAll(prod.sql)).providerCalls).toBe(0);
    const [c] = await prod
      .sql`select rows_missing::int, orphan_embeddings::int from embedding_sync_coverage where source_table = 'kb_faq'`;
    expect(c).toEqual({ rows_missing: 0, orphan_embeddings: 0 });
  });

  it("refuses a target that lacks migrations the source has, naming them, even with --dry-run", async () => {
    const gone = await old.sql`delete from supabase_migrations.schema_migrations
      where version in (select version from supabase_migrations.schema_migrations order by version desc limit 4) returning version`;
    const r = await kb("push", "--from", "dev", "--to", "old", "--tables", TABLES, "--dry-run");
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`target "old" lacks 4 migrations the source has`);
    for (const g of gone) expect(r.stderr).toContain(g.version);
  });

  it("names every missing table at once, and says which need migrations", async () => {
    const r = await kb("diff", "--from", "dev", "--to", "old", "--tables", "kb_settings,kb_faq");
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`the target has no table "kb_settings", "kb_faq": create them there first`);
    expect(r.stderr).not.toContain("migrations");
  });
});

describe("interrupted runs", () => {
  it("SIGINT mid-push: exit 130, 'interrupted: target unchanged', the backup discarded, the target as it was", async () => {
    await dev.sql`update kb_articles set title = 'Interrupted' where slug = 'a5'`;
    const before = await tree(prod.sql);
    const filesBefore = readdirSync(backupDir).sort();
    // The push blocks on kb_sync_log, its last write, after its backup and its rows are written.
    const holder = await prod.sql.reserve();
    await holder`begin`;
    await holder`lock table kb_sync_log in exclusive mode`;
    let pid = 0;
    try {
      const run = runKb(["push", "--from", "dev", "--to", "prod", "--tables", TABLES], env, {
        onSpawn: (p) => (pid = p),
      });
      await waitFor("the push waiting on kb_sync_log", async () =>
        (await prod.sql`
        select 1 from pg_stat_activity where datname = current_database() and application_name = 'kb' and wait_event_type = 'Lock'
          and query like '%kb_sync_log%'`).length > 0, 60_000);
      expect(readdirSync(backupDir).some((f) => f.endsWith(".partial"))).toBe(true);
      process.kill(-pid, "SIGINT");
      const r = await run;
      expect(r.code, r.stderr).toBe(130);
      expect(r.stderr).toContain("interrupted: target unchanged");
      const discarded = r.stderr.match(/discarded: (\S+\.jsonl\.gz)/)?.[1];
      expect(discarded).toBeTruthy();
      expect(existsSync(discarded!)).toBe(false);
    } finally {
      await holder`rollback`;
      holder.release();
    }
    expect(readdirSync(backupDir).sort()).toEqual(filesBefore);
    // A backend waiting on a lock notices its closed client only once granted: then it rolls back.
    await waitFor(
      "the interrupted push's connection gone",
      async () =>
        (await prod.sql`select 1 from pg_stat_activity where datname = current_database() and application_name = 'kb'`)
          .length === 0,
      60_000,
    );
    expect(await tree(prod.sql)).toEqual(before);
  });
});
