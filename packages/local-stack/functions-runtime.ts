// Starts the single Deno process that serves every edge function, and stops it without orphans.
import { type ChildProcess, spawn } from "node:child_process";
import { tmpdir } from "node:os";
import { fileURLToPath } from "node:url";
import { listFunctions } from "./function-config.ts";

const root = fileURLToPath(new URL("../../", import.meta.url));
const serverScript = fileURLToPath(new URL("./deno/functions-server.ts", import.meta.url));
const READY_MARKER = "__local_stack_functions_ready__";

export interface FunctionsRuntime {
  url: string; // http://127.0.0.1:<internal port>
  pid: number;
  loaded: string[];
  failed: Record<string, string>;
  stop(): Promise<void>;
}

export interface FunctionsRuntimeOptions {
  functionsDir: string;
  env: Record<string, string>;
  log: (line: string) => void;
  readyTimeoutMs?: number;
  /** Called when the process exits on its own (a crash, a function calling Deno.exit), not via stop(). */
  onUnexpectedExit?: (code: number | null, signal: NodeJS.Signals | null) => void;
}

export async function startFunctionsRuntime(opts: FunctionsRuntimeOptions): Promise<FunctionsRuntime> {
  const names = listFunctions(opts.functionsDir);
  const deno = fileURLToPath(new URL("node_modules/.bin/deno", `file://${root}`));
  // Explicit permissions: network (DB, gateway, providers), env, system info (postgres.js asks for
  // the host name), reading the repo and the functions, writing only the temp dir (the platform
  // offers /tmp). No subprocess: functions on the platform cannot spawn one.
  const tmp = tmpdir();
  const readable = [...new Set([root, opts.functionsDir, tmp])].join(",");
  const args = [
    "run",
    "--no-prompt",
    "--allow-net",
    "--allow-env",
    `--allow-read=${readable}`,
    `--allow-write=${tmp}`,
    "--allow-sys",
    serverScript,
    opts.functionsDir,
    ...names,
  ];
  const child = spawn(deno, args, {
    cwd: root,
    // Like the hosted runtime, functions see only the platform variables and their secrets, plus
    // what Deno itself needs to find its cache.
    env: {
      PATH: process.env.PATH ?? "/usr/bin:/bin",
      HOME: process.env.HOME ?? "/tmp",
      ...(process.env.DENO_DIR ? { DENO_DIR: process.env.DENO_DIR } : {}),
      NO_COLOR: "1",
      ...opts.env,
    },
    stdio: ["pipe", "pipe", "pipe"],
  });
  let exitSignal: NodeJS.Signals | null = null;
  const exited = new Promise<number | null>((resolve) =>
    child.once("exit", (code, signal) => {
      exitSignal = signal;
      resolve(code);
    })
  );

  const ready = await new Promise<{ port: number; loaded: string[]; failed: Record<string, string> }>(
    (resolve, reject) => {
      let buf = "";
      let done = false;
      const timer = setTimeout(
        () => finish(new Error(`Deno functions runtime not ready after ${opts.readyTimeoutMs ?? 30000} ms`)),
        opts.readyTimeoutMs ?? 30000,
      );
      function finish(err: Error | null, value?: { port: number; loaded: string[]; failed: Record<string, string> }) {
        if (done) return;
        done = true;
        clearTimeout(timer);
        if (err) reject(err);
        else resolve(value!);
      }
      child.stdout!.on("data", (d: Buffer) => {
        buf += d.toString();
        let nl: number;
        while ((nl = buf.indexOf("\n")) >= 0) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          if (!done && line.startsWith(READY_MARKER)) finish(null, JSON.parse(line.slice(READY_MARKER.length)));
          else if (line.trim()) opts.log(`[functions] ${line}`);
        }
      });
      child.stderr!.on("data", (d: Buffer) => {
        for (const line of d.toString().split("\n")) if (line.trim()) opts.log(`[functions] ${line}`);
      });
      child.once("error", (e) => finish(e));
      child.once(
        "exit",
        (code) => finish(new Error(`Deno functions runtime exited with code ${code} before it was ready`)),
      );
    },
  ).catch(async (e) => {
    await killChild(child, exited);
    throw e;
  });

  for (const [name, err] of Object.entries(ready.failed)) opts.log(`[functions] ${name} failed to load: ${err}`);
  let stopping = false;
  void exited.then((code) => {
    if (!stopping) opts.onUnexpectedExit?.(code, exitSignal);
  });
  return {
    url: `http://127.0.0.1:${ready.port}`,
    pid: child.pid!,
    loaded: ready.loaded,
    failed: ready.failed,
    stop: () => {
      stopping = true;
      return killChild(child, exited);
    },
  };
}

/** Closing stdin asks Deno to leave; SIGTERM then SIGKILL if it does not within a few seconds. */
async function killChild(child: ChildProcess, exited: Promise<number | null>): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.stdin?.end();
  const gone = (ms: number) =>
    Promise.race([exited.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), ms))]);
  if (await gone(1500)) return;
  child.kill("SIGTERM");
  if (await gone(2000)) return;
  child.kill("SIGKILL");
  await exited;
}
