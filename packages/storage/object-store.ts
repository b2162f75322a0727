// The Storage port used by the Légifrance collector (put) and the files worker (get). The real
// adapter goes through supabase-js Storage, so object rows are written by Storage itself and the
// files_queue trigger fires exactly as it does on a hosted project.
import type { SupabaseClient } from "@supabase/supabase-js";
import { z } from "zod";

// Supabase Storage's bucket-name rule (storage-api isValidBucketName): S3-safe characters only, no "/",
// at most 100 characters; "." and ".." are refused since they mean something in a path.
export const bucketNameSchema = z
  .string()
  .min(1)
  .max(100)
  .regex(/^[A-Za-z0-9_!\-.*'() &$@=;:+,?]+$/, "bucket names may only contain letters, digits and !-.*'() &$@=;:+,?_")
  .refine((b) => b !== "." && b !== "..", "invalid bucket name");

export interface ObjectStore {
  /**
   * Writes (upserts) an object. `metadata` is the object's user metadata; `{ lane: "bulk" }` queues it
   * in files_queue's bulk lane.
   */
  put(
    bucket: string,
    path: string,
    body: string,
    contentType: string,
    metadata?: Record<string, string>,
  ): Promise<void>;
  /** Reads an object's bytes as UTF-8 text. */
  get(bucket: string, path: string): Promise<string>;
  /** Reads an object's raw bytes (PDFs). */
  getBytes(bucket: string, path: string): Promise<Uint8Array>;
}

export class ObjectStoreError extends Error {
  constructor(message: string, readonly status?: number) {
    super(message);
  }
}

export function supabaseObjectStore(client: SupabaseClient): ObjectStore {
  return {
    async put(bucket, path, body, contentType, metadata) {
      const { error } = await client.storage.from(bucket).upload(path, new Blob([body], { type: contentType }), {
        upsert: true,
        contentType,
        ...(metadata ? { metadata } : {}),
      });
      if (error) throw new ObjectStoreError(`upload ${bucket}/${path}: ${error.message}`, statusOf(error));
    },
    async get(bucket, path) {
      const { data, error } = await client.storage.from(bucket).download(path);
      if (error || !data) {
        throw new ObjectStoreError(`download ${bucket}/${path}: ${error?.message ?? "no data"}`, statusOf(error));
      }
      return await data.text();
    },
    async getBytes(bucket, path) {
      const { data, error } = await client.storage.from(bucket).download(path);
      if (error || !data) {
        throw new ObjectStoreError(`download ${bucket}/${path}: ${error?.message ?? "no data"}`, statusOf(error));
      }
      return new Uint8Array(await data.arrayBuffer());
    },
  };
}

/**
 * Storage did not answer, or answered 5xx: it or its database is restarting. An upload is an upsert,
 * so it may be sent again; a 4xx (no such bucket, refused) is the request's own fault.
 */
export function isStorageUnavailable(e: unknown): boolean {
  return e instanceof ObjectStoreError && (e.status === undefined || e.status >= 500);
}

function statusOf(error: unknown): number | undefined {
  const e = error as { status?: number; statusCode?: string | number } | null;
  const s = Number(e?.status ?? e?.statusCode);
  return Number.isFinite(s) ? s : undefined;
}
