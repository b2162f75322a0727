// A source's lifecycle (issue 13, points 1 and 2): DROP TABLE, rename, unregister, and a runbook trigger
// on a table that cannot be embedded. Real PostgreSQL, real pipeline against the fake OpenAI server.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { vectorLiteral } from "../packages/embeddings/hash.ts";
import { offlineEmbedding } from "../packages/embeddings/offline.ts";
import { OpenAIEmbeddingProvider } from "../packages/embeddings/openai.ts";
import { processEmbeddingQueue, type ProcessOptions } from "../packages/embeddings/pipeline.ts";
import { type FakeOpenAI, startFakeOpenAI } from "../packages/testkit/fake-openai.ts";
import { useTestDatabase } from "./helpers/db.ts";

const db = useTestDatabase();
let fake: FakeOpenAI;
let provider: OpenAIEmbeddingProvider;

beforeAll(async () => {
  fake = await startFakeOpenAI();
  provider = new OpenAIEmbeddingProvider({
    apiKey: fake.apiKey,
    baseURL: fake.url,
    model: "text-embedding-3-small",
    dimensions: 1536,
    timeoutMs: 10_000,
  });
});
afterAll(async () => {
  await fake?.stop();
});
beforeEach(async () => {
  if (db.sql) await db.sql`delete from embedding_sync_queue where status <> 'completed'`;
});

let workers = 0;
const run = (extra: Partial<ProcessOptions> = {}) =>
  processEmbeddingQueue(db.sql, provider, {
    workerId: `life-${++workers}`,
    batchSize: 500,
    budgetMs: 30_000,
    leaseSeconds: 30,
    concurrency: 2,
    maxAttempts: 3,
    retryBaseMs: 20,
    retryMaxMs: 200,
    ...extra,
  });

async function footprint(table: string) {
  const [r] = await db.sql<{ sources: number; jobs: number; versions: number; chunks: number }[]>`
    select (select count(*)::int from embedding_sources where source_table = ${table}) as sources,
           (select count(*)::int from embedding_sync_queue where source_table = ${table}) as jobs,
           (select count(*)::int from embedding_sync_versions where source_table = ${table}) as versions,
           (select count(*)::int from documentation_embeddings where source_table = ${table}) as chunks`;
  return r;
}

async function makeNotes(name: string) {
  await db.sql.unsafe(`create table ${name} (id int primary key, body text)`);
  await db.sql`select register_embedding_source(${name}::regclass)`;
  await db.sql.unsafe(`insert into ${name} values (1, 'note un sur les congés'), (2, 'note deux sur le bail')`);
  await run();
  expect(await footprint(name)).toMatchObject({ sources: 1, versions: 2, chunks: 2 });
}

const q = vectorLiteral(offlineEmbedding("note un sur les congés", 1536));
const searchTables = async () =>
  (await db.sql`select distinct source_table from match_documents(${q}::vector, 50)`).map((r) => r.source_table).sort();

describe("source lifecycle", () => {
  it("DROP TABLE removes the source's registration, jobs and chunks in the same transaction; the rest keeps working", async () => {
    await makeNotes("keep_notes");
    await makeNotes("notes");
    await db.sql`update notes set body = 'pending change' where id = 1`; // a pending job too
    await db.sql.begin(async (tx) => {
      await tx`drop table notes`;
      const [inside] = await tx`select count(*)::int as n from documentation_embeddings where source_table = 'notes'`;
      expect(inside.n).toBe(0);
    });
    expect(await footprint("notes")).toEqual({ sources: 0, jobs: 0, versions: 0, chunks: 0 });
    expect(await searchTables()).toEqual(["keep_notes"]);
    expect(
      await db
        .sql`select source_table, rows::int from embedding_sync_coverage where source_table in ('notes', 'keep_notes')`,
    ).toEqual([{ source_table: "keep_notes", rows: 2 }]);
    expect(
      await db
        .sql`select source_table, enqueued::int from resync_embedding_sources(null) where source_table in ('notes', 'keep_notes')`,
    ).toEqual([{ source_table: "keep_notes", enqueued: 0 }]);
    expect(await db.sql`select source_table from embedding_sync_status`).toEqual([{ source_table: "keep_notes" }]);
  });

  it("a worker holding jobs of a table dropped meanwhile writes nothing", async () => {
    await makeNotes("racy_notes");
    await db.sql`update racy_notes set body = body || ' (modifiée)'`;
    const r = await run({
      beforeWrite: async () => {
        await db.sql`drop table racy_notes`;
      },
    });
    expect(r.claimed).toBe(2);
    expect(await footprint("racy_notes")).toEqual({ sources: 0, jobs: 0, versions: 0, chunks: 0 });
  });

  it("where no event trigger cleaned up, coverage and resync report the missing table instead of failing", async () => {
    await makeNotes("orphan_notes");
    await db.sql`alter event trigger embedding_sync_forget_dropped disable`;
    try {
      await db.sql`drop table orphan_notes`;
    } finally {
      await db.sql`alter event trigger embedding_sync_forget_dropped enable`;
    }
    const cov = await db.sql`select * from embedding_coverage() where source_table = 'orphan_notes'`;
    expect(cov).toEqual([{
      source_table: "orphan_notes",
      rows: null,
      rows_with_embeddings: null,
      rows_missing: null,
      orphan_embeddings: "2",
      table_exists: false,
    }]);
    const resync = await db
      .sql`select source_table, enqueued::int, deletes::int from resync_embedding_sources(null) where source_table = 'orphan_notes'`;
    expect(resync).toEqual([{ source_table: "orphan_notes", enqueued: 0, deletes: 2 }]);
    await run();
    expect((await footprint("orphan_notes")).chunks).toBe(0);
    expect(await db.sql`select unregister_embedding_source('orphan_notes') as n`).toEqual([{ n: "0" }]);
    expect(await footprint("orphan_notes")).toEqual({ sources: 0, jobs: 0, versions: 0, chunks: 0 });
  });

  it("a renamed source keeps working under its new name", async () => {
    await makeNotes("old_notes");
    await db.sql`alter table old_notes rename to new_notes`;
    expect(await footprint("old_notes")).toEqual({ sources: 0, jobs: 0, versions: 0, chunks: 0 });
    expect(await footprint("new_notes")).toMatchObject({ sources: 1, versions: 2, chunks: 2 });
    await db.sql`insert into new_notes values (3, 'note trois')`;
    await db.sql`update new_notes set body = 'note un, révisée' where id = 1`;
    await run();
    expect(
      await db
        .sql`select source_id, content from documentation_embeddings where source_table = 'new_notes' order by source_id`,
    )
      .toEqual([{ source_id: "1", content: "body: note un, révisée" }, {
        source_id: "2",
        content: "body: note deux sur le bail",
      }, { source_id: "3", content: "body: note trois" }]);
    expect(
      await db.sql`select rows::int, rows_missing::int from embedding_sync_coverage where source_table = 'new_notes'`,
    ).toEqual([{ rows: 3, rows_missing: 0 }]);
    await db.sql`truncate new_notes`;
    expect((await footprint("new_notes")).chunks).toBe(0);
  });

  it("column changes follow (key renamed, text column added) or are refused when they would break every write", async () => {
    await makeNotes("col_notes"); // default content: its text columns
    await db.sql`alter table col_notes rename column id to note_id`;
    await db.sql`alter table col_notes add column author text`;
    await db.sql`insert into col_notes (note_id, body, author) values (3, 'note trois', 'Camille')`;
    expect(
      await db
        .sql`select source_id, content from embedding_sync_queue where source_table = 'col_notes' and status = 'pending'`,
    )
      .toEqual([{ source_id: "3", content: "body: note trois\nauthor: Camille" }]);

    await db.sql`create table picked_notes (id int primary key, body text, tag text)`;
    await db
      .sql`select register_embedding_source('picked_notes', content_columns => array['body'], metadata_columns => array['tag'])`;
    for (
      const ddl of ["alter table picked_notes rename column body to texte", "alter table picked_notes drop column tag"]
    ) {
      const err = await db.sql.unsafe(ddl).then(() => null, (e) => e);
      expect(err?.message, ddl).toMatch(/this ALTER TABLE breaks the embedding of picked_notes/);
      expect(err.hint).toMatch(
        /register_embedding_source\('picked_notes'.*unregister_embedding_source\('picked_notes'\)/s,
      );
    }
    await db.sql`insert into picked_notes values (1, 'toujours embarqué', 'a')`; // writes keep working
    expect(await db.sql`select content from embedding_sync_queue where source_table = 'picked_notes'`).toEqual([{
      content: "body: toujours embarqué",
    }]);
  });

  it("unregister_embedding_source removes the registration, triggers, jobs and chunks; later writes enqueue nothing", async () => {
    await makeNotes("bye_notes");
    await db
      .sql`create trigger sync_bye after insert or update or delete on bye_notes for each row execute function add_to_embedding_queue()`;
    await db.sql`update bye_notes set body = 'pending' where id = 2`;
    expect(await db.sql`select unregister_embedding_source('bye_notes') as n`).toEqual([{ n: "2" }]);
    expect(await footprint("bye_notes")).toEqual({ sources: 0, jobs: 0, versions: 0, chunks: 0 });
    expect(await db.sql`select tgname from pg_trigger where tgrelid = 'bye_notes'::regclass and not tgisinternal`)
      .toEqual([]);
    await db.sql`insert into bye_notes values (9, 'après')`;
    expect(await footprint("bye_notes")).toEqual({ sources: 0, jobs: 0, versions: 0, chunks: 0 });
    await expect(db.sql`select unregister_embedding_source('bye_notes')`).rejects.toThrow(
      /not a registered embedding source/,
    );
  });
});

describe("the runbook trigger on a table that cannot be embedded", () => {
  it("is refused at CREATE TRIGGER time with the way out, for a composite key, no key, or nothing to embed", async () => {
    await db.sql`create table pair_items (a int, b int, body text, primary key (a, b))`;
    await db.sql`create table keyless_items (body text)`;
    await db.sql`create table numbers_only (id int primary key, n int)`;
    for (const t of ["pair_items", "keyless_items", "numbers_only"]) {
      const err = await db.sql.unsafe(`create trigger sync_x after insert or update or delete on ${t}
                                       for each row execute function add_to_embedding_queue()`).then(
        () => null,
        (e) => e,
      );
      expect(err, t).not.toBeNull();
      expect(err.message).toMatch(
        t === "numbers_only" ? /no text column to embed/ : /needs a single-column primary key/,
      );
      expect(err.hint).toMatch(/single-column primary key.*register_embedding_source/s);
      expect(
        await db.sql`select count(*)::int as n from pg_trigger where tgrelid = ${t}::regclass and not tgisinternal`,
      ).toEqual([{ n: 0 }]);
    }
    // The user's writes are never blocked.
    await db.sql`insert into pair_items values (1, 1, 'x')`;
  });

  it("where event triggers are not allowed, writes still succeed (with a warning) and nothing is enqueued", async () => {
    await db.sql`create table pair_items2 (a int, b int, body text, primary key (a, b))`;
    await db.sql`alter event trigger embedding_sync_attach_truncate disable`;
    try {
      await db
        .sql`create trigger sync_x after insert or update or delete on pair_items2 for each row execute function add_to_embedding_queue()`;
    } finally {
      await db.sql`alter event trigger embedding_sync_attach_truncate enable`;
    }
    const notices: string[] = [];
    const { default: postgres } = await import("postgres");
    const c = postgres(db.url, { max: 1, onnotice: (n) => notices.push(String(n.message)) });
    try {
      await c`insert into pair_items2 values (1, 1, 'x'), (1, 2, 'y')`;
      await c`update pair_items2 set body = 'z'`;
    } finally {
      await c.end();
    }
    expect(await db.sql`select count(*)::int as n from pair_items2`).toEqual([{ n: 2 }]);
    expect(notices.some((m) => /needs a single-column primary key/.test(m))).toBe(true);
    expect(await db.sql`select count(*)::int as n from embedding_sync_queue where source_table = 'pair_items2'`)
      .toEqual([{ n: 0 }]);
  });
});
