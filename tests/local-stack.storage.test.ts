// The /storage/v1 stand-in, driven with supabase-js and checked against storage.objects rows and
// the files on disk.
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  utimesSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { createHash } from "node:crypto";
import { request } from "node:http";
import { dirname, join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createNodeClient } from "../packages/connection/node-client.ts";
import { signRoleKey } from "../packages/local-stack/keys.ts";
import { sweepOrphanFiles } from "../packages/local-stack/storage.ts";
import { FIXTURE_CONFIG, FIXTURE_FUNCTIONS_DIR, startTestStack } from "../packages/testkit/stack.ts";
import type { LocalStack } from "../packages/local-stack/index.ts";
import { useTestDatabase, waitFor } from "./helpers/db.ts";

const db = useTestDatabase();
let stack: LocalStack;

beforeAll(async () => {
  stack = await startTestStack({
    databaseUrl: db.url,
    functionsDir: FIXTURE_FUNCTIONS_DIR,
    configFile: FIXTURE_CONFIG,
  });
  // A trigger on storage.objects must fire exactly as on Supabase (files_queue relies on it).
  await db.sql.unsafe(`
    create table public.object_events (op text, name text, size bigint);
    create function public.record_object_event() returns trigger language plpgsql security definer as $$
    begin
      if tg_op = 'DELETE' then insert into public.object_events values (tg_op, old.name, (old.metadata->>'size')::bigint); return old; end if;
      insert into public.object_events values (tg_op, new.name, (new.metadata->>'size')::bigint); return new;
    end $$;
    create trigger object_events after insert or update or delete on storage.objects
      for each row execute function public.record_object_event();`);
}, 60_000);
afterAll(async () => {
  await stack?.stop();
});

function allFiles(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { withFileTypes: true }).flatMap((d) =>
    d.isDirectory() ? allFiles(join(dir, d.name)) : [join(dir, d.name)]
  );
}

/** A raw HTTP request whose path is sent byte for byte (fetch would normalise `..`). */
function rawRequest(
  method: string,
  path: string,
  headers: Record<string, string>,
  body?: string,
): Promise<{ status: number; body: string }> {
  const u = new URL(stack.apiUrl);
  return new Promise((resolve, reject) => {
    const req = request({ host: u.hostname, port: u.port, method, path, headers }, (res) => {
      let data = "";
      res.on("data", (c) => (data += c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body: data }));
    });
    req.on("error", reject);
    req.end(body);
  });
}

/**
 * Uploads `total` bytes of zeros chunked (no content-length), writing only as fast as the server
 * reads, and stops writing once the answer arrives. `sent` is what had been written by then.
 */
function streamUpload(
  path: string,
  headers: Record<string, string>,
  total: number,
): Promise<{ status: number; body: string; sent: number }> {
  const u = new URL(stack.apiUrl);
  return new Promise((resolve, reject) => {
    let sent = 0;
    let answered = false;
    const req = request({
      host: u.hostname,
      port: u.port,
      method: "POST",
      path,
      headers: { ...headers, "transfer-encoding": "chunked" },
    }, (res) => {
      answered = true;
      const sentAtAnswer = sent;
      let data = "";
      res.on("data", (c) => (data += c));
      res.on("end", () => {
        resolve({ status: res.statusCode ?? 0, body: data, sent: sentAtAnswer });
        req.destroy();
      });
    });
    req.on("error", (e) => answered || reject(e));
    const chunk = Buffer.alloc(1024 * 1024);
    const pump = () => {
      while (!answered && sent < total) {
        sent += chunk.length;
        if (!req.write(chunk)) return void req.once("drain", pump);
      }
      if (!answered) req.end();
    };
    pump();
  });
}

describe("upload limits", () => {
  const MiB = 1024 * 1024;

  it("a chunked upload past the 50 MB limit is refused while streaming, not after buffering it whole", async () => {
    expect(
      (await createNodeClient(stack.apiUrl, stack.serviceRoleKey).storage.createBucket("unlimited", { public: false }))
        .error,
    ).toBeNull();
    const auth = { authorization: `Bearer ${stack.serviceRoleKey}`, "content-type": "application/octet-stream" };
    const r = await streamUpload("/storage/v1/object/unlimited/zeros.bin", auth, 200 * MiB);
    expect(r.status).toBe(413);
    expect(JSON.parse(r.body)).toMatchObject({ error: "Payload too large" });
    // The answer came once the limit was passed, and the server read no further until it was
    // written: what the client had written by then is the 50 MiB limit plus what loopback socket
    // buffers hold (at most 4 MiB sent and 32 MiB received by Linux's defaults), whatever the load.
    // A server that drains while it prepares the refusal, or buffers, goes past that.
    expect(r.sent).toBeLessThan(90 * MiB);
    expect(await db.sql`select name from storage.objects where bucket_id = 'unlimited'`).toEqual([]);
    expect(allFiles(join(stack.storageRoot, "unlimited"))).toEqual([]);

    // The same upload under the limit is stored whole, with its size and hash.
    const ok = await streamUpload("/storage/v1/object/unlimited/small.bin", auth, 3 * MiB);
    expect(ok.status).toBe(200);
    expect(
      await db
        .sql`select (metadata->>'size')::int as size, metadata->>'eTag' as etag from storage.objects where name = 'small.bin'`,
    )
      .toEqual([{ size: 3 * MiB, etag: `"${createHash("md5").update(Buffer.alloc(3 * MiB)).digest("hex")}"` }]);
  }, 60_000);

  it("a bucket's own file size limit stops a streamed upload the same way", async () => {
    const admin = createNodeClient(stack.apiUrl, stack.serviceRoleKey).storage;
    expect((await admin.createBucket("capped", { public: false, fileSizeLimit: "1MB" })).error).toBeNull();
    const auth = { authorization: `Bearer ${stack.serviceRoleKey}`, "content-type": "application/octet-stream" };
    const r = await streamUpload("/storage/v1/object/capped/two.bin", auth, 128 * MiB);
    expect(r.status).toBe(413);
    expect(r.sent).toBeLessThan(64 * MiB);
    // Multipart (a Blob through supabase-js) too.
    const blob = await admin.from("capped").upload("blob.bin", new Blob([new Uint8Array(2 * MiB)]));
    expect(blob.error).toMatchObject({ statusCode: "413" });
    expect(await db.sql`select name from storage.objects where bucket_id = 'capped'`).toEqual([]);
  }, 60_000);

  it("an object name the disk cannot hold is a 400 InvalidKey that shows no server path", async () => {
    const s = createNodeClient(stack.apiUrl, stack.serviceRoleKey).storage.from("unlimited");
    for (const name of ["n".repeat(300), `dir/${"é".repeat(130)}.txt`, `${"a/".repeat(520)}x`]) {
      const r = await rawRequest(
        "POST",
        `/storage/v1/object/unlimited/${encodeURIComponent(name).replace(/%2F/g, "/")}`,
        { authorization: `Bearer ${stack.serviceRoleKey}`, "content-type": "text/plain" },
        "x",
      );
      expect({ len: name.length, status: r.status }).toEqual({ len: name.length, status: 400 });
      expect(JSON.parse(r.body)).toMatchObject({ error: "InvalidKey" });
      expect(r.body).not.toContain(stack.dataDir);
      expect(r.body).not.toContain("/tmp");
    }
    const viaJs = await s.upload("n".repeat(300), "x", { contentType: "text/plain" });
    expect(viaJs.error?.message).not.toContain(stack.dataDir);
    expect(await db.sql`select name from storage.objects where bucket_id = 'unlimited' and name <> 'small.bin'`)
      .toEqual([]);
  });
});

describe("storage through supabase-js", () => {
  it("creates, gets and lists buckets (rows in storage.buckets)", async () => {
    const admin = createNodeClient(stack.apiUrl, stack.serviceRoleKey).storage;
    expect((await admin.createBucket("docs", { public: false, fileSizeLimit: "1MB" })).error).toBeNull();
    expect((await admin.createBucket("pub", { public: true })).error).toBeNull();
    const dup = await admin.createBucket("docs");
    expect(dup.error).not.toBeNull();
    expect((await admin.getBucket("docs")).data).toMatchObject({
      id: "docs",
      public: false,
      file_size_limit: 1024 * 1024,
    });
    // Migrations may create buckets of their own: the API lists exactly the rows.
    const listed = (await admin.listBuckets()).data?.map((b) => b.id).sort();
    const rows = await db.sql<{ id: string; public: boolean }[]>`select id, public from storage.buckets order by id`;
    expect(listed).toEqual(rows.map((r) => r.id));
    expect(rows).toEqual(expect.arrayContaining([{ id: "docs", public: false }, { id: "pub", public: true }]));
  });

  it("upload / list / download / remove, with storage.objects rows exactly as uploaded", async () => {
    const s = createNodeClient(stack.apiUrl, stack.serviceRoleKey).storage.from("docs");
    const json = JSON.stringify({ id: "LEGITEXT000006070721", title: "Code civil" });
    const up1 = await s.upload("fr/code-civil.json", new Blob([json], { type: "application/json" }));
    expect(up1.error).toBeNull();
    expect(up1.data).toMatchObject({ path: "fr/code-civil.json", fullPath: "docs/fr/code-civil.json" });
    // Raw body (not multipart): content-type header becomes the mimetype.
    const bytes = new Uint8Array([0, 1, 2, 3, 255]);
    expect((await s.upload("fr/raw.bin", bytes, { contentType: "application/octet-stream" })).error).toBeNull();
    expect((await s.upload("top.txt", "plain text", { contentType: "text/plain" })).error).toBeNull();

    const [row] = await db.sql<{ id: string; name: string; metadata: Record<string, unknown> }[]>`
      select id, name, metadata from storage.objects where bucket_id = 'docs' and name = 'fr/code-civil.json'`;
    expect(row.id).toBe(up1.data!.id);
    expect(row.metadata).toMatchObject({
      size: Buffer.byteLength(json),
      mimetype: "application/json",
      cacheControl: "max-age=3600",
    });
    expect(String(row.metadata.eTag)).toMatch(/^"[0-9a-f]{32}"$/);
    expect(await db.sql`select (metadata->>'size')::int as size from storage.objects where name = 'fr/raw.bin'`)
      .toEqual([{ size: 5 }]);

    const top = await s.list();
    expect(top.data?.map((o) => [o.name, o.id === null])).toEqual([["fr", true], ["top.txt", false]]);
    const fr = await s.list("fr", { limit: 1, offset: 1, sortBy: { column: "name", order: "asc" } });
    expect(fr.data?.map((o) => o.name)).toEqual(["raw.bin"]);
    expect((await s.list("fr", { search: "code" })).data?.map((o) => o.name)).toEqual(["code-civil.json"]);

    const dl = await s.download("fr/code-civil.json");
    expect(await dl.data!.text()).toBe(json);
    expect(new Uint8Array(await (await s.download("fr/raw.bin")).data!.arrayBuffer())).toEqual(bytes);

    const rm = await s.remove(["fr/raw.bin", "top.txt"]);
    expect(rm.data?.map((o) => o.name).sort()).toEqual(["fr/raw.bin", "top.txt"]);
    expect(await db.sql`select name from storage.objects where bucket_id = 'docs' order by name`).toEqual([{
      name: "fr/code-civil.json",
    }]);
    expect((await s.download("top.txt")).error).not.toBeNull();

    const events = await db
      .sql`select op, name, size from public.object_events where name in ('fr/raw.bin', 'top.txt') order by name, op`;
    expect(events).toEqual([
      { op: "DELETE", name: "fr/raw.bin", size: "5" },
      { op: "INSERT", name: "fr/raw.bin", size: "5" },
      { op: "DELETE", name: "top.txt", size: "10" },
      { op: "INSERT", name: "top.txt", size: "10" },
    ]);
    // One file per live object on disk: removed objects left nothing behind.
    expect(allFiles(join(stack.storageRoot, "docs")).length).toBe(1);
  });

  it("x-upsert: a second upload is refused unless upsert, which replaces content and the old file", async () => {
    const s = createNodeClient(stack.apiUrl, stack.serviceRoleKey).storage.from("docs");
    expect((await s.upload("u.txt", "v1", { contentType: "text/plain" })).error).toBeNull();
    const again = await s.upload("u.txt", "v2", { contentType: "text/plain" });
    expect(again.error).not.toBeNull();
    expect(await (await s.download("u.txt")).data!.text()).toBe("v1");
    expect((await s.upload("u.txt", "version 3", { contentType: "text/plain", upsert: true })).error).toBeNull();
    expect(await (await s.download("u.txt")).data!.text()).toBe("version 3");
    expect((await s.update("u.txt", "v4!", { contentType: "text/plain" })).error).toBeNull();
    expect(await (await s.download("u.txt")).data!.text()).toBe("v4!");
    expect(await db.sql`select (metadata->>'size')::int as size from storage.objects where name = 'u.txt'`).toEqual([{
      size: 3,
    }]);
    expect(readdirSync(join(stack.storageRoot, "docs", "u.txt")).length).toBe(1);
  });

  it("move and copy keep rows and files in step", async () => {
    const s = createNodeClient(stack.apiUrl, stack.serviceRoleKey).storage.from("docs");
    expect((await s.upload("m/a.txt", "move me", { contentType: "text/plain" })).error).toBeNull();
    expect((await s.move("m/a.txt", "m/b.txt")).error).toBeNull();
    expect((await s.copy("m/b.txt", "m/c.txt")).error).toBeNull();
    expect(await db.sql`select name from storage.objects where name like 'm/%' order by name`).toEqual([{
      name: "m/b.txt",
    }, { name: "m/c.txt" }]);
    expect(await (await s.download("m/b.txt")).data!.text()).toBe("move me");
    expect(await (await s.download("m/c.txt")).data!.text()).toBe("move me");
    expect(existsSync(join(stack.storageRoot, "docs", "m", "a.txt"))).toBe(false);
  });

  it("anon cannot write or read a private bucket; public buckets are readable by URL", async () => {
    const anon = createNodeClient(stack.apiUrl, stack.anonKey).storage;
    const w = await anon.from("docs").upload("anon.txt", "x", { contentType: "text/plain" });
    expect(w.error).not.toBeNull();
    expect((await anon.from("docs").download("fr/code-civil.json")).error).not.toBeNull();
    expect((await anon.createBucket("anon-bucket")).error).not.toBeNull();
    expect(await db.sql`select name from storage.objects where name = 'anon.txt'`).toEqual([]);
    expect(existsSync(join(stack.storageRoot, "docs", "anon.txt"))).toBe(false);

    const admin = createNodeClient(stack.apiUrl, stack.serviceRoleKey).storage.from("pub");
    expect((await admin.upload("p.txt", "public!", { contentType: "text/plain" })).error).toBeNull();
    const url = anon.from("pub").getPublicUrl("p.txt").data.publicUrl;
    const r = await fetch(url);
    expect(r.status).toBe(200);
    expect(await r.text()).toBe("public!");
    expect((await fetch(anon.from("docs").getPublicUrl("fr/code-civil.json").data.publicUrl)).status).toBe(400);
  });

  it("RLS policies decide for authenticated users, with auth.uid() from the JWT, as on Supabase", async () => {
    await db.sql.unsafe(`
      create policy "own folder insert" on storage.objects for insert to authenticated
        with check (bucket_id = 'docs' and (storage.foldername(name))[1] = auth.uid()::text);
      create policy "own rows read" on storage.objects for select to authenticated
        using (bucket_id = 'docs' and owner = auth.uid());`);
    const secret = readFileSync(join(dirname(stack.storageRoot), "jwt-secret"), "utf8").trim();
    const uid = "6f1d2c3b-4a5e-4f60-8a7b-9c0d1e2f3a4b";
    const userKey = await signRoleKey(secret, "authenticated", { sub: uid });
    const user = createNodeClient(stack.apiUrl, userKey).storage.from("docs");
    expect((await user.upload(`${uid}/note.txt`, "mine", { contentType: "text/plain" })).error).toBeNull();
    expect((await user.upload("someone-else/note.txt", "not mine", { contentType: "text/plain" })).error).not
      .toBeNull();
    expect(await (await user.download(`${uid}/note.txt`)).data!.text()).toBe("mine");
    expect((await user.download("fr/code-civil.json")).error).not.toBeNull(); // not theirs
    expect(await db.sql`select name, owner::text, owner_id from storage.objects where name like '%note.txt'`)
      .toEqual([{ name: `${uid}/note.txt`, owner: uid, owner_id: uid }]);
  });

  it("after a crash, files without a row are swept and files with one are kept", async () => {
    const s = createNodeClient(stack.apiUrl, stack.serviceRoleKey).storage.from("docs");
    expect((await s.upload("crash/kept.txt", "kept", { contentType: "text/plain" })).error).toBeNull();
    // What an interrupted upload leaves: a version file (and a temp file) that no row points at.
    const orphanDir = join(stack.storageRoot, "docs", "crash", "lost.txt");
    mkdirSync(orphanDir, { recursive: true });
    const orphan = join(orphanDir, "0b7e3f8a-1c2d-4e5f-8a9b-0c1d2e3f4a5b");
    writeFileSync(orphan, "half-written");
    writeFileSync(`${orphan}.tmp`, "temp");
    const old = new Date(Date.now() - 3600_000);
    for (const f of [orphan, `${orphan}.tmp`]) utimesSync(f, old, old);
    const keptDir = join(stack.storageRoot, "docs", "crash", "kept.txt");
    for (const f of readdirSync(keptDir)) utimesSync(join(keptDir, f), old, old);

    expect(await sweepOrphanFiles(db.sql, stack.storageRoot)).toBe(2);
    expect(existsSync(orphan) || existsSync(`${orphan}.tmp`)).toBe(false);
    expect(await (await s.download("crash/kept.txt")).data!.text()).toBe("kept");
  });

  it("a stack started again sweeps at once what its predecessor's crash left, and keeps what has a row", async () => {
    const dataDir = mkdtempSync(join(tmpdir(), "storage-restart-"));
    let first: LocalStack | null = await startTestStack({
      databaseUrl: db.url,
      functionsDir: FIXTURE_FUNCTIONS_DIR,
      configFile: FIXTURE_CONFIG,
      dataDir,
    });
    let second: LocalStack | null = null;
    try {
      await db.sql`insert into storage.buckets (id, name) values ('restarts', 'restarts') on conflict do nothing`;
      const s = createNodeClient(first.apiUrl, first.serviceRoleKey).storage.from("restarts");
      expect((await s.upload("restart/kept.txt", "kept", { contentType: "text/plain" })).error).toBeNull();
      // An upload interrupted by a SIGKILL 30 s ago: its version file and its temp file, no row.
      const orphanDir = join(first.storageRoot, "restarts", "restart", "lost.txt");
      mkdirSync(orphanDir, { recursive: true });
      const orphan = join(orphanDir, "5d0c1b2a-3e4f-4a5b-8c6d-7e8f9a0b1c2d");
      writeFileSync(orphan, "half-written");
      writeFileSync(`${orphan}.tmp`, "temp");
      const recent = new Date(Date.now() - 30_000);
      for (const f of [orphan, `${orphan}.tmp`]) utimesSync(f, recent, recent);
      await first.stop();
      first = null;
      second = await startTestStack({
        databaseUrl: db.url,
        functionsDir: FIXTURE_FUNCTIONS_DIR,
        configFile: FIXTURE_CONFIG,
        dataDir,
      });
      await waitFor(
        "the orphans swept",
        () => Promise.resolve(!existsSync(orphan) && !existsSync(`${orphan}.tmp`)),
        15_000,
        100,
      );
      const s2 = createNodeClient(second.apiUrl, second.serviceRoleKey).storage.from("restarts");
      expect(await (await s2.download("restart/kept.txt")).data!.text()).toBe("kept");
    } finally {
      await first?.stop();
      await second?.stop();
      rmSync(dataDir, { recursive: true, force: true });
    }
  }, 120_000);

  it("without any JWT, storage refuses everything but public reads", async () => {
    const r = await fetch(`${stack.apiUrl}/storage/v1/bucket`);
    expect(r.status).toBe(401);
  });

  it("refuses path traversal, absolute paths, NUL and backslashes with 400, writing nothing outside the root", async () => {
    const auth = { authorization: `Bearer ${stack.serviceRoleKey}`, "content-type": "text/plain" };
    const before = allFiles(dirname(stack.storageRoot)).sort();
    const attempts = [
      "/storage/v1/object/docs/../../escape.txt",
      "/storage/v1/object/docs/a/../../../escape.txt",
      "/storage/v1/object/docs/%2e%2e/%2e%2e/escape.txt",
      "/storage/v1/object/docs/..%2f..%2fescape.txt",
      "/storage/v1/object/docs//etc/escape.txt",
      "/storage/v1/object/docs/%2Fetc%2Fescape.txt",
      "/storage/v1/object/docs/nul%00.txt",
      "/storage/v1/object/docs/..%5C..%5Cescape.txt",
      "/storage/v1/object/..%2F..%2Fescape/x.txt",
      "/storage/v1/object/../escape.txt",
    ];
    for (const path of attempts) {
      for (const method of ["POST", "PUT"]) {
        const r = await rawRequest(method, path, auth, "evil");
        expect({ path, method, status: r.status }).toEqual({ path, method, status: 400 });
      }
    }
    // Keys in JSON bodies are checked the same way.
    const mv = await rawRequest(
      "POST",
      "/storage/v1/object/move",
      { ...auth, "content-type": "application/json" },
      JSON.stringify({ bucketId: "docs", sourceKey: "fr/code-civil.json", destinationKey: "../../escape.json" }),
    );
    expect(mv.status).toBe(400);
    const del = await rawRequest(
      "DELETE",
      "/storage/v1/object/docs",
      { ...auth, "content-type": "application/json" },
      JSON.stringify({ prefixes: ["../../.."] }),
    );
    expect(del.status).toBe(400);
    const dl = await rawRequest("GET", "/storage/v1/object/docs/../../jwt-secret", auth);
    expect(dl.status).toBe(400);
    expect(dl.body).not.toContain(readFileSync(join(dirname(stack.storageRoot), "jwt-secret"), "utf8").trim());

    expect(allFiles(dirname(stack.storageRoot)).sort()).toEqual(before);
    expect(await db.sql`select name from storage.objects where name like '%escape%' or name like '%nul%'`).toEqual([]);
    expect(statSync(join(stack.storageRoot, "docs")).isDirectory()).toBe(true);
  });
});

describe("signed URLs", () => {
  it("createSignedUrl / createSignedUrls: a token-holder downloads without a JWT until it expires; RLS decides who may sign", async () => {
    const admin = createNodeClient(stack.apiUrl, stack.serviceRoleKey).storage;
    expect((await admin.createBucket("signed-docs", { public: false })).error).toBeNull();
    const s = admin.from("signed-docs");
    expect((await s.upload("dossier/été 2024.txt", "contenu signé", { contentType: "text/plain" })).error).toBeNull();
    expect((await s.upload("other.txt", "autre", { contentType: "text/plain" })).error).toBeNull();

    const { data, error } = await s.createSignedUrl("dossier/été 2024.txt", 60);
    expect(error).toBeNull();
    const r = await fetch(data!.signedUrl); // no apikey, no Authorization
    expect(r.status).toBe(200);
    expect(await r.text()).toBe("contenu signé");

    // The token is bound to its object and cannot be forged.
    const token = new URL(data!.signedUrl).searchParams.get("token")!;
    const elsewhere = await fetch(`${stack.apiUrl}/storage/v1/object/sign/signed-docs/other.txt?token=${token}`);
    expect(elsewhere.status).toBe(400);
    const forged = await fetch(data!.signedUrl.replace(/token=[^&]+/, `token=${token.slice(0, -4)}AAAA`));
    expect(forged.status).toBe(400);
    // And the token is no API key.
    const asKey = await fetch(`${stack.apiUrl}/storage/v1/bucket`, {
      headers: { apikey: token, authorization: `Bearer ${token}` },
    });
    expect(asKey.status).toBe(401);

    const many = await s.createSignedUrls(["other.txt", "missing.txt"], 60);
    expect(many.error).toBeNull();
    expect(many.data!.map((d) => [d.path, d.error])).toEqual([["other.txt", null], [
      "missing.txt",
      "Object not found",
    ]]);
    expect(await (await fetch(many.data![0].signedUrl!)).text()).toBe("autre");

    // Anon has no RLS policy on this bucket: it may not sign.
    const anon = createNodeClient(stack.apiUrl, stack.anonKey).storage.from("signed-docs");
    expect((await anon.createSignedUrl("other.txt", 60)).error).not.toBeNull();

    // Expiry: a one-second URL works, then is refused (polled with a deadline).
    const short = await s.createSignedUrl("other.txt", 1);
    expect((await fetch(short.data!.signedUrl)).status).toBe(200);
    const deadline = Date.now() + 5_000;
    let last: Response;
    for (;;) {
      last = await fetch(short.data!.signedUrl);
      if (last.status !== 200 || Date.now() > deadline) break;
      await new Promise((res) => setTimeout(res, 200));
    }
    expect(last.status).toBe(400);
    expect((await last.json()).message).toMatch(/expired/);
  });

  it("signed upload URLs answer 501 with a clear message, never a misleading 404", async () => {
    const s = createNodeClient(stack.apiUrl, stack.serviceRoleKey).storage.from("signed-docs");
    const r = await s.createSignedUploadUrl("new.txt");
    expect(r.error).not.toBeNull();
    expect(r.error!.message).toMatch(/not implemented by the local Storage/);
  });
});
