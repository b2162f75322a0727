// npm run dashboard -- --env <name> [--port N]: the local stack's /dashboard page, served on this
// machine against another project's database (<NAME>_DB_URL), for a hosted project or when its
// functions are down. The page's API is the health handler itself, run here. Its key is a random
// session key printed below (this server knows no project secret to check a service key against).
import { randomBytes, timingSafeEqual } from "node:crypto";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { Readable } from "node:stream";
import { connectDb } from "../packages/core/db.ts";
import { MIGRATIONS_DIR, parseArgs, resolveDbUrl } from "../packages/ops/cli.ts";
import { dashboardAsset } from "../packages/ops/dashboard-assets.ts";
import { unauthorizedResponse } from "../packages/core/http.ts";
import { createHealthHandler } from "../packages/ops/handler.ts";
import { migrationVersionsIn } from "../packages/ops/migrations.ts";

let args, url: string;
try {
  args = parseArgs(process.argv.slice(2));
  url = resolveDbUrl(args.env);
} catch (e) {
  console.error(`dashboard: ${(e as Error).message}`);
  process.exit(2);
}
const sessionKey = randomBytes(24).toString("base64url");
const sql = connectDb(url, { max: 4, connect_timeout: 5 });
const expectedMigrations = migrationVersionsIn(MIGRATIONS_DIR);
const hasEmbeddingEnv = Object.keys(process.env).some((k) => k.startsWith("EMBEDDING_") || k === "OPENAI_API_KEY");

const handle = createHealthHandler({
  sql: () => sql,
  authorize: (req) => {
    const token = (req.headers.get("authorization") ?? "").replace(/^Bearer\s+/i, "");
    const a = Buffer.from(token), b = Buffer.from(sessionKey);
    return a.length === b.length && timingSafeEqual(a, b) ? { ok: true, value: "service_role" } : {
      ok: false,
      response: unauthorizedResponse(
        token ? "not this dashboard's session key" : "missing credentials (paste the session key)",
      ),
    };
  },
  options: () => ({ expectedMigrations, embeddingEnv: hasEmbeddingEnv ? process.env : null }),
});

const server = createServer(async (req, res) => {
  try {
    const path = (req.url ?? "/").split("?")[0];
    let r: Response | null = null;
    if (path === "/") r = new Response(null, { status: 302, headers: { location: "/dashboard" } });
    else if (path === "/dashboard" || path.startsWith("/dashboard/")) r = await dashboardAsset(path);
    else if (path === "/functions/v1/health" || path.startsWith("/functions/v1/health/")) {
      const hasBody = req.method === "POST";
      r = await handle(
        new Request(`http://127.0.0.1${req.url}`, {
          method: req.method,
          headers: req.headers as Record<string, string>,
          body: hasBody ? (Readable.toWeb(req) as ReadableStream) : undefined,
          // @ts-expect-error Node's fetch needs duplex for a streamed body; the DOM type lacks it.
          duplex: hasBody ? "half" : undefined,
        }),
      );
    }
    r ??= Response.json({ error: "not found" }, { status: 404 });
    res.writeHead(r.status, Object.fromEntries(r.headers));
    res.end(Buffer.from(await r.arrayBuffer()));
  } catch (e) {
    if (!res.headersSent) res.writeHead(500, { "content-type": "application/json" });
    res.end(JSON.stringify({ error: (e as Error).message }));
  }
});
server.listen(args.port ?? 54330, "127.0.0.1", () => {
  const { port } = server.address() as AddressInfo;
  console.log(`Dashboard for "${args.env}": http://127.0.0.1:${port}/dashboard`);
  console.log(`Session key (paste it in the page; valid while this runs): ${sessionKey}`);
});
const stop = () => {
  server.close();
  server.closeAllConnections();
  void sql.end({ timeout: 2 }).then(() => process.exit(0));
};
process.on("SIGINT", stop);
process.on("SIGTERM", stop);
