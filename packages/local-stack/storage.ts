// The part of the Supabase Storage REST API that @supabase/storage-js calls, backed by files on disk
// and by rows in storage.buckets / storage.objects, so SQL (and triggers on storage.objects) see
// exactly what was uploaded.
//
// Access control is Postgres's, as on Supabase: every statement runs in a transaction under the
// caller's role (`set local role anon|authenticated|service_role` plus request.jwt.claims), so RLS
// policies on storage.objects decide; with no policy, anon and authenticated can do nothing, and
// only /object/public/ reads of a public bucket skip RLS.
//
// Row and file never diverge, whatever the crash point: files are immutable and named by version
// (<root>/<bucket>/<name>/<version>, the layout of Supabase's file backend). A write puts the new
// version on disk first, then commits the row that points at it, then deletes the old version.
// A crash before the commit leaves an unreferenced file (harmless); a crash after it leaves the
// old version behind (harmless). Reads always follow the row, whose file always exists.
import { createHash, createHmac, randomUUID } from "node:crypto";
import { createReadStream } from "node:fs";
import { copyFile, link, mkdir, open, readdir, rename, rmdir, stat, unlink } from "node:fs/promises";
import { dirname, join, resolve, sep } from "node:path";
import { Readable } from "node:stream";
import { jwtVerify, SignJWT } from "jose";
import type postgres from "postgres";
import { z } from "zod";

export type StorageRole = "anon" | "authenticated" | "service_role";
export interface StorageCaller {
  role: StorageRole;
  claims: Record<string, unknown>;
}

export interface StorageContext {
  sql: postgres.Sql;
  root: string; // absolute storage root
  /** Verifies the request's JWT (apikey or Authorization); null when missing or invalid. */
  caller: (req: Request) => Promise<StorageCaller | null>;
  maxUploadBytes?: number;
  /** Signed-URL tokens are HS256 under a key derived from this (the project's JWT secret); random per process if absent. */
  signingSecret?: string;
  /** Where an unexpected error's detail goes; the caller gets a 500 without it (it can hold server paths). */
  log?: (line: string) => void;
}

class HttpError extends Error {
  constructor(readonly status: number, readonly code: string, message: string) {
    super(message);
  }
}

function errorBody(status: number, code: string, message: string): Response {
  return new Response(JSON.stringify({ statusCode: String(status), error: code, message }), {
    status,
    headers: { "content-type": "application/json" },
  });
}

function ok(body: unknown, status = 200): Response {
  return new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } });
}

const BUCKET_ID = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;

export function validBucketId(id: string): string {
  if (!BUCKET_ID.test(id)) throw new HttpError(400, "InvalidBucketName", `invalid bucket name: ${JSON.stringify(id)}`);
  return id;
}

/**
 * An object key as a list of safe segments: no `.`/`..`, no empty segment (so no absolute path and
 * no `//`), no NUL, no backslash, no control characters. Anything else is a 400 before any I/O.
 */
export function validObjectName(name: string): string {
  const bad = (why: string) => new HttpError(400, "InvalidKey", `invalid object key (${why}): ${JSON.stringify(name)}`);
  if (typeof name !== "string" || name.length === 0) throw bad("empty");
  if (Buffer.byteLength(name) > 1024) throw bad("longer than 1024 bytes");
  if (name.startsWith("/")) throw bad("absolute path");
  // deno-lint-ignore no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(name)) throw bad("control character or NUL");
  if (name.includes("\\")) throw bad("backslash");
  for (const seg of name.split("/")) {
    if (seg === "" || seg === "." || seg === "..") throw bad(seg === "" ? "empty segment" : "dot segment");
    // Each segment is a directory on disk, and file systems cap a name at 255 bytes.
    if (Buffer.byteLength(seg) > 255) throw bad("a segment longer than 255 bytes");
  }
  return name;
}

/** Decodes raw (still percent-encoded) URL path segments; a decoded `/` inside a segment is refused. */
function decodeSegments(raw: string[]): string[] {
  return raw.map((s) => {
    let d: string;
    try {
      d = decodeURIComponent(s);
    } catch {
      throw new HttpError(400, "InvalidKey", "malformed percent-encoding in path");
    }
    if (d.includes("/")) throw new HttpError(400, "InvalidKey", "encoded slash in path segment");
    return d;
  });
}

const tooLarge = () => new HttpError(413, "Payload too large", "The object exceeded the maximum allowed size");

/** `body` passed through, erroring (and calling `onOver`) once more than `limit` bytes went by. */
function capped(body: ReadableStream<Uint8Array>, limit: number, onOver: () => void): ReadableStream<Uint8Array> {
  let seen = 0;
  return body.pipeThrough(
    new TransformStream<Uint8Array, Uint8Array>({
      transform(chunk, controller) {
        seen += chunk.byteLength;
        if (seen <= limit) return controller.enqueue(chunk);
        onOver();
        controller.error(tooLarge());
      },
    }),
  );
}

function contained(root: string, ...parts: string[]): string {
  const p = resolve(root, ...parts);
  // Defence in depth: validation above already makes this impossible.
  if (p !== root && !p.startsWith(root + sep)) throw new HttpError(400, "InvalidKey", "path escapes the storage root");
  return p;
}

interface ObjectRow {
  id: string;
  bucket_id: string;
  name: string;
  version: string | null;
  metadata: Record<string, unknown> | null;
  user_metadata: Record<string, unknown> | null;
  created_at: Date;
  updated_at: Date;
  last_accessed_at: Date;
  owner_id: string | null;
}

interface BucketRow {
  id: string;
  name: string;
  owner: string | null;
  public: boolean;
  file_size_limit: string | null;
  allowed_mime_types: string[] | null;
  created_at: Date;
  updated_at: Date;
}

const createBucketBody = z.object({
  id: z.string().optional(),
  name: z.string(),
  public: z.boolean().optional(),
  file_size_limit: z.union([z.number(), z.string(), z.null()]).optional(),
  allowed_mime_types: z.array(z.string()).nullable().optional(),
});
const updateBucketBody = createBucketBody.partial();
const listBody = z.object({
  prefix: z.string().default(""),
  limit: z.number().int().min(0).max(10_000).default(100),
  offset: z.number().int().min(0).default(0),
  search: z.string().optional(),
  sortBy: z.object({
    column: z.enum(["name", "updated_at", "created_at", "last_accessed_at", "id"]).default("name"),
    order: z.enum(["asc", "desc"]).default("asc"),
  }).optional(),
});
const moveBody = z.object({
  bucketId: z.string(),
  sourceKey: z.string(),
  destinationKey: z.string(),
  destinationBucket: z.string().nullish(),
});
const signBody = z.object({ expiresIn: z.number().int().min(1).max(10 * 365 * 24 * 3600) });
const signManyBody = signBody.extend({ paths: z.array(z.string()).min(1).max(1000) });
const signedTokenClaims = z.object({ url: z.string(), exp: z.number() });
const removeBody = z.object({
  prefixes: z.array(z.union([z.string(), z.object({ path: z.string() }).transform((o) => o.path)])).min(1).max(1000),
});

function parseSize(v: unknown): number | null {
  if (v === null || v === undefined || v === "") return null;
  if (typeof v === "number") return v;
  const m = /^(\d+(?:\.\d+)?)\s*(b|kb|mb|gb)?$/i.exec(String(v).trim());
  if (!m) throw new HttpError(400, "InvalidRequest", `invalid file_size_limit: ${v}`);
  const mult = { b: 1, kb: 1024, mb: 1024 ** 2, gb: 1024 ** 3 }[(m[2] ?? "b").toLowerCase() as "b"];
  return Math.round(Number(m[1]) * mult);
}

async function readJson<S extends z.ZodType>(req: Request, schema: S): Promise<z.infer<S>> {
  let raw: unknown;
  try {
    const t = await req.text();
    raw = t.trim() === "" ? {} : JSON.parse(t);
  } catch {
    throw new HttpError(400, "InvalidRequest", "invalid JSON body");
  }
  const r = schema.safeParse(raw);
  if (!r.success) {
    throw new HttpError(
      400,
      "InvalidRequest",
      r.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("; "),
    );
  }
  return r.data;
}

function fileObject(r: ObjectRow) {
  return {
    name: r.name,
    id: r.id,
    bucket_id: r.bucket_id,
    owner: r.owner_id,
    version: r.version,
    updated_at: r.updated_at,
    created_at: r.created_at,
    last_accessed_at: r.last_accessed_at,
    metadata: r.metadata,
    user_metadata: r.user_metadata,
  };
}

export function createStorageHandler(ctx: StorageContext) {
  const root = resolve(ctx.root);
  const maxUpload = ctx.maxUploadBytes ?? 50 * 1024 * 1024;
  // A key derived from the secret, not the secret itself: a signed-URL token must never pass as an API JWT.
  const signingKey: Uint8Array = ctx.signingSecret
    ? createHmac("sha256", ctx.signingSecret).update("local-storage signed URLs").digest()
    : crypto.getRandomValues(new Uint8Array(32));

  /** Runs `fn` in a transaction as the caller's role, so RLS applies as on Supabase. */
  async function asCaller<T>(caller: StorageCaller, fn: (tx: postgres.TransactionSql) => Promise<T>): Promise<T> {
    return (await ctx.sql.begin(async (tx) => {
      await tx`select set_config('request.jwt.claims', ${JSON.stringify(caller.claims)}, true),
                      set_config('request.jwt.claim.role', ${caller.role}, true)`;
      await tx.unsafe(`set local role ${caller.role}`); // role is one of three literals
      return await fn(tx);
    })) as T;
  }

  function versionPath(bucket: string, name: string, version: string): string {
    return contained(root, bucket, ...name.split("/"), version);
  }

  async function removeFile(path: string): Promise<void> {
    await unlink(path).catch(() => {});
    // Tidy empty folders up to the bucket directory; a concurrent writer recreates what it needs.
    let dir = dirname(path);
    while (dir.startsWith(root + sep) && dirname(dir) !== root) {
      try {
        if ((await readdir(dir)).length > 0) break;
        await rmdir(dir);
      } catch {
        break;
      }
      dir = dirname(dir);
    }
  }

  async function bucketForWrite(bucketId: string): Promise<BucketRow> {
    const [b] = await ctx.sql<BucketRow[]>`select * from storage.buckets where id = ${bucketId}`;
    if (!b) throw new HttpError(404, "Bucket not found", "Bucket not found");
    return b;
  }

  async function upload(
    req: Request,
    caller: StorageCaller,
    bucketId: string,
    name: string,
    method: "POST" | "PUT",
  ): Promise<Response> {
    const bucket = await bucketForWrite(bucketId);
    const upsert = method === "PUT" || (req.headers.get("x-upsert") ?? "false").toLowerCase() === "true";
    let mimetype = req.headers.get("content-type") ?? "application/octet-stream";
    let cacheControl = req.headers.get("cache-control") ?? "no-cache";
    let userMetadata: Record<string, unknown> | null = null;
    const bucketLimit = bucket.file_size_limit === null ? null : Number(bucket.file_size_limit);
    const limit = Math.min(maxUpload, bucketLimit ?? Infinity);
    const declared = Number(req.headers.get("content-length") ?? "0");
    if (declared > maxUpload) throw tooLarge();
    const version = randomUUID();
    const finalPath = versionPath(bucketId, name, version);
    const tmp = `${finalPath}.tmp`;
    let body: ReadableStream<Uint8Array> = req.body ?? new ReadableStream({ start: (c) => c.close() });
    if (mimetype.toLowerCase().startsWith("multipart/form-data")) {
      // The form is parsed in memory, so the stream is capped first (with room for the form's own
      // parts): past that, reading stops instead of buffering the rest.
      let over = false;
      const form = await new Response(capped(body, limit + 64 * 1024, () => (over = true)), {
        headers: { "content-type": mimetype },
      })
        .formData()
        .catch(() => {
          throw over ? tooLarge() : new HttpError(400, "InvalidRequest", "malformed multipart body");
        });
      let file: File | null = null;
      for (const [, v] of form.entries()) if (typeof v !== "string") file = file ?? v;
      if (!file) throw new HttpError(400, "InvalidRequest", "multipart body without a file");
      body = file.stream();
      mimetype = file.type || "application/octet-stream";
      const cc = form.get("cacheControl");
      if (typeof cc === "string") cacheControl = /^\d+$/.test(cc) ? `max-age=${cc}` : cc;
      const md = form.get("metadata");
      if (typeof md === "string") userMetadata = JSON.parse(md);
    } else {
      const xm = req.headers.get("x-metadata");
      if (xm) userMetadata = JSON.parse(Buffer.from(xm, "base64").toString("utf8"));
    }
    if (bucket.allowed_mime_types?.length) {
      const base = mimetype.split(";")[0].trim();
      const allowed = bucket.allowed_mime_types.some((p) =>
        p === base || (p.endsWith("/*") && base.startsWith(p.slice(0, -1)))
      );
      if (!allowed) throw new HttpError(415, "invalid_mime_type", `mime type ${base} is not supported`);
    }

    // Streamed to disk, counting and hashing on the way: an upload past the limit (a chunked one
    // declares no length) stops there, with nothing kept in memory.
    await mkdir(dirname(finalPath), { recursive: true });
    const md5 = createHash("md5");
    let size = 0;
    const reader = body.getReader();
    const file = await open(tmp, "w");
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        size += value.byteLength;
        if (size > limit) throw tooLarge();
        md5.update(value);
        await file.write(value);
      }
    } catch (e) {
      await reader.cancel().catch(() => {});
      await file.close();
      await removeFile(tmp);
      throw e;
    }
    await file.close();
    await rename(tmp, finalPath);

    const now = new Date();
    const metadata = {
      eTag: `"${md5.digest("hex")}"`,
      size,
      mimetype,
      cacheControl,
      lastModified: now.toISOString(),
      contentLength: size,
      httpStatusCode: 200,
    };
    const owner = typeof caller.claims.sub === "string" ? caller.claims.sub : null;
    const ownerUuid = owner && /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(owner)
      ? owner
      : null;
    let previous: string | null = null;
    let row: { id: string };
    try {
      row = await asCaller(caller, async (tx) => {
        const [old] = await tx<{ version: string | null }[]>`
          select version from storage.objects where bucket_id = ${bucketId} and name = ${name} for update`;
        if (old && !upsert) throw new HttpError(409, "Duplicate", "The resource already exists");
        if (old) {
          previous = old.version;
          const [r] = await tx<{ id: string }[]>`
            update storage.objects set version = ${version}, metadata = ${tx.json(metadata)},
              user_metadata = ${userMetadata ? tx.json(userMetadata as postgres.JSONValue) : null},
              updated_at = ${now}, last_accessed_at = ${now}, owner_id = coalesce(${owner}, owner_id),
              owner = coalesce(${ownerUuid}::uuid, owner)
            where bucket_id = ${bucketId} and name = ${name} returning id`;
          if (!r) throw new HttpError(403, "Unauthorized", "new row violates row-level security policy");
          return r;
        }
        const [r] = await tx<{ id: string }[]>`
          insert into storage.objects (bucket_id, name, owner_id, owner, version, metadata, user_metadata, created_at, updated_at, last_accessed_at)
          values (${bucketId}, ${name}, ${owner}, ${ownerUuid}::uuid, ${version}, ${tx.json(metadata)},
                  ${userMetadata ? tx.json(userMetadata as postgres.JSONValue) : null}, ${now}, ${now}, ${now})
          returning id`;
        return r;
      });
    } catch (e) {
      await removeFile(finalPath);
      throw e;
    }
    if (previous && previous !== version) await removeFile(versionPath(bucketId, name, previous));
    return ok({ Id: row.id, Key: `${bucketId}/${name}` });
  }

  async function findObject(caller: StorageCaller | null, bucketId: string, name: string): Promise<ObjectRow> {
    const q = (s: postgres.Sql | postgres.TransactionSql) =>
      s<ObjectRow[]>`select * from storage.objects where bucket_id = ${bucketId} and name = ${name}`;
    const [row] = caller ? await asCaller(caller, (tx) => q(tx)) : await q(ctx.sql);
    if (!row) throw new HttpError(404, "not_found", "Object not found");
    return row;
  }

  async function download(row: ObjectRow, head: boolean): Promise<Response> {
    if (!row.version) throw new HttpError(404, "not_found", "Object not found (row has no stored file)");
    const path = versionPath(row.bucket_id, row.name, row.version);
    let size: number;
    try {
      size = (await stat(path)).size;
    } catch {
      throw new HttpError(404, "not_found", "Object not found (file missing)");
    }
    const md = row.metadata ?? {};
    const headers = new Headers({
      "content-type": String(md.mimetype ?? "application/octet-stream"),
      "content-length": String(size),
      "cache-control": String(md.cacheControl ?? "no-cache"),
      "last-modified": new Date(String(md.lastModified ?? row.updated_at)).toUTCString(),
    });
    if (md.eTag) headers.set("etag", String(md.eTag));
    if (head) return new Response(null, { status: 200, headers });
    return new Response(Readable.toWeb(createReadStream(path)) as ReadableStream, { status: 200, headers });
  }

  // Signed URLs, as Storage makes them: the caller must be able to read the object now (RLS); the
  // token (HS256: { url: "<bucket>/<name>", exp }) then lets anyone download it until it expires.
  async function signedPath(caller: StorageCaller, bucketId: string, name: string, expiresIn: number): Promise<string> {
    await findObject(caller, bucketId, name);
    const token = await new SignJWT({ url: `${bucketId}/${name}` }).setProtectedHeader({ alg: "HS256", typ: "JWT" })
      .setIssuedAt().setExpirationTime(Math.floor(Date.now() / 1000) + expiresIn).sign(signingKey);
    return `/object/sign/${bucketId}/${name}?token=${token}`;
  }

  async function signedDownload(req: Request, bucketId: string, name: string, head: boolean): Promise<Response> {
    const token = new URL(req.url).searchParams.get("token");
    if (!token) throw new HttpError(400, "InvalidRequest", "missing token query parameter");
    let claims: z.infer<typeof signedTokenClaims>;
    try {
      const { payload } = await jwtVerify(token, signingKey, { algorithms: ["HS256"] });
      claims = signedTokenClaims.parse(payload);
    } catch (e) {
      const expired = (e as { code?: string }).code === "ERR_JWT_EXPIRED";
      throw new HttpError(400, "InvalidJWT", expired ? "the signed URL has expired" : "invalid signed URL token");
    }
    if (claims.url !== `${bucketId}/${name}`) {
      throw new HttpError(400, "InvalidSignature", "the token was signed for another object");
    }
    return await download(await findObject(null, bucketId, name), head);
  }

  async function list(caller: StorageCaller, bucketId: string, body: z.infer<typeof listBody>): Promise<Response> {
    // storage-js passes the folder as `prefix`; entries one level below it come back, sub-folders
    // as { name, id: null, metadata: null } like storage.search().
    let prefix = body.prefix.replace(/^\/+/, "");
    if (prefix !== "" && !prefix.endsWith("/")) prefix += "/";
    if (prefix !== "") validObjectName(prefix.slice(0, -1));
    const sort = body.sortBy ?? { column: "name" as const, order: "asc" as const };
    const like = prefix.replace(/[\\%_]/g, (c) => "\\" + c) + "%";
    const search = (body.search ?? "").replace(/[\\%_]/g, (c) => "\\" + c) + "%";
    const rows = await asCaller(caller, (tx) =>
      tx.unsafe(
        `with o as (
           select substr(name, $3::int + 1) as rest, id, updated_at, created_at, last_accessed_at, metadata
           from storage.objects where bucket_id = $1 and name like $2
         ), e as (
           select split_part(rest, '/', 1) as name, null::uuid as id, null::timestamptz as updated_at,
                  null::timestamptz as created_at, null::timestamptz as last_accessed_at, null::jsonb as metadata
           from o where strpos(rest, '/') > 0 group by 1
           union all
           select rest, id, updated_at, created_at, last_accessed_at, metadata from o where strpos(rest, '/') = 0
         )
         select * from e where name ilike $4
         order by ${sort.column} ${sort.order} nulls first, name asc
         limit $5 offset $6`,
        [bucketId, like, prefix.length, search, body.limit, body.offset],
      ));
    return ok(rows);
  }

  async function move(caller: StorageCaller, body: z.infer<typeof moveBody>, copy: boolean): Promise<Response> {
    const srcBucket = validBucketId(body.bucketId);
    const dstBucket = validBucketId(body.destinationBucket ?? body.bucketId);
    const src = validObjectName(body.sourceKey);
    const dst = validObjectName(body.destinationKey);
    await bucketForWrite(dstBucket);
    const row = await findObject(caller, srcBucket, src);
    if (!row.version) throw new HttpError(404, "not_found", "Object not found (row has no stored file)");
    const from = versionPath(srcBucket, src, row.version);
    // The destination file exists before the row points at it (see the header comment).
    const newVersion = copy ? randomUUID() : row.version;
    const to = versionPath(dstBucket, dst, newVersion);
    await mkdir(dirname(to), { recursive: true });
    if (copy) await copyFile(from, to);
    else {
      await link(from, to).catch((e) => {
        if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
      });
    }
    try {
      const result = await asCaller(caller, async (tx) => {
        const [exists] = await tx`select 1 from storage.objects where bucket_id = ${dstBucket} and name = ${dst}`;
        if (exists) throw new HttpError(409, "Duplicate", "The resource already exists");
        if (copy) {
          const [r] = await tx<{ id: string }[]>`
            insert into storage.objects (bucket_id, name, owner_id, version, metadata, user_metadata)
            values (${dstBucket}, ${dst}, ${row.owner_id}, ${newVersion}, ${
            tx.json((row.metadata ?? {}) as postgres.JSONValue)
          },
                    ${row.user_metadata ? tx.json(row.user_metadata as postgres.JSONValue) : null})
            returning id`;
          return r.id;
        }
        const [r] = await tx<{ id: string }[]>`
          update storage.objects set bucket_id = ${dstBucket}, name = ${dst}, updated_at = now()
          where bucket_id = ${srcBucket} and name = ${src} returning id`;
        if (!r) throw new HttpError(403, "Unauthorized", "new row violates row-level security policy");
        return r.id;
      });
      if (!copy) await removeFile(from);
      return ok(copy ? { Id: result, Key: `${dstBucket}/${dst}` } : { message: "Successfully moved" });
    } catch (e) {
      if (copy || from !== to) await removeFile(to);
      throw e;
    }
  }

  async function remove(caller: StorageCaller, bucketId: string, names: string[]): Promise<Response> {
    names.forEach(validObjectName);
    const rows = await asCaller(
      caller,
      (tx) =>
        tx<ObjectRow[]>`delete from storage.objects where bucket_id = ${bucketId} and name = any(${names}) returning *`,
    );
    // Rows are gone (committed) before files: a crash in between leaves only unreferenced files.
    for (const r of rows) if (r.version) await removeFile(versionPath(bucketId, r.name, r.version));
    return ok(rows.map(fileObject));
  }

  async function buckets(req: Request, caller: StorageCaller, method: string, rest: string[]): Promise<Response> {
    const id = rest[0] !== undefined ? validBucketId(rest[0]) : undefined;
    if (method === "GET" && id === undefined) {
      const rows = await asCaller(
        caller,
        (tx) => tx<BucketRow[]>`select * from storage.buckets order by created_at, id`,
      );
      return ok(rows.map(bucketJson));
    }
    if (method === "GET" && id !== undefined && rest.length === 1) {
      const [b] = await asCaller(caller, (tx) => tx<BucketRow[]>`select * from storage.buckets where id = ${id}`);
      if (!b) throw new HttpError(404, "Bucket not found", "Bucket not found");
      return ok(bucketJson(b));
    }
    if (method === "POST" && id === undefined) {
      const body = await readJson(req, createBucketBody);
      const newId = validBucketId(body.id ?? body.name);
      const owner = typeof caller.claims.sub === "string" ? caller.claims.sub : null;
      await asCaller(caller, async (tx) => {
        const [exists] = await tx`select 1 from storage.buckets where id = ${newId}`;
        if (exists) throw new HttpError(409, "Duplicate", "The resource already exists");
        await tx`insert into storage.buckets (id, name, public, file_size_limit, allowed_mime_types, owner_id)
                 values (${newId}, ${body.name}, ${body.public ?? false}, ${parseSize(body.file_size_limit)},
                         ${body.allowed_mime_types ?? null}, ${owner})`;
      });
      return ok({ name: newId });
    }
    if (method === "PUT" && id !== undefined && rest.length === 1) {
      const body = await readJson(req, updateBucketBody);
      const n = await asCaller(caller, (tx) =>
        tx`
        update storage.buckets set
          public = coalesce(${body.public ?? null}, public),
          file_size_limit = ${body.file_size_limit === undefined ? null : parseSize(body.file_size_limit)},
          allowed_mime_types = ${body.allowed_mime_types ?? null},
          updated_at = now()
        where id = ${id}`);
      if (n.count === 0) throw new HttpError(404, "Bucket not found", "Bucket not found");
      return ok({ message: "Successfully updated" });
    }
    if (method === "POST" && id !== undefined && rest[1] === "empty" && rest.length === 2) {
      const rows = await asCaller(
        caller,
        (tx) => tx<ObjectRow[]>`delete from storage.objects where bucket_id = ${id} returning *`,
      );
      for (const r of rows) if (r.version) await removeFile(versionPath(id, r.name, r.version));
      return ok({ message: "Successfully emptied" });
    }
    if (method === "DELETE" && id !== undefined && rest.length === 1) {
      await asCaller(caller, async (tx) => {
        const [obj] = await tx`select 1 from storage.objects where bucket_id = ${id} limit 1`;
        if (obj) throw new HttpError(409, "InvalidRequest", "Bucket not empty");
        const n = await tx`delete from storage.buckets where id = ${id}`;
        if (n.count === 0) throw new HttpError(404, "Bucket not found", "Bucket not found");
      });
      return ok({ message: "Successfully deleted" });
    }
    throw new HttpError(404, "not_found", "Route not found");
  }

  async function route(req: Request, rawPath: string): Promise<Response> {
    const method = req.method.toUpperCase();
    // rawPath is what follows /storage/v1/, still percent-encoded (the gateway never normalises it,
    // so `..` arrives here to be refused rather than silently resolved).
    const seg = decodeSegments(rawPath.split("/"));
    const publicRead = seg[0] === "object" && seg[1] === "public" && (method === "GET" || method === "HEAD");
    if (publicRead) {
      const bucketId = validBucketId(seg[2] ?? "");
      const name = validObjectName(seg.slice(3).join("/"));
      const [b] = await ctx.sql<{ public: boolean }[]>`select public from storage.buckets where id = ${bucketId}`;
      if (!b?.public) throw new HttpError(400, "not_found", "Bucket not found or not public");
      return await download(await findObject(null, bucketId, name), method === "HEAD");
    }

    if (seg[0] === "object" && seg[1] === "sign" && seg.length >= 4 && (method === "GET" || method === "HEAD")) {
      return await signedDownload(
        req,
        validBucketId(seg[2]),
        validObjectName(seg.slice(3).join("/")),
        method === "HEAD",
      );
    }

    const caller = await ctx.caller(req);
    if (!caller) throw new HttpError(401, "Unauthorized", "missing or invalid JWT (apikey / Authorization)");

    if (seg[0] === "bucket") return await buckets(req, caller, method, seg.slice(1));
    if (seg[0] !== "object") throw new HttpError(404, "not_found", "Route not found");

    const [, a, b] = seg;
    if (a === "sign" && method === "POST" && seg.length >= 4) {
      const { expiresIn } = await readJson(req, signBody);
      return ok({
        signedURL: await signedPath(caller, validBucketId(b), validObjectName(seg.slice(3).join("/")), expiresIn),
      });
    }
    if (a === "sign" && method === "POST" && seg.length === 3) {
      const bucketId = validBucketId(b);
      const body = await readJson(req, signManyBody);
      return ok(
        await Promise.all(body.paths.map(async (path) => {
          try {
            return {
              error: null,
              path,
              signedURL: await signedPath(caller, bucketId, validObjectName(path), body.expiresIn),
            };
          } catch (e) {
            if (e instanceof HttpError) return { error: e.message, path, signedURL: null };
            throw e;
          }
        })),
      );
    }
    if (a === "upload" && b === "sign") {
      throw new HttpError(
        501,
        "NotImplemented",
        "signed upload URLs (createSignedUploadUrl) are not implemented by the local Storage; upload with a JWT instead",
      );
    }
    if (method === "POST" && a === "list" && seg.length === 3) {
      return await list(caller, validBucketId(b), await readJson(req, listBody));
    }
    if (method === "POST" && a === "move" && seg.length === 2) {
      return await move(caller, await readJson(req, moveBody), false);
    }
    if (method === "POST" && a === "copy" && seg.length === 2) {
      return await move(caller, await readJson(req, moveBody), true);
    }
    if (method === "DELETE" && seg.length === 2) {
      const body = await readJson(req, removeBody);
      return await remove(caller, validBucketId(a), body.prefixes);
    }
    if ((method === "GET" || method === "HEAD") && (a === "authenticated" || a === "info")) {
      const bucketId = validBucketId(b ?? "");
      const name = validObjectName(seg.slice(3).join("/"));
      const row = await findObject(caller, bucketId, name);
      if (a === "info") return ok(infoJson(row));
      return await download(row, method === "HEAD");
    }
    if (seg.length >= 3) {
      const bucketId = validBucketId(a);
      const name = validObjectName(seg.slice(2).join("/"));
      if (method === "POST" || method === "PUT") return await upload(req, caller, bucketId, name, method);
      if (method === "GET" || method === "HEAD") {
        return await download(await findObject(caller, bucketId, name), method === "HEAD");
      }
    }
    throw new HttpError(404, "not_found", "Route not found");
  }

  return async function handle(req: Request, rawPath: string): Promise<Response> {
    try {
      return await route(req, rawPath);
    } catch (e) {
      if (e instanceof HttpError) return errorBody(e.status, e.code, e.message);
      const pgCode = (e as { code?: string }).code;
      if (pgCode === "42501") return errorBody(403, "Unauthorized", (e as Error).message); // RLS / privilege
      if (pgCode === "23503") return errorBody(404, "Bucket not found", "Bucket not found");
      if (pgCode === "23505") return errorBody(409, "Duplicate", "The resource already exists");
      ctx.log?.(`[storage] ${req.method} ${rawPath}: ${e instanceof Error ? e.stack ?? e.message : String(e)}`);
      return errorBody(500, "internal", "internal error (the local stack's log has the detail)");
    }
  };
}

function bucketJson(b: BucketRow) {
  return {
    id: b.id,
    name: b.name,
    owner: b.owner ?? "",
    public: b.public,
    file_size_limit: b.file_size_limit === null ? null : Number(b.file_size_limit),
    allowed_mime_types: b.allowed_mime_types,
    created_at: b.created_at,
    updated_at: b.updated_at,
  };
}

function infoJson(r: ObjectRow) {
  const md = r.metadata ?? {};
  return {
    id: r.id,
    name: r.name,
    version: r.version,
    bucket_id: r.bucket_id,
    size: md.size ?? null,
    content_type: md.mimetype ?? null,
    cache_control: md.cacheControl ?? null,
    etag: md.eTag ?? null,
    metadata: r.user_metadata,
    last_modified: md.lastModified ?? r.updated_at,
    created_at: r.created_at,
  };
}

const VERSION_FILE = /^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})(\.tmp)?$/;

/**
 * Removes version files no row points at: what a crash between "file written" and "row committed"
 * (or between "row deleted" and "file removed") leaves behind. Only files older than `minAgeMs`
 * are considered, so uploads in flight are never touched. Returns how many files were removed.
 */
export async function sweepOrphanFiles(sql: postgres.Sql, rootDir: string, minAgeMs = 10 * 60_000): Promise<number> {
  const root = resolve(rootDir);
  let removed = 0;
  let buckets: string[];
  try {
    buckets = (await readdir(root, { withFileTypes: true })).filter((d) => d.isDirectory()).map((d) => d.name);
  } catch {
    return 0;
  }
  const cutoff = Date.now() - minAgeMs;
  for (const bucket of buckets) {
    if (!BUCKET_ID.test(bucket)) continue;
    const candidates: Array<{ path: string; name: string; version: string; tmp: boolean }> = [];
    const walk = async (dir: string, parts: string[]): Promise<void> => {
      for (const d of await readdir(dir, { withFileTypes: true })) {
        const p = join(dir, d.name);
        if (d.isDirectory()) await walk(p, [...parts, d.name]);
        else {
          const m = VERSION_FILE.exec(d.name);
          if (m && parts.length > 0 && (await stat(p)).mtimeMs < cutoff) {
            candidates.push({ path: p, name: parts.join("/"), version: m[1], tmp: !!m[2] });
          }
        }
      }
    };
    await walk(join(root, bucket), []);
    for (let i = 0; i < candidates.length; i += 1000) {
      const batch = candidates.slice(i, i + 1000);
      const live = await sql<{ name: string; version: string }[]>`
        select o.name, o.version from storage.objects o
        join unnest(${batch.map((c) => c.name)}::text[], ${batch.map((c) => c.version)}::text[]) as f(name, version)
          on o.name = f.name and o.version = f.version
        where o.bucket_id = ${bucket}`;
      const keep = new Set(live.map((r) => `${r.name}\u0000${r.version}`));
      for (const c of batch) {
        if (c.tmp || !keep.has(`${c.name}\u0000${c.version}`)) {
          await unlink(c.path).catch(() => {});
          removed++;
        }
      }
    }
  }
  return removed;
}
