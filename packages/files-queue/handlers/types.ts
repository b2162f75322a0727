// A watched bucket's handler: what process-files-queue does with each of its files. The queue rules
// (claim, lease, complete, fail, backoff) are the same for every bucket and stay in SQL; a handler only
// turns one file into rows.
import type postgres from "postgres";
import type { ObjectStore } from "../../storage/object-store.ts";

export interface ClaimedFile {
  id: string;
  file_path: string;
  bucket_id: string;
  file_size: string | number | null;
  /** The row's priority lane (files_queue.lane): bulk files write bulk embedding jobs. */
  lane?: "live" | "bulk";
}

/** A file that cannot be handled: `permanent` when retrying cannot help (its bytes are wrong). */
export interface FileFailure {
  error: string;
  permanent: boolean;
}

export interface FileHandler<T> {
  /** Downloads and parses one claimed file. Runs with no transaction open. */
  prepare(row: ClaimedFile, deps: { store: ObjectStore; sql: postgres.Sql }): Promise<{ value: T } | FileFailure>;
  /**
   * Writes the files this worker still leases, inside the transaction that completes their rows.
   * Returns how many were already up to date (nothing written).
   */
  write(tx: postgres.TransactionSql, items: { row: ClaimedFile; value: T }[]): Promise<number>;
}
