-- legal_documents is an embedding source: every upsert by the files worker lands in
-- embedding_sync_queue through the embedding-sync trigger, so collected law becomes searchable.
-- The embedded text is labelled (title, number, status, parent text) so a search for "Code civil
-- article 1240" finds the article even though its body never says so.
create or replace function public.legal_document_embedding_content(doc jsonb)
returns text
language sql
immutable
set search_path = ''
as $$
  select concat_ws(E'\n',
    case when doc ->> 'title' is not null then 'Titre: ' || (doc ->> 'title') end,
    case when doc ->> 'number' is not null then 'Numéro: ' || (doc ->> 'number') end,
    case when doc ->> 'parent_title' is not null then 'Texte: ' || (doc ->> 'parent_title') end,
    case when doc ->> 'legal_status' is not null then 'État: ' || (doc ->> 'legal_status') end,
    doc ->> 'content')
$$;

select public.register_embedding_source(
  'public.legal_documents'::regclass,
  content_function => 'public.legal_document_embedding_content(jsonb)'::regprocedure,
  chunk_tokens => 512,
  chunk_overlap_tokens => 64
);
