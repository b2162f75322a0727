// The client-documents bucket's handler: `<client_id>/<file name>` (PDF, Markdown, text) -> one
// client_documents row and one client_document_pages row per page with text. The pages are the
// embedding source, so an unchanged page (same text) is not re-embedded on a re-upload.
import type postgres from "postgres";
import { extractDocument, type ExtractedDocument } from "../extract.ts";
import type { FileHandler } from "./types.ts";

export const DEFAULT_MAX_BYTES = 20 * 1024 * 1024;

// A client id (uuid) and one file name: no sub-folders, no dot-only names.
const CLIENT_PATH = /^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\/([^/]{1,255})$/i;

export function parseClientPath(path: string): { clientId: string; fileName: string } | null {
  const m = CLIENT_PATH.exec(path);
  if (!m || /^\.+$/.test(m[2])) return null;
  return { clientId: m[1].toLowerCase(), fileName: m[2] };
}

interface Prepared {
  clientId: string;
  size: number;
  doc: ExtractedDocument;
}

export function clientDocumentsHandler(opts: { maxBytes?: number } = {}): FileHandler<Prepared> {
  const maxBytes = opts.maxBytes ?? DEFAULT_MAX_BYTES;
  return {
    async prepare(row, { store, sql }) {
      const path = parseClientPath(row.file_path);
      if (!path) {
        return { error: `not a client document path (<client_id>/<file name>): ${row.file_path}`, permanent: true };
      }
      const tooLarge = (n: number) => ({ error: `file too large: ${n} bytes (limit ${maxBytes})`, permanent: true });
      if (row.file_size != null && Number(row.file_size) > maxBytes) return tooLarge(Number(row.file_size));
      const [client] = await sql`select 1 from public.clients where id = ${path.clientId}`;
      if (!client) return { error: `unknown client ${path.clientId} (no row in public.clients)`, permanent: true };
      let bytes: Uint8Array;
      try {
        bytes = await store.getBytes(row.bucket_id, row.file_path);
      } catch (e) {
        return { error: (e as Error).message, permanent: false };
      }
      if (bytes.length > maxBytes) return tooLarge(bytes.length);
      const x = await extractDocument(row.file_path, bytes);
      if (!x.ok) return { error: x.reason, permanent: true };
      return { value: { clientId: path.clientId, size: bytes.length, doc: x.doc } };
    },

    async write(tx, items) {
      for (const { row, value } of items) {
        const { doc } = value;
        const [d] = await tx<{ id: string }[]>`
          insert into public.client_documents as d (client_id, bucket_id, path, title, content, pages, mimetype, size)
          values (${value.clientId}, ${row.bucket_id}, ${row.file_path}, ${doc.title}, ${doc.pages.join("\f")},
                  ${doc.pages.length}, ${doc.mimetype}, ${value.size})
          on conflict (path) do update set client_id = excluded.client_id, title = excluded.title, content = excluded.content,
            pages = excluded.pages, mimetype = excluded.mimetype, size = excluded.size, updated_at = now()
          returning id`;
        const pages = doc.pages.map((content, i) => ({ page: i + 1, content })).filter((p) => p.content !== "");
        // Only pages whose text changed are written (and so re-embedded); pages that are gone are deleted.
        await tx`
          insert into public.client_document_pages as p (document_id, client_id, page, content)
          select ${d.id}, ${value.clientId}, x.page, x.content
            from jsonb_to_recordset(${tx.json(pages as unknown as postgres.JSONValue)}) as x(page int, content text)
          on conflict (document_id, page) do update set content = excluded.content, client_id = excluded.client_id, updated_at = now()
          where (p.content, p.client_id) is distinct from (excluded.content, excluded.client_id)`;
        await tx`
          delete from public.client_document_pages
           where document_id = ${d.id} and page <> all(${pages.map((p) => p.page)}::int[])`;
      }
      return 0; // the document row itself is always refreshed; unchanged pages are skipped above
    },
  };
}
