// The dashboard's top users in a real browser (Debian's chromium, puppeteer-core), against the local
// stack on the real PostgreSQL. The activity is made the way users make it: they sign up with
// supabase-js, search through the search function, and the assistant's answers and their feedback go
// through the conversations function. The page must show what SQL counts in the conversation log
// itself. Saves .artifacts/people-dashboard.png.
import { mkdirSync } from "node:fs";
import { fileURLToPath } from "node:url";
import puppeteer, { type Browser, type Page } from "puppeteer-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createNodeClient } from "../packages/connection/node-client.ts";
import type { LocalStack } from "../packages/local-stack/index.ts";
import { startTestStack } from "../packages/testkit/stack.ts";
import { ensureChromium } from "../packages/testkit/chromium.ts";
import { useTestDatabase, waitFor } from "./helpers/db.ts";

const artifacts = fileURLToPath(new URL("../.artifacts/", import.meta.url));
const db = useTestDatabase();
let stack: LocalStack;
let browser: Browser;
let page: Page;
const pageErrors: string[] = [];

// Who asks what: [email, first name, last name, questions, answers saved, thumbs down].
const PEOPLE = [
  ["claire@example.com", "Claire", "Dubois", 5, 3, 2],
  ["marc@example.com", "Marc", "Lefèvre", 2, 2, 0],
  ["ines@example.com", "Inès", null, 3, 0, 1],
] as const;

beforeAll(async () => {
  const chromium = ensureChromium((m) => console.error(`[chromium] ${m}`));
  stack = await startTestStack({
    databaseUrl: db.url,
    functionEnv: { EMBEDDING_PROVIDER: "offline", EMBEDDING_DIMENSIONS: "1536" },
  });
  await db.sql`update cron.job set active = false`;
  // One answer every signed-in user may read, embedded by process-embedding-queue (woken through pg_net).
  await db.sql`create table faq (id int primary key, body text not null)`;
  await db.sql`grant select on faq to authenticated`;
  await db.sql`select register_embedding_source('faq', content_columns => array['body'])`;
  await db.sql`insert into faq values (1, 'Le délai de préavis du bail est de trois mois.')`;
  await waitFor(
    "the answer embedded",
    async () => (await db.sql`select 1 from documentation_embeddings where source_table = 'faq'`).length > 0,
    60_000,
    200,
  );

  for (const [email, first, last, questions, answers, negative] of PEOPLE) {
    const c = createNodeClient(stack.apiUrl, stack.publishableKey);
    const { error } = await c.auth.signUp({
      email,
      password: "a long password",
      options: { data: { first_name: first, ...(last ? { last_name: last } : {}) } },
    });
    expect(error).toBeNull();
    for (let i = 0; i < questions; i++) {
      // Full text: the odd questions find the document, the even ones nothing (unanswered).
      const s = await c.functions.invoke("search", {
        body: { query: i % 2 ? "délai de préavis du bail" : `question introuvable ${i}`, mode: "text" },
      });
      expect(s.error).toBeNull();
      if (i < answers) {
        expect(
          (await c.functions.invoke("conversations", {
            body: { action: "answer", logId: s.data.logId, response: "Réponse." },
          })).error,
        ).toBeNull();
      }
      if (i < negative) {
        expect(
          (await c.functions.invoke("conversations", { body: { action: "feedback", logId: s.data.logId, rating: -1 } }))
            .error,
        ).toBeNull();
      }
    }
  }

  browser = await puppeteer.launch({
    executablePath: chromium,
    headless: true,
    args: ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
  });
  page = await browser.newPage();
  page.on("pageerror", (e) => pageErrors.push(String(e)));
  page.on("console", (m) => {
    if (m.type() === "error") pageErrors.push(m.text());
  });
  await page.setViewport({ width: 1400, height: 1000 });
}, 180_000);

afterAll(async () => {
  await browser?.close();
  await stack?.stop();
});

describe("top users on the dashboard", () => {
  it("shows each user's email, names and numbers as SQL counts them in the conversation log", async () => {
    await page.goto(`${stack.apiUrl}/dashboard`, { waitUntil: "load" });
    await page.type("#key", stack.secretKey);
    await page.click("#key-form button");
    await page.waitForFunction(() => document.querySelectorAll("#top-users tbody tr").length > 0, { timeout: 20_000 });

    // Counted from the tables themselves, not through usage_by_user.
    const expected = await db.sql`
      select u.email, u.first_name, u.last_name, count(*)::int as questions,
             count(*) filter (where c.answered_at is not null)::int as answered,
             count(*) filter (where f.rating < 0)::int as negative,
             count(*) filter (where c.result_count = 0 or c.best_similarity is null and c.mode <> 'text'
                                or c.best_similarity < (select unanswered_similarity_threshold from search_settings))::int as unanswered
        from conversations c join public.users u on u.id = c.user_id left join feedback f on f.conversation_entry_id = c.id
       group by u.email, u.first_name, u.last_name order by questions desc, u.email`;
    expect(expected.map((r) => [r.email, r.questions, r.answered, r.negative])).toEqual(
      [...PEOPLE].sort((a, b) => b[3] - a[3]).map(([email, , , q, a, n]) => [email, q, a, n]),
    );
    const shown = await page.$$eval(
      "#top-users tbody tr",
      (rows) => rows.map((r) => Array.from(r.querySelectorAll("td")).slice(0, 7).map((c) => c.textContent ?? "")),
    );
    expect(shown).toEqual(
      expected.map((
        r,
      ) => [
        r.email,
        r.first_name,
        r.last_name ?? "—",
        ...[r.questions, r.answered, r.negative, r.unanswered].map(String),
      ]),
    );
    expect(expected.map((r) => r.unanswered)).toEqual([3, 2, 1]); // ceil(questions / 2): the even ones
    expect(pageErrors).toEqual([]);

    mkdirSync(artifacts, { recursive: true });
    const section = await page.$("#top-users");
    await section!.scrollIntoView();
    await page.screenshot({ path: `${artifacts}people-dashboard.png`, fullPage: true });
  });
});
