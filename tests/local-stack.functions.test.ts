// The gateway's /functions/v1 routes and the single Deno process behind them, driven with supabase-js.
import { spawn } from "node:child_process";
import { request } from "node:http";
import { mkdtempSync } from "node:fs";
import { rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createNodeClient } from "../packages/connection/node-client.ts";
import { FUNCTION_BODY_LIMIT_BYTES } from "../packages/local-stack/gateway.ts";
import { signRoleKey } from "../packages/local-stack/keys.ts";
import { processAlive } from "../packages/connection/stack-state.ts";
import { FIXTURE_CONFIG, FIXTURE_FUNCTIONS_DIR, startTestStack } from "../packages/testkit/stack.ts";
import type { LocalStack } from "../packages/local-stack/index.ts";
import { useTestDatabase, waitFor } from "./helpers/db.ts";

const db = useTestDatabase();
let stack: LocalStack;

beforeAll(async () => {
  process.env.SOME_PARENT_ONLY_VAR = "must-not-leak";
  stack = await startTestStack({
    databaseUrl: db.url,
    functionsDir: FIXTURE_FUNCTIONS_DIR,
    configFile: FIXTURE_CONFIG,
    functionEnv: { FIXTURE_SECRET: "from-functionEnv" },
  });
}, 60_000);
afterAll(async () => {
  await stack?.stop();
});

/**
 * A raw HTTP request: the path is sent byte for byte (fetch would resolve `..`), and a body given as
 * chunks goes out chunked, without content-length.
 */
function rawRequest(
  method: string,
  path: string,
  headers: Record<string, string>,
  body?: string | Buffer[],
): Promise<{ status: number; body: string }> {
  const u = new URL(stack.apiUrl);
  return new Promise((resolve, reject) => {
    const req = request({ host: u.hostname, port: u.port, method, path, headers }, (res) => {
      let data = "";
      res.on("data", (c) => (data += c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body: data }));
    });
    req.on("error", reject);
    if (Array.isArray(body)) {
      for (const chunk of body) req.write(chunk);
      req.end();
    } else req.end(body);
  });
}

describe("functions through the gateway", () => {
  it("functions.invoke reaches the function with the platform env and the caller's role", async () => {
    const { data, error } = await createNodeClient(stack.apiUrl, stack.serviceRoleKey).functions.invoke("echo", {
      body: { hello: "world" },
    });
    expect(error).toBeNull();
    expect(data).toMatchObject({
      method: "POST",
      path: "/echo",
      role: "service_role",
      body: { hello: "world" },
      env: {
        SUPABASE_URL: stack.apiUrl,
        SUPABASE_DB_URL: "set",
        SUPABASE_ANON_KEY: "set",
        SUPABASE_SERVICE_ROLE_KEY: "set",
        FIXTURE_SECRET: "from-functionEnv",
        // Functions see the platform variables and their secrets, not the parent's environment.
        HOME_VISIBLE: null,
      },
    });
  });

  it("keeps sub-paths and query strings", async () => {
    const r = await fetch(`${stack.apiUrl}/functions/v1/echo/sub/path?x=1`, {
      method: "PUT",
      headers: { authorization: `Bearer ${stack.anonKey}`, "content-type": "application/json" },
      body: JSON.stringify([1, 2]),
    });
    expect(r.status).toBe(200);
    expect(await r.json()).toMatchObject({
      method: "PUT",
      path: "/echo/sub/path",
      search: "?x=1",
      role: "anon",
      body: [1, 2],
    });
  });

  it("enforces verify_jwt: no JWT or a forged one is 401 and never reaches the function", async () => {
    const none = await fetch(`${stack.apiUrl}/functions/v1/echo`, { method: "POST", body: "{}" });
    expect(none.status).toBe(401);
    expect(await none.json()).toMatchObject({ message: "Missing authorization header" });

    const forged = await signRoleKey("not-the-local-secret-not-the-local-secret", "service_role");
    const bad = await fetch(`${stack.apiUrl}/functions/v1/echo`, {
      method: "POST",
      headers: { authorization: `Bearer ${forged}` },
      body: "{}",
    });
    expect(bad.status).toBe(401);
    expect(await bad.json()).toMatchObject({ message: "Invalid JWT" });

    const garbage = await fetch(`${stack.apiUrl}/functions/v1/echo`, {
      method: "POST",
      headers: { authorization: "Bearer abc.def.ghi" },
    });
    expect(garbage.status).toBe(401);
  });

  it("refuses dot segments, encoded or not, before choosing the function whose verify_jwt applies", async () => {
    // public-echo has verify_jwt = false, echo has it on: a path resolved after the check would reach
    // echo with no JWT at all.
    for (
      const path of [
        "/functions/v1/public-echo/../echo",
        "/functions/v1/public-echo/%2e%2e/echo",
        "/functions/v1/public-echo/%2E%2e/echo",
        "/functions/v1/public-echo/.%2e/echo",
        "/functions/v1/public-echo/./../echo",
        "/functions/v1/public-echo/..\\echo",
        "/functions/v1/public-echo/..%5Cecho",
      ]
    ) {
      const r = await rawRequest("POST", path, { "content-type": "application/json" }, "{}");
      expect({ path, status: r.status }).toEqual({ path, status: 400 });
      expect(JSON.parse(r.body)).toMatchObject({ code: "INVALID_PATH" });
    }
    // Dots inside a segment are ordinary characters.
    const ok = await rawRequest(
      "POST",
      "/functions/v1/echo/v1.2/..x",
      { authorization: `Bearer ${stack.anonKey}` },
      "{}",
    );
    expect(ok.status).toBe(200);
    expect(JSON.parse(ok.body)).toMatchObject({ path: "/echo/v1.2/..x", role: "anon" });
  });

  it("a body over the limit is a 413 naming the limit, declared or streamed; smaller bodies arrive whole", async () => {
    const auth = { authorization: `Bearer ${stack.serviceRoleKey}`, "content-type": "application/json" };
    const big = JSON.stringify({ x: "a".repeat(2 * 1024 * 1024) });
    for (const name of ["echo", "public-echo"]) {
      const declared = await rawRequest("POST", `/functions/v1/${name}`, auth, big);
      expect({ name, status: declared.status }).toEqual({ name, status: 413 });
      expect(JSON.parse(declared.body)).toMatchObject({ code: "PAYLOAD_TOO_LARGE", limit: FUNCTION_BODY_LIMIT_BYTES });
      // Chunked, so the size is known only while reading: 3 MB in 64 KiB chunks.
      const chunks = Array.from({ length: 48 }, () => Buffer.alloc(64 * 1024, 0x61));
      const streamed = await rawRequest("POST", `/functions/v1/${name}`, auth, chunks);
      expect({ name, status: streamed.status }).toEqual({ name, status: 413 });
      expect(JSON.parse(streamed.body)).toMatchObject({ limit: FUNCTION_BODY_LIMIT_BYTES });
    }
    // Just under the limit, through supabase-js: the function sees the whole body.
    const text = "b".repeat(FUNCTION_BODY_LIMIT_BYTES - 16);
    const { data, error } = await createNodeClient(stack.apiUrl, stack.serviceRoleKey).functions.invoke("echo", {
      body: { text },
    });
    expect(error).toBeNull();
    expect(data.body.text.length).toBe(text.length);
    // A function that answers without reading its body still gets its answer through.
    const unread = await rawRequest("POST", "/functions/v1/public-echo", auth, JSON.stringify({ text }));
    expect(unread.status).toBe(200);
  });

  it("verify_jwt = false in config.toml lets calls without a JWT through", async () => {
    const r = await fetch(`${stack.apiUrl}/functions/v1/public-echo`, { method: "POST" });
    expect(r.status).toBe(200);
    expect(await r.json()).toEqual({ ok: true, role: null });
  });

  it("an unknown function is a 404 JSON; a function that fails to import is a 503 and the others still work", async () => {
    const missing = await fetch(`${stack.apiUrl}/functions/v1/no-such-function`, {
      method: "POST",
      headers: { authorization: `Bearer ${stack.serviceRoleKey}` },
    });
    expect(missing.status).toBe(404);
    expect(missing.headers.get("content-type")).toContain("application/json");
    expect(await missing.json()).toMatchObject({ code: "NOT_FOUND" });

    const broken = await fetch(`${stack.apiUrl}/functions/v1/broken`, {
      method: "POST",
      headers: { authorization: `Bearer ${stack.serviceRoleKey}` },
    });
    expect(broken.status).toBe(503);
    expect((await broken.json()).message).toContain("deliberate import-time failure");
    expect(stack.functions).toEqual(["crash", "echo", "public-echo", "record-call"]);
  });

  it("restarts the Deno process when a function takes it down", async () => {
    const before = stack.functionsPid;
    const r = await fetch(`${stack.apiUrl}/functions/v1/crash`, {
      method: "POST",
      headers: { authorization: `Bearer ${stack.serviceRoleKey}` },
    });
    expect(r.status).toBeGreaterThanOrEqual(500);
    await waitFor(
      "the Deno process to come back",
      async () => {
        const again = await fetch(`${stack.apiUrl}/functions/v1/echo`, {
          method: "POST",
          headers: { authorization: `Bearer ${stack.anonKey}` },
          body: "{}",
        });
        return again.status === 200;
      },
      20_000,
      200,
    );
    expect(stack.functionsPid).not.toBe(before);
    expect(processAlive(before)).toBe(false);
  });

  it("writes the Vault entries that private.invoke_edge_function reads", async () => {
    const rows = await db.sql<{ name: string; decrypted_secret: string }[]>`
      select name, decrypted_secret from vault.decrypted_secrets order by name`;
    // The 2026 scheme: a secret key (sent as apikey), no legacy service_role JWT.
    expect(rows).toEqual([
      { name: "project_url", decrypted_secret: stack.apiUrl },
      { name: "secret_key", decrypted_secret: stack.secretKey },
    ]);
  });

  it("stop() ends the Deno process and frees the port: no orphan", async () => {
    const pid = stack.functionsPid;
    expect(processAlive(pid)).toBe(true);
    await stack.stop();
    expect(processAlive(pid)).toBe(false);
    await expect(fetch(`${stack.apiUrl}/health`)).rejects.toThrow();
  });
});

describe("process tree", () => {
  it("the Deno child exits when its Node parent is SIGKILLed (it watches its stdin pipe)", async () => {
    const dataDir = mkdtempSync(join(tmpdir(), "local-stack-kill-"));
    const child = spawn(process.execPath, ["--import", "tsx", "tests/fixtures/stack-child.ts"], {
      env: { ...process.env, STACK_DB_URL: db.url, STACK_DATA_DIR: dataDir },
      stdio: ["ignore", "pipe", "inherit"],
    });
    try {
      const ready = await new Promise<{ functionsPid: number; apiUrl: string }>((resolve, reject) => {
        let buf = "";
        child.stdout!.on("data", (d) => {
          buf += d;
          const line = buf.split("\n").find((l) => l.startsWith("{"));
          if (line) resolve(JSON.parse(line));
        });
        child.once("exit", (code) => reject(new Error(`stack child exited early (${code})`)));
      });
      expect(processAlive(ready.functionsPid)).toBe(true);
      expect((await fetch(`${ready.apiUrl}/health`)).status).toBe(200);
      child.kill("SIGKILL");
      await waitFor("the Deno child to exit", () => Promise.resolve(!processAlive(ready.functionsPid)), 10_000);
    } finally {
      child.kill("SIGKILL");
      await rm(dataDir, { recursive: true, force: true });
    }
  }, 60_000);
});
