// npm start: the whole system on this machine, no Docker and no keys (see docs/local-stack.md).
// Embedded PGlite (or DATABASE_URL), the gateway on 127.0.0.1:54321, every edge function in one
// Deno process, the pg_net sender and pg_cron ticker, the offline embeddings provider and the
// Légifrance stand-in unless real credentials are given; then a guided demo on faq_items (not in a
// DATABASE_URL the user gave, unless LOCAL_STACK_DEMO=1).
// Ctrl-C / SIGTERM stops everything it started.
import { readFileSync } from "node:fs";
import { type LocalStack, startLocalStack } from "../packages/local-stack/index.ts";
import { localDataDir, processAlive, readState } from "../packages/connection/stack-state.ts";
import { guidedDemoEnabled, runGuidedDemo } from "../packages/local-stack/demo.ts";
import { type PisteStandIn, startPisteStandIn } from "../packages/testkit/legifrance-stand-in.ts";

const dataDir = localDataDir();
const env = process.env;
const say = (line: string) => console.log(line);

const running = readState(dataDir).state;
if (running) {
  console.error(
    `The local stack is already running (pid ${running.pid}, ${running.apiUrl}). Stop it first (Ctrl-C in its terminal).`,
  );
  process.exit(1);
}

let stack: LocalStack | null = null;
let piste: PisteStandIn | null = null;
let stopping = false;
let stopStartedAt = 0;

// One Ctrl-C or `kill` of the process group reaches this process directly and once more through
// npm, which forwards SIGINT and SIGTERM to its child: repeats within this window are that same
// stop. A signal after it means "stop now".
const REPEAT_WINDOW_MS = 3000;
// A stop takes a few seconds at most; past this, what is left is abandoned with an exit code of 1
// (the Deno child leaves on its own when its stdin pipe closes).
const STOP_DEADLINE_MS = 10_000;

async function shutdown(signal: string, code = 0): Promise<void> {
  if (stopping) {
    if (Date.now() - stopStartedAt < REPEAT_WINDOW_MS) return;
    console.error("forced exit");
    process.exit(1);
  }
  stopping = true;
  stopStartedAt = Date.now();
  say(`\n${signal}: stopping the local stack…`);
  setTimeout(() => {
    console.error(`forced exit: the stack did not stop within ${STOP_DEADLINE_MS / 1000} s`);
    process.exit(1);
  }, STOP_DEADLINE_MS).unref();
  await stack?.stop();
  await piste?.stop();
  say(
    `stopped (database, gateway, functions, pg_net sender, cron ticker) in ${
      ((Date.now() - stopStartedAt) / 1000).toFixed(1)
    } s.`,
  );
  process.exit(code);
}
process.on("SIGINT", () => void shutdown("SIGINT"));
process.on("SIGTERM", () => void shutdown("SIGTERM"));
process.on("SIGHUP", () => void shutdown("SIGHUP"));

// `npm start` runs us as npm → node (`exec node --import tsx`: no tsx CLI in between, whose own
// signal relay kills its child with SIGKILL when the child is slow to acknowledge a signal). A
// SIGKILL of npm never reaches us, which would leave this stack running with nobody to stop it. So, when launched by
// npm, we watch the launchers up to the npm process and stop when any of them is gone. (Started
// any other way, signals are enough.)
function launchers(): number[] {
  const out: number[] = [];
  let pid = process.ppid;
  for (let i = 0; i < 4 && pid > 1; i++) {
    out.push(pid);
    let stat: string;
    try {
      stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    } catch {
      return []; // no procfs
    }
    if (/^\d+ \(npm[^)]*\)/.test(stat)) return out;
    pid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
  }
  return [];
}
const watched = launchers();
setInterval(() => {
  if (!stopping && watched.some((pid) => !processAlive(pid))) void shutdown("launcher exited");
}, 1000).unref();

try {
  const functionEnv: Record<string, string> = {};
  const pass = (...names: string[]) => names.forEach((n) => env[n] && (functionEnv[n] = env[n]!));

  // Embeddings: real OpenAI with a key (the user's choice), else the offline lexical provider.
  pass("OPENAI_API_KEY", "OPENAI_BASE_URL", "EMBEDDING_MODEL", "EMBEDDING_DIMENSIONS", "EMBEDDING_PROVIDER");
  const embeddingProvider = env.EMBEDDING_PROVIDER ?? (env.OPENAI_API_KEY ? "openai" : "offline");
  functionEnv.EMBEDDING_PROVIDER = embeddingProvider;

  // Légifrance: the real PISTE API with credentials, else the stand-in serving sample documents.
  let legifrance: string;
  if (env.PISTE_CLIENT_ID && env.PISTE_CLIENT_SECRET) {
    pass("PISTE_CLIENT_ID", "PISTE_CLIENT_SECRET", "PISTE_OAUTH_URL", "PISTE_API_URL");
    legifrance = "piste";
  } else {
    piste = await startPisteStandIn({ port: 0 });
    Object.assign(functionEnv, {
      PISTE_OAUTH_URL: piste.oauthUrl,
      PISTE_API_URL: piste.apiUrl,
      PISTE_CLIENT_ID: piste.clientId,
      PISTE_CLIENT_SECRET: piste.clientSecret,
    });
    legifrance = "stand-in";
  }
  pass("LEGIFRANCE_BUCKET");

  stack = await startLocalStack({
    databaseUrl: env.DATABASE_URL || undefined,
    dataDir,
    port: env.API_PORT ? Number(env.API_PORT) : 54321,
    functionEnv,
    log: (line) => console.log(`  ${line}`),
    statusExtra: {
      EMBEDDING_PROVIDER: embeddingProvider,
      LEGIFRANCE_PROVIDER: legifrance,
      PISTE_API_URL: functionEnv.PISTE_API_URL ?? "(default)",
    },
  });
  // From process start (tsx included), which is what a user waits for after `npm start`.
  const readyS = (process.uptime()).toFixed(1);
  const s = readState(dataDir).state!;
  say("");
  say(`Local stack ready in ${readyS} s (stack ${(stack.startupMs / 1000).toFixed(1)} s) — LOCAL ONLY, no Docker`);
  say(`  API gateway      ${stack.apiUrl}   (/functions/v1/<name>, /storage/v1)`);
  say(
    `  Database         ${stack.dbUrl}   (${
      s.database === "pglite" ? `embedded PGlite + pgvector, data in ${dataDir}/pglite` : "DATABASE_URL"
    })`,
  );
  say(
    `  Functions        ${stack.functions.join(", ") || "(none yet)"}   (one Deno process, pid ${stack.functionsPid})`,
  );
  for (const [name, err] of Object.entries(s.functionsFailed)) say(`    ! ${name} failed to load: ${err}`);
  say(`  Storage          ${stack.storageRoot}`);
  say(`  pg_net           ${s.pgNet}; pg_cron: ${s.pgCron}`);
  say(
    `  Embeddings       ${
      embeddingProvider === "offline"
        ? "offline provider (deterministic, lexical — NOT semantic, local only)"
        : `OpenAI (${env.OPENAI_BASE_URL ?? "api"})`
    }`,
  );
  say(
    `  Légifrance       ${
      legifrance === "stand-in"
        ? `stand-in with sample documents at ${piste!.apiUrl} (NOT the real PISTE API)`
        : "real PISTE API"
    }`,
  );
  say(`  Keys             anon and service_role JWTs signed with a local secret (${dataDir}/jwt-secret): local-only`);
  say(
    `  npm run status   prints API_URL, DB_URL, PUBLISHABLE_KEY, SECRET_KEY, ANON_KEY, SERVICE_ROLE_KEY, … as KEY=value lines`,
  );
  say("");

  if (guidedDemoEnabled(env)) {
    await runGuidedDemo(stack, say, embeddingProvider).catch((e) =>
      say(`demo failed: ${e instanceof Error ? e.message : e}`)
    );
  }
  say("Running. Ctrl-C to stop.");
} catch (e) {
  console.error(`npm start failed: ${e instanceof Error ? e.message : e}`);
  if ((e as NodeJS.ErrnoException).code === "EADDRINUSE") {
    console.error(
      "A port is taken (another local stack, or `supabase start`?). Stop it, or set API_PORT (and DATABASE_URL) to run elsewhere.",
    );
  }
  await shutdown("error", 1);
}
