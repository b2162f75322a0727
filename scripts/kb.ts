// npm run kb -- status | diff | push | restore: promote a knowledge base between Supabase projects.
// Exit codes: 0 done (diff: identical); 1 diff found differences, or a push/restore failed on the
// database and was rolled back; 2 bad input or a refusal (nothing changed); 130 interrupted by
// SIGINT or SIGTERM (the open transaction is rolled back, the target is unchanged).
// Results go to stdout, progress to stderr.
import { existsSync, statSync } from "node:fs";
import { resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { z } from "zod";
import { connectKb } from "../packages/kb/catalog.ts";
import { diffCommand, pushCommand, restoreCommand, statusCommand } from "../packages/kb/commands.ts";
import { KbError } from "../packages/kb/env.ts";
import { pushInFlight } from "../packages/kb/push.ts";

const usage = `usage:
  npm run kb -- status  --env <name> [--json]
  npm run kb -- diff    --from <name> --to <name> [--tables a,b] [--json]
  npm run kb -- push    --from <name> --to <name> [--mode replace|upsert|overwrite] [--tables a,b]
                        [--files bucket1,bucket2] [--dry-run] [--yes] [--allow-empty]
                        [--copy-credential-column table.column]... [--register-missing-sources]
                        [--target-model <model>] [--json]
  npm run kb -- restore <backup-file> --env <name> [--yes]
An environment <name> reads <NAME>_DB_URL (and, for --files, <NAME>_URL and <NAME>_SECRET_KEY or
<NAME>_SERVICE_ROLE_KEY); "local" is the running local stack.
Exit codes: 0 ok, 1 differences (diff) or a failed and rolled-back write, 2 bad input or refusal,
130 interrupted.`;

const repoRoot = fileURLToPath(new URL("../", import.meta.url));

async function main(argv: string[]): Promise<number> {
  const { values: v, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      env: { type: "string" },
      from: { type: "string" },
      to: { type: "string" },
      mode: { type: "string", default: "replace" },
      tables: { type: "string" },
      files: { type: "string" },
      "dry-run": { type: "boolean" },
      yes: { type: "boolean" },
      "allow-empty": { type: "boolean" },
      "copy-credential-column": { type: "string", multiple: true },
      "target-model": { type: "string" },
      "register-missing-sources": { type: "boolean" },
      json: { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
  });
  const [command, ...rest] = positionals;
  if (v.help || !command) {
    console.log(usage);
    return v.help ? 0 : 2;
  }
  const need = (name: "env" | "from" | "to") => {
    const x = v[name];
    if (!x) throw new KbError(`${command} needs --${name} <name>\n${usage}`);
    return x;
  };
  const tables = v.tables ? v.tables.split(",").map((t) => t.trim()).filter(Boolean) : undefined;
  const io = {
    out: (l: string) => console.log(l),
    progress: (l: string) => console.error(l),
    json: !!v.json,
    backupDir: process.env.KB_BACKUP_DIR ? resolve(process.env.KB_BACKUP_DIR) : resolve(repoRoot, ".backups"),
    connect: connectKb,
  };
  switch (command) {
    case "status":
      return await statusCommand(need("env"), io);
    case "diff":
      return await diffCommand(need("from"), need("to"), tables, io);
    case "push": {
      const mode = z.enum(["replace", "upsert", "overwrite"]).safeParse(v.mode);
      if (!mode.success) throw new KbError(`--mode must be replace, upsert or overwrite (got "${v.mode}")`);
      return await pushCommand({
        from: need("from"),
        to: need("to"),
        mode: mode.data,
        tables,
        files: v.files,
        dryRun: !!v["dry-run"],
        yes: !!v.yes,
        allowEmpty: !!v["allow-empty"],
        allowCredentialColumns: v["copy-credential-column"] ?? [],
        registerMissingSources: !!v["register-missing-sources"],
        targetModel: v["target-model"],
      }, io);
    }
    case "restore": {
      const file = rest[0];
      if (!file) throw new KbError(`restore needs a backup file\n${usage}`);
      const path = resolve(file);
      if (!/\.jsonl\.gz$/.test(path) || !existsSync(path) || !statSync(path).isFile()) {
        throw new KbError(`${file} is not a backup file (a .jsonl.gz written by kb push under .backups/)`);
      }
      return await restoreCommand(path, need("env"), !!v.yes, io);
    }
    default:
      throw new KbError(`unknown command "${command}"\n${usage}`);
  }
}

// Ctrl-C or a kill: exiting closes the connections, so the server rolls back the open transaction.
// Until the commit is sent the target is unchanged, and the backup being written is deleted.
function interrupted(signal: string): void {
  if (pushInFlight.committing) {
    console.error(
      `kb: interrupted (${signal}) while the push was committing: it may have been applied; npm run kb -- status shows the last pushes`,
    );
  } else {
    const discarded = pushInFlight.backup?.discard();
    console.error(
      `kb: interrupted: target unchanged (${signal})${
        discarded ? `; the backup it was writing was discarded: ${discarded}` : ""
      }`,
    );
  }
  process.exit(130);
}
process.on("SIGINT", () => interrupted("SIGINT"));
process.on("SIGTERM", () => interrupted("SIGTERM"));

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e) => {
    if (e instanceof KbError) {
      console.error(`kb: ${e.message}`);
      process.exit(e.exitCode);
    }
    if (e && typeof e === "object" && "code" in e && (e as { code: string }).code.startsWith("ERR_PARSE_ARGS")) {
      console.error(`kb: ${(e as Error).message}\n${usage}`);
      process.exit(2);
    }
    console.error(`kb: ${e instanceof Error ? e.message : String(e)}`);
    process.exit(1);
  },
);
