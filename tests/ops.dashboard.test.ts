// The dashboard in a real browser: Debian's chromium (installed by the test when missing, as root on
// Debian) driven by puppeteer-core, against the local stack on the real PostgreSQL. The numbers on the
// page must equal what SQL returns, and "retry" on a dead letter must put the job back in the queue.
// Saves .artifacts/dashboard.png.
import { mkdirSync } from "node:fs";
import { fileURLToPath } from "node:url";
import puppeteer, { type Browser, type Page } from "puppeteer-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createNodeClient } from "../packages/connection/node-client.ts";
import { startTestStack } from "../packages/testkit/stack.ts";
import type { LocalStack } from "../packages/local-stack/index.ts";
import { CHECKS } from "../packages/ops/checks.ts";
import { ensureChromium } from "../packages/testkit/chromium.ts";
import { useTestDatabase, waitFor } from "./helpers/db.ts";

const BUCKET = "agentbasic-legifrance-raw";
const artifacts = fileURLToPath(new URL("../.artifacts/", import.meta.url));
const db = useTestDatabase();
let stack: LocalStack;
let browser: Browser;
let page: Page;
let deadJob: number;
let failedFiles: number[];
const CLIENT = "0b1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d";
const pageErrors: string[] = [];

beforeAll(async () => {
  const chromium = ensureChromium((m) => console.error(`[chromium] ${m}`));
  stack = await startTestStack({ databaseUrl: db.url, functionEnv: { EMBEDDING_PROVIDER: "offline" } });
  // This file writes the metrics and drives every step itself; the schedules would race it.
  await db.sql`update cron.job set active = false`;
  await db.sql`select set_environment_label('staging')`;

  // Three collected documents, embedded for real by process-embedding-queue (woken through pg_net).
  for (let i = 1; i <= 3; i++) {
    await db.sql`insert into legal_documents (id, category, doc_type, title, content, file_path)
                 values (${`LEGIARTI00000000000${i}`}, 'codes', 'article', ${`Article ${i}`}, ${`Texte de l'article ${i} du code.`}, ${`codes/LEGIARTI00000000000${i}.json`})`;
  }
  await waitFor(
    "the three documents embedded",
    async () => {
      const [c] = await db
        .sql`select rows_with_embeddings::int as n from embedding_coverage() where source_table = 'legal_documents'`;
      return c?.n === 3;
    },
    60_000,
    200,
  );

  // Two files uploaded through Storage, one queue row whose object is gone: the hourly check finds the
  // drift (and repairs it, marking the row deleted), and the page shows what it found.
  const admin = createNodeClient(stack.apiUrl, stack.serviceRoleKey);
  for (const name of ["codes/a.json", "codes/b.json"]) {
    expect(
      (await admin.storage.from(BUCKET).upload(name, JSON.stringify({ name }), { contentType: "application/json" }))
        .error,
    ).toBeNull();
  }
  await db
    .sql`insert into files_queue (file_path, bucket_id, file_size, status) values ('codes/gone.json', ${BUCKET}, 3, 'pending')`;
  await db.sql`select private.files_queue_check_coherence()`;
  await db
    .sql`update legifrance_crawl_plan set next_page = 4, total_results = 1000, docs_collected = 300 where category = 'codes'`;
  await db
    .sql`update legifrance_crawl_plan set done = true, total_results = 120, next_page = 3, docs_collected = 120 where category = 'cnil'`;

  // A dead letter, and three hours of per-minute samples for the charts.
  const [d] = await db
    .sql`insert into embedding_sync_queue (source_table, source_id, action, content, status, retry_count, last_error)
                           values ('legal_documents', 'LEGIARTI000000000009', 'INSERT', 'x', 'failed', 3, 'provider answered 400: input too long')
                           returning id`;
  deadJob = Number(d.id);
  // Two client documents the files worker gave up on, with its reasons (the files' dead letter).
  const failed = await db
    .sql`insert into files_queue (file_path, bucket_id, file_size, status, attempts, last_error, updated_at)
    values (${`${CLIENT}/scan.pdf`}, 'client-documents', 10, 'failed', 1, 'no extractable text', now() - interval '2 minutes'),
           (${`${CLIENT}/contrat.pdf`}, 'client-documents', 12, 'failed', 1, 'not a PDF (corrupt or mislabelled file)', now() - interval '1 minute')
    returning id`;
  failedFiles = failed.map((f) => Number(f.id));
  await db.sql`select private.ops_check_alerts()`;
  await db.sql`insert into ops_metrics (sampled_at, queue_by_status, files_coherence, files_inserted, jobs_completed)
               select date_trunc('minute', now()) - make_interval(mins => m),
                      jsonb_build_object('pending', 40 + (30 * sin(m / 15.0))::int, 'processing', 4 + m % 5, 'failed', case when m < 60 then 1 else 0 end),
                      '{}'::jsonb, 20 + (m * 7) % 25, 30 + (m * 11) % 40
                 from generate_series(1, 180) m`;

  browser = await puppeteer.launch({
    executablePath: chromium,
    headless: true,
    // Root in a container: chromium's sandbox needs user namespaces it may not have.
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

const cells = (selector: string) =>
  page.$$eval(
    selector,
    (rows) =>
      rows.map((
        r,
      ) => [
        r.getAttribute("data-source") ?? r.getAttribute("data-bucket") ?? r.getAttribute("data-category") ??
          r.getAttribute("data-job") ?? "",
        ...Array.from(r.querySelectorAll("td")).map((c) => c.textContent ?? ""),
      ]),
  );

describe("the dashboard at /dashboard", () => {
  it("shows nothing without a key, then every section once the service key is given (and keeps no copy of it)", async () => {
    await page.goto(`${stack.apiUrl}/dashboard`, { waitUntil: "load" });
    expect(await page.$eval("#key-state", (e) => e.textContent)).toContain("no key");
    expect(await page.$$eval("#checks tbody tr", (r) => r.length)).toBe(0);

    await page.type("#key", stack.serviceRoleKey);
    await page.click("#key-form button");
    await page.waitForFunction(
      () =>
        document.querySelector("#refreshed-at")?.textContent !== "never" &&
        document.querySelectorAll("#coverage tbody tr").length > 0,
      { timeout: 20_000 },
    );
    expect(await page.$eval("#key-state", (e) => e.textContent)).toBe("service key: details shown");
    // Given in the page, never stored by it.
    expect(
      await page.evaluate(
        () => [
          localStorage.length,
          sessionStorage.length,
          document.cookie,
          (document.querySelector("#key") as HTMLInputElement).value,
        ],
      ),
    )
      .toEqual([0, 0, "", ""]);

    expect(await page.$eval("#env-label", (e) => e.textContent)).toBe("staging");
    expect(await page.$eval("#banner", (e) => e.className)).toBe("env-staging");
    const checks = await page.$$eval(
      "#checks tbody tr",
      (rows) => rows.map((r) => [r.getAttribute("data-check"), r.querySelector(".status")?.textContent]),
    );
    expect(checks.map(([n]) => n)).toEqual(CHECKS.map(([n]) => n));
    const shownOverall = await page.$eval("#overall", (e) => e.getAttribute("data-status"));
    const worst = checks.some(([, s]) => s === "fail") ? "fail" : checks.some(([, s]) => s === "warn") ? "warn" : "ok";
    expect(shownOverall).toBe(worst);
    // Both charts are drawn by uPlot (a canvas each), from our own copy of the library.
    expect(await page.$$eval(".uplot canvas", (c) => c.length)).toBe(2);
    expect(pageErrors).toEqual([]);
  });

  it("shows the numbers SQL returns: coverage, Storage ↔ files_queue, the plan, the dead letters", async () => {
    const coverage = await db
      .sql`select source_table, rows::int, rows_with_embeddings::int from embedding_coverage() order by source_table`;
    expect(
      await db
        .sql`select source_table, rows::int, rows_with_embeddings::int from ops_knowledge_base() order by source_table`,
    ).toEqual(coverage);
    expect(coverage).toEqual([
      { source_table: "client_document_pages", rows: 0, rows_with_embeddings: 0 },
      { source_table: "legal_documents", rows: 3, rows_with_embeddings: 3 },
    ]);
    expect(await cells("#coverage tbody tr")).toEqual(
      coverage.map((
        c,
      ) => [
        c.source_table,
        c.source_table,
        String(c.rows),
        String(c.rows_with_embeddings),
        c.rows ? "3 of 3 (100%)" : "—",
      ]),
    );

    const live = await db
      .sql`select bucket_id, storage_count::int, queue_count::int from files_queue_coherence where bucket_id = ${BUCKET}`;
    expect(live).toEqual([{ bucket_id: BUCKET, storage_count: 2, queue_count: 2 }]);
    const [lastCheck] = await db
      .sql`select missing_in_queue::int, queued_without_object::int, alert, marked_deleted::int
                                       from files_queue_coherence_checks where bucket_id = ${BUCKET} order by id desc limit 1`;
    expect(lastCheck).toEqual({ missing_in_queue: 0, queued_without_object: 1, alert: true, marked_deleted: 1 });
    const shownBuckets = await cells("#buckets tbody tr");
    // The two uploads are not collected documents: the files worker (woken by their queue rows) fails them.
    const [{ failed }] = await db.sql`select failed::int from ops_failed_files_count() where bucket_id = ${BUCKET}`;
    expect(shownBuckets.filter((r) => r[0] === BUCKET).map((r) => r.slice(0, 8))).toEqual([[
      BUCKET,
      BUCKET,
      "2",
      "2",
      String(failed),
      "0",
      "1",
      "warn",
    ]]);

    const plan = await db.sql`select category, docs_collected::int from legifrance_crawl_plan order by category`;
    const shownPlan = await cells("#plan tbody tr");
    expect(shownPlan.map((r) => [r[0], r[4]])).toEqual(plan.map((p) => [p.category, String(p.docs_collected)]));
    expect(shownPlan.find((r) => r[0] === "codes")?.[2]).toBe(" 30%");
    expect(shownPlan.find((r) => r[0] === "cnil")?.[2]).toBe(" done");

    const dead = await db.sql`select id from embedding_sync_dead_letter order by id desc`;
    expect((await cells("#dead-letters tbody tr")).map((r) => r[0])).toEqual(dead.map((d) => String(d.id)));
    expect(dead.map((d) => Number(d.id))).toEqual([deadJob]);

    const alerts = await db
      .sql`select kind, message from ops_alerts where resolved_at is null order by opened_at desc, id desc`;
    expect([...new Set(alerts.map((a) => a.kind))].sort()).toEqual(["dead_letters", "failed_files", "files_drift"]);
    expect((await cells("#alerts tbody tr")).map((r) => [r[2], r[3]])).toEqual(alerts.map((a) => [a.kind, a.message]));

    mkdirSync(artifacts, { recursive: true });
    await page.screenshot({ path: `${artifacts}dashboard.png`, fullPage: true });
  });

  it("shows failed files per bucket with their reasons, in the files check and the alerts", async () => {
    const counts = await db.sql`select bucket_id, failed::int from ops_failed_files_count() order by bucket_id`;
    expect(counts.find((c) => c.bucket_id === "client-documents")?.failed).toBe(2);
    const shownBuckets = await cells("#buckets tbody tr");
    expect(shownBuckets.map((r) => [r[0], r[4]])).toEqual(counts.map((c) => [c.bucket_id, String(c.failed)]));
    const files = await page.$$eval(
      "#failed-files tbody tr",
      (rows) =>
        rows.map((r) => [
          r.getAttribute("data-file"),
          ...Array.from(r.querySelectorAll("td")).slice(1, 5).map((c) => c.textContent),
        ]),
    );
    const listed = await db
      .sql`select id::text, bucket_id, file_path, attempts::text, last_error from ops_failed_files(100)`;
    expect(files).toEqual(listed.map((f) => [f.id, f.bucket_id, f.file_path, f.attempts, f.last_error]));
    expect(files.filter((f) => f[1] === "client-documents")).toEqual([
      [
        String(failedFiles[1]),
        "client-documents",
        `${CLIENT}/contrat.pdf`,
        "1",
        "not a PDF (corrupt or mislabelled file)",
      ],
      [String(failedFiles[0]), "client-documents", `${CLIENT}/scan.pdf`, "1", "no extractable text"],
    ]);
    const filesCheck = await page.$eval(
      `#checks tr[data-check="files"]`,
      (r) => [r.querySelector(".status")?.textContent, r.querySelectorAll("td")[2].textContent],
    );
    expect(filesCheck[0]).toBe("warn");
    expect(filesCheck[1]).toMatch(/2 failed file\(s\) in client-documents/);
    expect((await cells("#alerts tbody tr")).filter((r) => r[2] === "failed_files").map((r) => r[3])).toContainEqual(
      expect.stringMatching(/^2 failed file\(s\) in client-documents/),
    );
  });

  it("'retry' on a failed file puts it back in the queue (service role only)", async () => {
    await page.click(`[data-testid="retry-file-${failedFiles[0]}"]`);
    await page.waitForFunction((id) => !document.querySelector(`#failed-files tr[data-file="${id}"]`), {
      timeout: 10_000,
    }, failedFiles[0]);
    const [row] = await db.sql`select status, attempts, last_error from files_queue where id = ${failedFiles[0]}`;
    expect(row).toEqual({ status: "pending", attempts: 0, last_error: null });
    expect((await db.sql`select status from files_queue where id = ${failedFiles[1]}`)[0].status).toBe("failed");
    const asAnon = await fetch(`${stack.apiUrl}/functions/v1/health/retry-files`, {
      method: "POST",
      headers: { apikey: stack.publishableKey },
      body: JSON.stringify({ ids: [failedFiles[1]] }),
    });
    expect(asAnon.status).toBe(403);
    expect((await db.sql`select status from files_queue where id = ${failedFiles[1]}`)[0].status).toBe("failed");
    expect(pageErrors).toEqual([]);
  });

  it("'retry' on a dead letter puts the job back in the queue", async () => {
    await page.click(`[data-testid="retry-${deadJob}"]`);
    await page.waitForFunction((id) => !document.querySelector(`#dead-letters tr[data-job="${id}"]`), {
      timeout: 10_000,
    }, deadJob);
    // Back to pending; the queue's own wake-up may already have had a worker claim and complete it,
    // so any state past 'failed' with the retry count reset is the job having gone back in the queue.
    const job = await waitFor("the job back in the queue", async () => {
      const [j] = await db.sql`select status, retry_count, last_error from embedding_sync_queue where id = ${deadJob}`;
      return j && j.status !== "failed" ? j : null;
    });
    expect(["pending", "processing", "completed"]).toContain(job.status);
    expect(job.last_error).toBeNull();
    expect((await db.sql`select count(*)::int as n from embedding_sync_dead_letter`)[0].n).toBe(0);
    expect(pageErrors).toEqual([]);
  });

  it("a non-service key sees the status and environment only, and cannot retry", async () => {
    const anonPage = await browser.newPage();
    try {
      await anonPage.goto(`${stack.apiUrl}/dashboard`, { waitUntil: "load" });
      await anonPage.type("#key", stack.anonKey);
      await anonPage.click("#key-form button");
      await anonPage.waitForFunction(() => document.querySelector("#refreshed-at")?.textContent !== "never", {
        timeout: 20_000,
      });
      expect(await anonPage.$eval("#key-state", (e) => e.textContent)).toBe("not a service key: status only");
      expect(await anonPage.$eval("#env-label", (e) => e.textContent)).toBe("staging");
      expect(await anonPage.$$eval("#dead-letters tbody tr", (r) => r.length)).toBe(0);
      expect(await anonPage.$$eval("#checks tbody tr td:last-child", (c) => c.map((x) => x.textContent))).toEqual(
        CHECKS.map(() => "service key needed for details"),
      );
    } finally {
      await anonPage.close();
    }
  });

  it("says 'no data yet' where a chart has no sample", async () => {
    await db.sql`delete from ops_metrics`;
    await page.goto(`${stack.apiUrl}/dashboard`, { waitUntil: "load" });
    await page.type("#key", stack.serviceRoleKey);
    await page.click("#key-form button");
    await page.waitForFunction(() => document.querySelectorAll("[data-testid=no-data]").length === 2, {
      timeout: 20_000,
    });
    expect(await page.$$eval("[data-testid=no-data]", (e) => e.map((x) => x.textContent))).toEqual([
      "jobs by status: no data yet (ops_metrics has no sample in this window)",
      "per minute: no data yet (ops_metrics has no sample in this window)",
    ]);
    expect(await page.$$eval(".uplot canvas", (c) => c.length)).toBe(0);
    mkdirSync(artifacts, { recursive: true });
    await page.screenshot({ path: `${artifacts}dashboard-no-data.png`, fullPage: true });
    expect(pageErrors).toEqual([]);
  });

  it("refreshes itself", async () => {
    await page.goto(`${stack.apiUrl}/dashboard?refresh=2`, { waitUntil: "load" });
    await page.type("#key", stack.serviceRoleKey);
    await page.click("#key-form button");
    await page.waitForFunction(() => document.querySelectorAll("#checks tbody tr").length > 0, { timeout: 20_000 });
    await db.sql`select set_environment_label('production')`;
    await page.waitForFunction(() => document.querySelector("#env-label")?.textContent === "production", {
      timeout: 15_000,
    });
    expect(await page.$eval("#banner", (e) => e.className)).toBe("env-production");
  });
});
