// The Légifrance bucket's handler: a collected JSON file -> one legal_documents row.
import type postgres from "postgres";
import { type LegalDocument, parseCollectedFile } from "../../legifrance/parser.ts";
import { parseDocumentPath } from "../../legifrance/ids.ts";
import type { FileHandler } from "./types.ts";

export const legifranceHandler: FileHandler<LegalDocument> = {
  async prepare(row, { store }) {
    const path = parseDocumentPath(row.file_path);
    if (!path) return { error: `not a collected Légifrance path: ${row.file_path}`, permanent: true };
    let text: string;
    try {
      text = await store.get(row.bucket_id, row.file_path);
    } catch (e) {
      return { error: (e as Error).message, permanent: false };
    }
    const parsed = parseCollectedFile(text);
    if (!parsed.ok) return { error: parsed.reason, permanent: true };
    if (parsed.doc.id !== path.id || parsed.doc.category !== path.category) {
      return { error: `file content (${parsed.doc.category}/${parsed.doc.id}) does not match its path`, permanent: true };
    }
    return { value: parsed.doc };
  },

  async write(tx, items) {
    const keep = items.map((o) => ({ ...o.value, file_path: o.row.file_path }));
    await tx`
      insert into public.legal_documents as d (id, category, fond, doc_type, title, number, legal_status,
        start_date, end_date, parent_id, parent_title, url, content, file_path, collected_at)
      select x.id, x.category, x.fond, x.doc_type, x.title, x.number, x.legal_status,
             x.start_date, x.end_date, x.parent_id, x.parent_title, x.url, x.content, x.file_path, now()
        from jsonb_to_recordset(${tx.json(keep as unknown as postgres.JSONValue)}) as x(
          id text, category text, fond text, doc_type text, title text, number text, legal_status text,
          start_date date, end_date date, parent_id text, parent_title text, url text, content text, file_path text)
      on conflict (id) do update set
        category = excluded.category, fond = excluded.fond, doc_type = excluded.doc_type, title = excluded.title,
        number = excluded.number, legal_status = excluded.legal_status, start_date = excluded.start_date,
        end_date = excluded.end_date, parent_id = excluded.parent_id, parent_title = excluded.parent_title,
        url = excluded.url, content = excluded.content, file_path = excluded.file_path,
        collected_at = excluded.collected_at, updated_at = now()
      where (d.category, d.fond, d.doc_type, d.title, d.number, d.legal_status, d.start_date, d.end_date,
             d.parent_id, d.parent_title, d.url, d.content, d.file_path)
            is distinct from
            (excluded.category, excluded.fond, excluded.doc_type, excluded.title, excluded.number, excluded.legal_status,
             excluded.start_date, excluded.end_date, excluded.parent_id, excluded.parent_title, excluded.url,
             excluded.content, excluded.file_path)`;
  },
};
