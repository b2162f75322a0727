// npm run db:snapshot — rewrites supabase/schema.sql from a freshly migrated database (see
// packages/testkit/schema-snapshot.ts); tests/schema.snapshot.test.ts fails until it is committed.
import { writeFileSync } from "node:fs";
import { buildSchemaSnapshot, SNAPSHOT_FILE } from "../packages/testkit/schema-snapshot.ts";
import { ensureTestServer } from "../packages/testkit/testbed.ts";

const adminUrl = await ensureTestServer((m) => console.error(`[testbed] ${m}`));
const schema = await buildSchemaSnapshot(adminUrl);
writeFileSync(SNAPSHOT_FILE, schema);
console.log(`${SNAPSHOT_FILE}: ${schema.split("\n").length} lines`);
