// Rewrites packages/ops/migrations.generated.ts from supabase/migrations (the versions the health
// function compares with the database's migration history).
import { writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { generatedModule, migrationVersionsIn } from "../packages/ops/migrations.ts";

const dir = fileURLToPath(new URL("../supabase/migrations", import.meta.url));
const out = fileURLToPath(new URL("../packages/ops/migrations.generated.ts", import.meta.url));
const versions = migrationVersionsIn(dir);
writeFileSync(out, generatedModule(versions));
console.log(`packages/ops/migrations.generated.ts: ${versions.length} migrations`);
