-- match_documents and hybrid_search follow the reader's rights (issue 12), like search_documents: they
-- become security invoker, so the RLS policy on documentation_embeddings (see
-- 20260110000000_search_rights.sql) hides every chunk whose source row the caller may not SELECT.
-- The service role (BYPASSRLS) still sees everything; anon still has no grant.
-- Their bodies are unchanged (ALTER, not CREATE OR REPLACE). HNSW's iterative scan keeps walking the
-- graph until match_count readable chunks are found instead of stopping at ef_search candidates, many
-- of which a user may not read; strict_order keeps the rows in exact distance order.
do $$
declare
  dims constant int := public.embedding_dimensions();
begin
  execute format($f$
    alter function public.match_documents(extensions.vector(%1$s), int, jsonb)
      security invoker set hnsw.iterative_scan = 'strict_order';
    alter function public.hybrid_search(text, extensions.vector(%1$s), int, jsonb, double precision, double precision, int)
      security invoker set hnsw.iterative_scan = 'strict_order';
  $f$, dims);
end $$;
