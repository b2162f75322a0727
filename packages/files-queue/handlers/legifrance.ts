// The Légifrance bucket's handler: a collected JSON file -> one legal_documents row.
import type postgres from "postgres";
import { documentHash, type LegalDocument, parseCollectedFile } from "../../legifrance/parser.ts";
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
      return {
        error: `file content (${parsed.doc.category}/${parsed.doc.id}) does not match its path`,
        permanent: true,
      };
    }
    return { value: parsed.doc };
  },

  async write(tx, items) {
    // in_force is not written here: a trigger computes it from the status and dates (SQL decides).
    const keep = items.map((o) => ({ ...o.value, parse_hash: documentHash(o.value), file_path: o.row.file_path }));
    const written = await tx`
      insert into public.legal_documents as d (id, category, fond, doc_type, title, number, legal_status,
        start_date, end_date, parent_id, parent_title, parent_title_long, section_path, url, modifications,
        content, parse_hash, file_path, collected_at)
      select x.id, x.category, x.fond, x.doc_type, x.title, x.number, x.legal_status,
             x.start_date, x.end_date, x.parent_id, x.parent_title, x.parent_title_long, x.section_path, x.url,
             x.modifications, x.content, x.parse_hash, x.file_path, now()
        from jsonb_to_recordset(${tx.json(keep as unknown as postgres.JSONValue)}) as x(
          id text, category text, fond text, doc_type text, title text, number text, legal_status text,
          start_date date, end_date date, parent_id text, parent_title text, parent_title_long text,
          section_path text, url text, modifications jsonb, content text, parse_hash text, file_path text)
      on conflict (id) do update set
        category = excluded.category, fond = excluded.fond, doc_type = excluded.doc_type, title = excluded.title,
        number = excluded.number, legal_status = excluded.legal_status, start_date = excluded.start_date,
        end_date = excluded.end_date, parent_id = excluded.parent_id, parent_title = excluded.parent_title,
        parent_title_long = excluded.parent_title_long, section_path = excluded.section_path,
        url = excluded.url, modifications = excluded.modifications, content = excluded.content,
        parse_hash = excluded.parse_hash, file_path = excluded.file_path,
        collected_at = excluded.collected_at, updated_at = now()
      where (d.parse_hash, d.file_path) is distinct from (excluded.parse_hash, excluded.file_path)`;
    return keep.length - written.count;
  },
};
