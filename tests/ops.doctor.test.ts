// `npm run doctor`: the same checks from a machine with only a database URL; a table, --json in the
// function's shape, a non-zero exit when a check fails. And the function's build-time migration list.
import { execFile, spawn } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { CHECKS } from "../packages/ops/checks.ts";
import { MIGRATIONS_DIR, resolveDbUrl } from "../packages/ops/cli.ts";
import { migrationVersionsIn } from "../packages/ops/migrations.ts";
import { SHIPPED_MIGRATIONS } from "../packages/ops/migrations.generated.ts";
import { healthReportSchema } from "../packages/ops/report.ts";
import { useTestDatabase } from "./helpers/db.ts";

const db = useTestDatabase();
const root = fileURLToPath(new URL("../", import.meta.url));

function doctor(
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  // Only what an operator's shell would have: no function secrets.
  const base = Object.fromEntries(
    Object.entries(process.env).filter(([k]) => !k.startsWith("EMBEDDING_") && k !== "OPENAI_API_KEY"),
  );
  return new Promise((resolve) => {
    execFile("node_modules/.bin/tsx", ["scripts/doctor.ts", ...args], {
      cwd: root,
      env: { ...base, ...env } as NodeJS.ProcessEnv,
    }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === "number" ? err.code : 1) : 0, stdout, stderr });
    });
  });
}

describe("npm run doctor", () => {
  it("prints every check in a table and exits 1 while a check fails (no Vault entries yet)", async () => {
    const r = await doctor(["--env", "qa"], { QA_DB_URL: db.url });
    expect(r.code).toBe(1);
    const lines = r.stdout.split("\n");
    for (const [name] of CHECKS) expect(lines.some((l) => l.startsWith(name + " ")), name).toBe(true);
    expect(lines.find((l) => l.startsWith("vault "))).toMatch(
      /FAIL\s+Vault entries missing: project_url, secret_key \(or the legacy service_role_key\)/,
    );
    expect(r.stdout).toContain("environment: (no label)");
  });

  it("--json prints the function's shape; exit 0 once nothing fails, with the label", async () => {
    await db.sql`select vault.create_secret('http://127.0.0.1:1', 'project_url')`;
    await db.sql`select vault.create_secret('local-only-test-key', 'service_role_key')`;
    await db.sql`select set_environment_label('qa-env')`;
    // Nothing runs this database's schedules: paused, they are a warning; active, they would fail as late.
    await db.sql`update cron.job set active = false`;
    const r = await doctor(["--env", "qa", "--json"], { QA_DB_URL: db.url });
    const report = healthReportSchema.parse(JSON.parse(r.stdout));
    expect(report.checks.filter((c) => c.status === "fail")).toEqual([]);
    expect(r.code).toBe(0);
    expect(report.environment).toBe("qa-env");
    expect(report.checks.map((c) => c.name)).toEqual(CHECKS.map(([n]) => n));
    expect(report.checks.find((c) => c.name === "migrations")?.data).toMatchObject({
      expected: migrationVersionsIn(MIGRATIONS_DIR).length,
      missing: [],
    });
    expect(r.stdout).not.toContain("local-only-test-key");
  });

  it("names what is missing instead of guessing a database", async () => {
    const r = await doctor(["--env", "nowhere"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("NOWHERE_DB_URL is not set");
    expect(() => resolveDbUrl("../etc")).toThrow(/invalid environment name/);
    expect(() => resolveDbUrl("x", { X_DB_URL: "http://example.invalid" })).toThrow(/not a postgres/);
  });
});

describe("npm run dashboard", () => {
  it("serves the page and the health API against <NAME>_DB_URL, behind the session key it prints", async () => {
    const child = spawn("node_modules/.bin/tsx", ["scripts/dashboard.ts", "--env", "qa", "--port", "0"], {
      cwd: root,
      env: { ...process.env, QA_DB_URL: db.url },
      stdio: ["ignore", "pipe", "inherit"],
    });
    try {
      let out = "";
      child.stdout!.on("data", (d) => (out += d));
      const deadline = Date.now() + 30_000;
      while (!/Session key.*: (\S+)/.test(out)) {
        if (Date.now() > deadline || child.exitCode !== null) throw new Error(`dashboard did not start: ${out}`);
        await new Promise((r) => setTimeout(r, 50));
      }
      const base = /(http:\/\/127\.0\.0\.1:\d+)\/dashboard/.exec(out)![1];
      const key = /Session key.*: (\S+)/.exec(out)![1];
      const page = await fetch(`${base}/dashboard`);
      expect(page.headers.get("content-type")).toContain("text/html");
      expect(await page.text()).toContain('<div id="env-label"');
      const lib = await fetch(`${base}/dashboard/uPlot.iife.min.js`);
      expect(await lib.text()).toContain("uPlot");
      expect((await fetch(`${base}/dashboard/../package.json`)).status).toBe(404);
      expect((await fetch(`${base}/functions/v1/health/dashboard`)).status).toBe(401);
      expect((await fetch(`${base}/functions/v1/health`, { headers: { authorization: "Bearer wrong" } })).status).toBe(
        401,
      );
      const r = await fetch(`${base}/functions/v1/health/dashboard?hours=2`, {
        headers: { authorization: `Bearer ${key}` },
      });
      expect(r.status).toBe(200);
      const body = await r.json();
      expect(body.report.environment).toBe("qa-env");
      expect(body.report.checks.map((c: { name: string }) => c.name)).toEqual(CHECKS.map(([n]) => n));
    } finally {
      child.kill("SIGTERM");
    }
  });

  it("--env local reads the running local stack's database URL", () => {
    const dir = mkdtempSync(join(tmpdir(), "ops-local-"));
    writeFileSync(
      join(dir, "stack.json"),
      JSON.stringify({ pid: process.pid, dbUrl: "postgres://u:p@127.0.0.1:54322/postgres" }),
    );
    expect(resolveDbUrl("local", {}, dir)).toBe("postgres://u:p@127.0.0.1:54322/postgres");
    expect(resolveDbUrl("local", { LOCAL_DB_URL: "postgres://x@h/db" }, dir)).toBe("postgres://x@h/db");
    expect(() => resolveDbUrl("local", {}, join(dir, "none"))).toThrow(/local stack is not running/);
  });
});

describe("packages/ops/migrations.generated.ts", () => {
  it("lists exactly supabase/migrations (regenerate with: npm run ops:migrations)", () => {
    expect([...SHIPPED_MIGRATIONS]).toEqual(migrationVersionsIn(MIGRATIONS_DIR));
  });
});
