// Runs inside ONE Deno process: imports every function entry's default export and serves them all
// on an internal port, routing `/<name>/...` (the gateway strips `/functions/v1`, as the hosted
// runtime does). Written against globalThis.Deno so the repo's Node typecheck can include it.
//
// argv: <functionsDir> <name>... ; prints `__local_stack_functions_ready__ {"port":…,"loaded":[…],"failed":{…}}`
// when listening (functions may log to stdout too, hence the marker). It exits when its stdin closes, so it never outlives the Node parent, even one killed
// with SIGKILL (the pipe closes with the parent).

type Handler = { fetch: (req: Request, info?: unknown) => Response | Promise<Response> };
interface DenoLike {
  args: string[];
  exit(code: number): never;
  stdin: { readable: ReadableStream<Uint8Array> };
  serve(
    opts: { hostname: string; port: number; onListen: (a: { port: number }) => void },
    h: (req: Request, info: unknown) => Promise<Response>,
  ): unknown;
}
const READY_MARKER = "__local_stack_functions_ready__";
const D = (globalThis as unknown as { Deno: DenoLike }).Deno;

function json(body: unknown, status: number): Response {
  return new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } });
}

async function main() {
  const [dir, ...names] = D.args;
  const handlers = new Map<string, Handler>();
  const failed: Record<string, string> = {};
  for (const name of names) {
    try {
      const mod = await import(new URL(`${name}/index.ts`, `file://${dir.replace(/\/?$/, "/")}`).href);
      const h = mod.default as Handler | undefined;
      if (!h || typeof h.fetch !== "function") throw new Error("index.ts has no default export with fetch()");
      handlers.set(name, h);
    } catch (e) {
      // One broken function must not take the others down; it answers 500 with the reason.
      failed[name] = e instanceof Error ? e.message : String(e);
    }
  }

  D.serve({
    hostname: "127.0.0.1",
    port: 0,
    onListen: ({ port }) =>
      console.log(`${READY_MARKER} ${JSON.stringify({ port, loaded: [...handlers.keys()], failed })}`),
  }, async (req, info) => {
    const url = new URL(req.url);
    const name = url.pathname.split("/")[1] ?? "";
    const h = handlers.get(name);
    if (!h) {
      if (name in failed) {
        return json({ code: "BOOT_ERROR", message: `function ${name} failed to start: ${failed[name]}` }, 503);
      }
      return json({ code: "NOT_FOUND", message: "Requested function was not found" }, 404);
    }
    try {
      return await h.fetch(req, info);
    } catch (e) {
      console.error(`[functions] ${name}: uncaught error:`, e);
      return json({ code: "WORKER_ERROR", message: "Function exited due to an error (please check logs)" }, 500);
    }
  });

  // Parent gone (or asked us to stop by closing the pipe): leave.
  const reader = D.stdin.readable.getReader();
  try {
    while (!(await reader.read()).done) { /* ignore input */ }
  } catch { /* closed */ }
  D.exit(0);
}

await main();

export {};
