-- Citation metadata on every legal_documents chunk (issue 14), through register_embedding_source's
-- metadata_columns (issue 13): the assistant can cite "Code civil, art. 1792, version en vigueur
-- depuis le 1979-01-01" with the link to that exact version, and search can filter on it, e.g.
-- hybrid_search(..., filter => '{"in_force": true}'). Must run after 20260106000000_embedding_sync_metadata.
-- The content (and so every embedding) is unchanged; a change to these columns alone (the daily
-- in_force job) rewrites only the chunks' metadata, with no provider call.
-- Chunks embedded before this migration get their metadata from one
-- `select * from resync_embedding_sources('legal_documents')` (no provider call either).
select public.register_embedding_source(
  'public.legal_documents'::regclass,
  content_function => 'public.legal_document_embedding_content(jsonb)'::regprocedure,
  chunk_tokens => 512,
  chunk_overlap_tokens => 64,
  metadata_columns => array[
    'category', 'doc_type', 'title', 'parent_title', 'parent_title_long', 'number', 'section_path', 'url',
    'legal_status', 'in_force', 'start_date', 'end_date', 'modifications']
);
