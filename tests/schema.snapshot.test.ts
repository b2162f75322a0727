import { readFileSync } from "node:fs";
import { describe, expect, inject, it } from "vitest";
import { buildSchemaSnapshot, SNAPSHOT_FILE } from "../packages/testkit/schema-snapshot.ts";

// supabase/schema.sql is the schema the migrations build, for reviewers to read in one file; a
// migration that changes the schema changes it too (regenerate with: npm run db:snapshot).
describe("schema snapshot", () => {
  it(`${SNAPSHOT_FILE} is what the migrations build`, async () => {
    const built = await buildSchemaSnapshot(inject("adminUrl"));
    const committed = readFileSync(SNAPSHOT_FILE, "utf8");
    // On a difference, vitest prints a line diff whose context names the objects (each follows a
    // "-- name; Type: …; Schema: …" line).
    expect(built, `the migrations no longer build ${SNAPSHOT_FILE}; if that is intended: npm run db:snapshot`).toEqual(
      committed,
    );
  }, 120_000);
});
