// The guided start of `npm start`: the main job (relational → vector sync) working on demo data.
// A `faq_items` table (created here, not in supabase/migrations: it is demo data, not product
// schema) is registered as an embedding source, filled, changed and partly deleted; the queue then
// drains through the webhook path (insert trigger → pg_net → process-embedding-queue) and the cron
// path (a pg_cron job calling the same function), and a status summary and one search are printed.
// Pieces that do not exist yet are reported instead of faked.
import postgres from "postgres";
import { offlineEmbedding } from "../embeddings/offline.ts";
import type { LocalStack } from "./index.ts";
import { createNodeClient } from "../connection/node-client.ts";

const FAQ: Array<[string, string, boolean]> = [
  [
    "Comment réinitialiser mon mot de passe ?",
    "Cliquez sur « Mot de passe oublié » sur la page de connexion et suivez le lien reçu par courriel.",
    true,
  ],
  [
    "Quels sont les délais de remboursement ?",
    "Les remboursements sont effectués sous 14 jours après réception du retour.",
    true,
  ],
  [
    "Comment contacter le support ?",
    "Écrivez-nous depuis le formulaire de contact ; nous répondons sous 24 heures ouvrées.",
    true,
  ],
  [
    "Puis-je changer d'offre en cours d'année ?",
    "Oui, le changement d'offre prend effet au prochain cycle de facturation.",
    true,
  ],
  ["Où trouver mes factures ?", "Vos factures sont disponibles dans l'espace client, rubrique Facturation.", true],
  [
    "Comment supprimer mon compte ?",
    "La suppression du compte se fait depuis les paramètres ; les données sont effacées sous 30 jours.",
    true,
  ],
  ["Brouillon : nouvelle grille tarifaire", "Texte interne, pas encore publié.", false],
  ["Brouillon : programme de fidélité", "Texte interne, pas encore publié.", false],
];

/** Highest pg_net request id so far (queued or answered): the difference counts calls made. */
async function lastRequestId(sql: postgres.Sql): Promise<number> {
  const [r] = await sql<{ m: number }[]>`
    select coalesce(max(id), 0)::int as m from (
      select max(id) as id from net.http_request_queue union all select max(id) from net._http_response) x`;
  return r.m;
}

async function drain(sql: postgres.Sql, deadlineMs: number): Promise<boolean> {
  const t0 = Date.now();
  while (Date.now() - t0 < deadlineMs) {
    const [r] = await sql<{ open: number }[]>`
      select count(*)::int as open from public.embedding_sync_queue where status in ('pending', 'processing')`;
    if (r.open === 0) return true;
    await new Promise((res) => setTimeout(res, 250));
  }
  return false;
}

/** Waits until no pg_net request is waiting or in flight (the woken function has answered). */
async function settle(sql: postgres.Sql, deadlineMs: number): Promise<void> {
  const t0 = Date.now();
  while (Date.now() - t0 < deadlineMs) {
    const [r] = await sql<{ n: number }[]>`select count(*)::int as n from net.http_request_queue`;
    if (r.n === 0) return;
    await new Promise((res) => setTimeout(res, 250));
  }
}

function table(rows: Record<string, unknown>[]): string {
  if (rows.length === 0) return "  (no rows)";
  const cols = Object.keys(rows[0]);
  const cell = (v: unknown) =>
    (v === null || v === undefined
      ? ""
      : v instanceof Date
      ? v.toISOString()
      : typeof v === "object"
      ? JSON.stringify(v)
      : String(v)).replace(/\s+/g, " ");
  const w = cols.map((c) => Math.min(48, Math.max(c.length, ...rows.map((r) => cell(r[c]).length))));
  const line = (vals: string[]) => "  " + vals.map((v, i) => v.slice(0, w[i]).padEnd(w[i])).join(" | ");
  return [
    line(cols),
    "  " + w.map((n) => "-".repeat(n)).join("-+-"),
    ...rows.map((r) => line(cols.map((c) => cell(r[c])))),
  ].join("\n");
}

/**
 * The search function as a signed-in user sees it: a user JWT like `npm run token` prints, sent the
 * way supabase-js sends a session (publishable key + Bearer JWT). faq_items' policy decides what it finds.
 */
async function searchAsUser(stack: LocalStack, say: (line: string) => void): Promise<void> {
  if (!stack.functions.includes("search")) return;
  // A person of the local Auth: signed in with supabase-js (signed up on the first run).
  const person = createNodeClient(stack.apiUrl, stack.publishableKey);
  const creds = { email: "demo@example.com", password: "demo password" };
  const signIn = await person.auth.signInWithPassword(creds);
  const signed = signIn.error ? await person.auth.signUp(creds) : signIn;
  const jwt = signed.data.session?.access_token;
  const user = signed.data.user?.id;
  if (!jwt || !user) {
    say(`  could not sign the demo user in: ${signed.error?.message ?? "no session"}`);
    return;
  }
  const query = "Comment réinitialiser mon mot de passe ?";
  const r = await fetch(`${stack.apiUrl}/functions/v1/search`, {
    method: "POST",
    headers: { "content-type": "application/json", apikey: stack.publishableKey, authorization: `Bearer ${jwt}` },
    body: JSON.stringify({ query, matchCount: 3 }),
  });
  const body = await r.json() as {
    results?: { source_table: string; source_id: string; score: number; content: string }[];
    error?: string;
  };
  say(
    `\n  search as a signed-in user (${creds.email}, signed in with supabase-js; or a JWT from: npm run token -- --user ${user}):`,
  );
  say(`  POST /functions/v1/search {"query": "${query}"} -> ${r.status}`);
  if (!body.results) {
    say(`  ${JSON.stringify(body)}`);
    return;
  }
  say(
    table(
      body.results.map((x) => ({
        source_table: x.source_table,
        source_id: x.source_id,
        score: Math.round(x.score * 10000) / 10000,
        content: x.content.slice(0, 70),
      })),
    ),
  );
  say("  (published faq_items only: policy faq_items_read_published; the service role would see every row)");
}

/**
 * Whether `npm start` runs the guided demo. The demo creates and registers faq_items, which is fine
 * in the embedded database but not in a user's own one (DATABASE_URL): there a registered demo table
 * would travel with, or block, a later `kb push`. So with DATABASE_URL only LOCAL_STACK_DEMO=1 runs
 * it; without, LOCAL_STACK_DEMO=0 skips it.
 */
export function guidedDemoEnabled(env: NodeJS.ProcessEnv): boolean {
  return env.DATABASE_URL ? env.LOCAL_STACK_DEMO === "1" : env.LOCAL_STACK_DEMO !== "0";
}

export async function runGuidedDemo(
  stack: LocalStack,
  say: (line: string) => void,
  provider = "offline",
  deadlineMs = 90_000,
): Promise<void> {
  const sql = postgres(stack.dbUrl, { max: 2, onnotice: () => {} });
  try {
    const [have] = await sql<{ register: boolean; status_view: boolean; search: boolean; dims: boolean }[]>`
      select to_regprocedure('public.register_embedding_source(regclass,text[],regprocedure,text,int,int,text[])') is not null as register,
             to_regclass('public.embedding_sync_status') is not null as status_view,
             exists (select from pg_proc where proname = 'hybrid_search' and pronamespace = 'public'::regnamespace) as search,
             to_regprocedure('public.embedding_dimensions()') is not null as dims`;
    const fn = stack.functions.includes("process-embedding-queue");
    say("Guided start: relational → vector sync on a demo faq_items table");
    if (!have.register || !have.status_view || !fn) {
      say(
        `  not available yet — register_embedding_source: ${
          have.register ? "yes" : "missing"
        }, embedding_sync_status: ${have.status_view ? "yes" : "missing"}, process-embedding-queue function: ${
          fn ? "yes" : "missing"
        }`,
      );
      say(`  functions served now: ${stack.functions.join(", ") || "none"}`);
      return;
    }

    await sql.unsafe(`
      create table if not exists public.faq_items (
        id bigint generated always as identity primary key,
        question text not null,
        answer text not null,
        is_published boolean not null default false,
        updated_at timestamptz not null default now()
      );
      alter table public.faq_items enable row level security;
      -- What signed-in users (and anon, where anonymous search is opened) may read: published rows.
      -- search answers with a source's chunks only where this policy shows the row.
      drop policy if exists faq_items_read_published on public.faq_items;
      create policy faq_items_read_published on public.faq_items for select to anon, authenticated using (is_published);
      grant select on public.faq_items to anon, authenticated;`);
    await sql`select public.register_embedding_source('public.faq_items'::regclass, array['question', 'answer'], null, 'is_published')`;
    // A rerun starts from the same state: row deletes go through the triggers like any delete.
    await sql`delete from public.faq_items`;
    const [job] = await sql<
      { command: string }[]
    >`select command from cron.job where jobname = 'process-embedding-queue'`;
    const cronCommand = job?.command ?? "select private.fan_out_embedding_workers()";
    await settle(sql, deadlineMs);

    // 1. The webhook path: every change lands in the queue; the insert trigger wakes the function.
    let mark = await lastRequestId(sql);
    let t0 = Date.now();
    for (const [q, a, p] of FAQ) {
      await sql`insert into public.faq_items (question, answer, is_published) values (${q}, ${a}, ${p})`;
    }
    await sql`update public.faq_items set answer = answer || ' Le lien est valable 1 heure.', updated_at = now() where question like 'Comment réinitialiser%'`;
    await sql`update public.faq_items set is_published = true, question = 'Programme de fidélité', answer = 'Chaque commande rapporte des points échangeables contre des remises.' where question like 'Brouillon : programme%'`;
    await sql`delete from public.faq_items where question in ('Où trouver mes factures ?', 'Brouillon : nouvelle grille tarifaire')`;
    say(`  faq_items: ${FAQ.length} rows inserted, 2 updated (one content change, one published), 2 deleted`);
    let drained = await drain(sql, deadlineMs);
    await settle(sql, deadlineMs);
    say(
      `  webhook path: queue ${drained ? "drained" : "NOT drained"} in ${((Date.now() - t0) / 1000).toFixed(1)} s, ${
        (await lastRequestId(sql)) - mark
      } function call(s) through pg_net`,
    );

    // 2. The cron path, the safety net for what a webhook missed: with the webhook trigger paused
    // (demo only), a change waits in the queue until the pg_cron job's command runs. The real
    // schedule is every 5 minutes; the demo runs the same command every 2 s.
    await sql`alter table public.embedding_sync_queue disable trigger embedding_sync_queue_webhook`;
    try {
      await sql`update public.faq_items set answer = 'Écrivez-nous depuis le formulaire de contact ou par chat ; réponse sous 24 heures ouvrées.' where question = 'Comment contacter le support ?'`;
      const [{ n: waiting }] = await sql<
        { n: number }[]
      >`select count(*)::int as n from public.embedding_sync_queue where status = 'pending'`;
      mark = await lastRequestId(sql);
      t0 = Date.now();
      await sql`select cron.schedule('demo-process-embedding-queue', '2 seconds', ${cronCommand})`;
      drained = await drain(sql, deadlineMs);
      await sql`select cron.unschedule('demo-process-embedding-queue')`;
      await settle(sql, deadlineMs);
      say(
        `  cron path (webhook paused): ${waiting} pending job(s) ${drained ? "drained" : "NOT drained"} in ${
          ((Date.now() - t0) / 1000).toFixed(1)
        } s by '${cronCommand}', ${(await lastRequestId(sql)) - mark} function call(s)`,
      );
    } finally {
      await sql`alter table public.embedding_sync_queue enable trigger embedding_sync_queue_webhook`;
      await sql`select cron.unschedule(jobid) from cron.job where jobname = 'demo-process-embedding-queue'`;
    }

    say("\n  select * from embedding_sync_status;");
    say(table(await sql`select * from public.embedding_sync_status order by source_table`));

    await searchAsUser(stack, say);

    if (provider !== "offline") {
      say("  (search skipped: the query embedding would have to come from the same real provider)\n");
      return;
    }
    const [{ dims }] = await sql<{ dims: number }[]>`select public.embedding_dimensions() as dims`;
    const query = "mot de passe oublié";
    const vector = `[${Array.from(offlineEmbedding(query, dims)).join(",")}]`;
    const hits = await sql`
      select source_id, chunk_index, round(score::numeric, 4) as score, left(content, 70) as content
      from public.hybrid_search(${query}, ${vector}::extensions.vector, 3, '{}'::jsonb)`;
    say(`\n  hybrid_search('${query}', <offline query embedding>, 3):`);
    say(table(hits));
    say("  (offline embeddings are lexical, not semantic: set OPENAI_API_KEY for real semantic search)\n");
  } finally {
    await sql.end({ timeout: 2 });
  }
}
