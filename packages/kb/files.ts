// kb push --files: copies the named buckets' Storage objects incrementally, after the rows.
//
// Both sides are listed from storage.objects (one query each, by name); an object is copied when the
// target lacks it or has a different size or hash (eTag). Each upload is an upsert of one whole
// object, so a killed run leaves only complete objects and the next run copies what is left.
// Target objects missing from the source are deleted in replace mode only.
import type { SupabaseClient } from "@supabase/supabase-js";
import pLimit from "p-limit";
import { z } from "zod";
import { createNodeClient } from "../connection/node-client.ts";
import type { Sql } from "./catalog.ts";
import { type KbEnvironment, KbError } from "./env.ts";
import { fmtBytes, fmtInt, Progress } from "./progress.ts";
import type { PushMode } from "./push.ts";

const bucketName = z.string().regex(/^[a-z0-9][a-z0-9._-]{0,62}$/, "a bucket id (lower case letters, digits, . _ -)");

export interface FilesOptions {
  from: KbEnvironment;
  to: KbEnvironment;
  buckets: string[];
  mode: PushMode;
  dryRun?: boolean;
  concurrency?: number;
  log: (l: string) => void;
  progress: (l: string) => void;
}

export interface BucketResult {
  bucket: string;
  sourceObjects: number;
  copied: number;
  bytes: number;
  deleted: number;
  unchanged: number;
}

interface ObjectRow {
  name: string;
  size: number;
  etag: string | null;
  mimetype: string | null;
}

async function listObjects(sql: Sql, bucket: string): Promise<Map<string, ObjectRow>> {
  const rows = await sql<{ name: string; size: string | null; etag: string | null; mimetype: string | null }[]>`
    select name, metadata->>'size' as size, metadata->>'eTag' as etag, metadata->>'mimetype' as mimetype
    from storage.objects where bucket_id = ${bucket} order by name`;
  return new Map(
    rows.map((r) => [r.name, { name: r.name, size: Number(r.size ?? 0), etag: r.etag, mimetype: r.mimetype }]),
  );
}

export function parseBuckets(list: string): string[] {
  return list.split(",").map((b) => b.trim()).filter(Boolean).map((b) => {
    const r = bucketName.safeParse(b);
    if (!r.success) throw new KbError(`--files: "${b}" is not ${r.error.issues[0].message}`);
    return r.data;
  });
}

/** Checks the buckets before anything is written: each must exist in the source. */
export async function checkBuckets(src: Sql, buckets: string[]): Promise<void> {
  const rows = await src<{ id: string }[]>`select id from storage.buckets where id = any (${buckets})`;
  const missing = buckets.filter((b) => !rows.some((r) => r.id === b));
  if (missing.length) {
    throw new KbError(`unknown bucket${missing.length > 1 ? "s" : ""} in the source: ${missing.join(", ")}`);
  }
}

export async function pushFiles(src: Sql, tgt: Sql, o: FilesOptions): Promise<BucketResult[]> {
  const from = client(o.from);
  const to = client(o.to);
  const results: BucketResult[] = [];
  for (const bucket of o.buckets) {
    const [s, t] = await Promise.all([listObjects(src, bucket), listObjects(tgt, bucket)]);
    const copy = [...s.values()].filter((x) => {
      const y = t.get(x.name);
      return !y || y.size !== x.size || (x.etag !== null && y.etag !== null && x.etag !== y.etag);
    });
    const remove = o.mode === "replace" ? [...t.keys()].filter((n) => !s.has(n)) : [];
    const bytes = copy.reduce((a, x) => a + x.size, 0);
    o.log(
      `bucket ${bucket}: ${fmtInt(s.size)} objects in the source, ${fmtInt(copy.length)} to copy (${
        fmtBytes(bytes)
      }), ` +
        `${fmtInt(remove.length)} to delete, ${fmtInt(s.size - copy.length)} unchanged`,
    );
    const r: BucketResult = {
      bucket,
      sourceObjects: s.size,
      copied: 0,
      bytes: 0,
      deleted: 0,
      unchanged: s.size - copy.length,
    };
    results.push(r);
    if (o.dryRun) continue;

    await ensureBucket(src, to, bucket);
    const bar = new Progress(`files ${bucket}`, copy.length, bytes, o.progress);
    const limit = pLimit(o.concurrency ?? 4);
    await Promise.all(copy.map((x) =>
      limit(async () => {
        const dl = await from.storage.from(bucket).download(x.name);
        if (dl.error || !dl.data) {
          throw new KbError(
            `download ${bucket}/${x.name} from ${o.from.name} failed: ${dl.error?.message ?? "no data"}`,
            1,
          );
        }
        const body = new Uint8Array(await dl.data.arrayBuffer());
        const up = await to.storage.from(bucket).upload(x.name, body, {
          upsert: true,
          contentType: x.mimetype ?? "application/octet-stream",
          metadata: { lane: "bulk" }, // a promotion: files_queue's bulk lane (see the files_queue lanes migration)
        });
        if (up.error) throw new KbError(`upload ${bucket}/${x.name} to ${o.to.name} failed: ${up.error.message}`, 1);
        r.copied += 1;
        r.bytes += body.byteLength;
        bar.add(1, body.byteLength);
      })
    ));
    bar.done();
    for (let i = 0; i < remove.length; i += 100) {
      const { error } = await to.storage.from(bucket).remove(remove.slice(i, i + 100));
      if (error) throw new KbError(`delete in ${bucket} on ${o.to.name} failed: ${error.message}`, 1);
      r.deleted += Math.min(100, remove.length - i);
    }
  }
  return results;
}

function client(env: KbEnvironment): SupabaseClient {
  return createNodeClient(env.apiUrl!, env.serviceKey!);
}

async function ensureBucket(src: Sql, to: SupabaseClient, bucket: string): Promise<void> {
  const existing = await to.storage.getBucket(bucket);
  if (existing.data) return;
  const [b] = await src<{ public: boolean }[]>`select public from storage.buckets where id = ${bucket}`;
  const { error } = await to.storage.createBucket(bucket, { public: b?.public ?? false });
  if (error && !/exists/i.test(error.message)) {
    throw new KbError(`cannot create bucket ${bucket} on the target: ${error.message}`, 1);
  }
}
