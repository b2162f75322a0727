// npm run adopt -- <path to an existing Supabase project>
// Copies this project's edge functions, the runtime code they import and their import map into that
// project, merges their [functions.*] settings into its config.toml, and writes our migrations after
// its latest one, recording all of it in supabase/vector-sync.manifest.json. Run it again with a newer
// version of this project to upgrade: only new migrations are added, and nothing the user changed is
// overwritten (the run refuses, writing nothing). Exit code 0 on success, 1 on refusal or error.
import { existsSync, statSync } from "node:fs";
import { resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { z } from "zod";
import { applyPlan, MANIFEST, planAdoption } from "./adopt/adopt.ts";

const sourceRoot = fileURLToPath(new URL("../", import.meta.url));

const projectArg = z
  .string()
  .min(1, "is not a path")
  // npm runs scripts from the package root; a relative path means one from where npm was run.
  .transform((p) => resolve(process.env.INIT_CWD ?? process.cwd(), p))
  .refine((p) => existsSync(p) && statSync(p).isDirectory(), "is not a directory")
  .refine(
    (p) => existsSync(resolve(p, "supabase/config.toml")),
    "has no supabase/config.toml (run `supabase init` there first)",
  )
  .refine((p) => p !== resolve(sourceRoot), "is this project itself");

const args = process.argv.slice(2).filter((a) => a !== "--");
if (args.length !== 1) {
  console.error("usage: npm run adopt -- <path to an existing Supabase project>");
  process.exit(1);
}
const parsed = projectArg.safeParse(args[0]);
if (!parsed.success) {
  console.error(`adopt: ${args[0]} ${parsed.error.issues[0].message}`);
  process.exit(1);
}
const project = parsed.data;

try {
  const plan = planAdoption(sourceRoot, project);
  for (const w of plan.warnings) console.error(`adopt: note: ${w}`);
  if (plan.conflicts.length) {
    console.error(
      "adopt: refused, nothing was written. These would be overwritten, and they are not what the last adopt wrote:\n" +
        plan.conflicts.map((c) => `  ${c}`).join("\n") +
        `\nMove your changes out of these files (or undo them), then run adopt again. ${MANIFEST} records what adopt wrote.`,
    );
    process.exit(1);
  }
  applyPlan(project, plan);
  const code = [...plan.writes.keys()].filter((p) => !p.startsWith("supabase/migrations/")).length;
  console.log(
    `adopt: ${plan.newMigrations.length} new migration(s), ${code} file(s) written, ${plan.deletes.length} removed`,
  );
  for (const m of plan.newMigrations) console.log(`  supabase/migrations/${m.file}  (ours: ${m.source})`);
  console.log(
    plan.newMigrations.length
      ? "Next: supabase db push, then supabase functions deploy."
      : "Next: supabase functions deploy.",
  );
} catch (e) {
  console.error(`adopt: ${e instanceof Error ? e.message : String(e)}`);
  process.exit(1);
}
