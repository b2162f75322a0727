// `npm run doctor`: the same checks from a machine with only a database URL; a table, --json in the
// function's shape, a non-zero exit when a check fails. And the function's build-time migration list.
import { execFile } from "node:child_process";
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

function doctor(args: string[], env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  // Only what an operator's shell would have: no function secrets.
  const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("EMBEDDING_") && k !== "OPENAI_API_KEY"));
  return new Promise((resolve) => {
    execFile("node_modules/.bin/tsx", ["scripts/doctor.ts", ...args], { cwd: root, env: { ...base, ...env } as NodeJS.ProcessEnv }, (err, stdout, stderr) => {
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
    expect(lines.find((l) => l.startsWith("vault "))).toMatch(/FAIL\s+Vault entries missing: project_url, service_role_key/);
    expect(r.stdout).toContain("environment: (no label)");
  });

  it("--json prints the function's shape; exit 0 once nothing fails, with the label", async () => {
    await db.sql`select vault.create_secret('http://127.0.0.1:1', 'project_url')`;
    await db.sql`select vault.create_secret('local-only-test-key', 'service_role_key')`;
    await db.sql`select set_environment_label('qa-env')`;
    const r = await doctor(["--env", "qa", "--json"], { QA_DB_URL: db.url });
    const report = healthReportSchema.parse(JSON.parse(r.stdout));
    expect(report.checks.filter((c) => c.status === "fail")).toEqual([]);
    expect(r.code).toBe(0);
    expect(report.environment).toBe("qa-env");
    expect(report.checks.map((c) => c.name)).toEqual(CHECKS.map(([n]) => n));
    expect(report.checks.find((c) => c.name === "migrations")?.data).toMatchObject({ expected: migrationVersionsIn(MIGRATIONS_DIR).length, missing: [] });
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

describe("packages/ops/migrations.generated.ts", () => {
  it("lists exactly supabase/migrations (regenerate with: npm run ops:migrations)", () => {
    expect([...SHIPPED_MIGRATIONS]).toEqual(migrationVersionsIn(MIGRATIONS_DIR));
  });
});
