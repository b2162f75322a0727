-- Relational -> vector sync: search quality (issue 13, points 3 and 4).
--
-- * The full-text branch matches ANY meaningful word of the question, ranked by ts_rank_cd (rows with
--   more of the words, closer together, first). websearch_to_tsquery required every word, so a natural
--   question ("combien de jours de congé par mois ?") found nothing. French stop words are dropped by
--   the french configuration; question words and modal verbs ("combien", "comment", "peut-on", …) too.
-- * hybrid_search with a null query_embedding is a text-only search: only rows matching the text, scored
--   by their full-text rank alone (the vector branch used to order by a null distance and hand arbitrary
--   rows the same scores as real hits). A null or empty query_text with an embedding is vector-only.

-- The tsquery of a question: its french lexemes joined with OR. Built from the lexemes themselves
-- (tsvector -> text[] -> tsquery), never by splicing the user's text into query syntax.
create function public.embedding_question_tsquery(query_text text) returns tsquery
language sql
immutable
parallel safe
set search_path = ''
as $$
  select pg_catalog.string_agg(pg_catalog.quote_literal(l), ' | ')::pg_catalog.tsquery
  from pg_catalog.unnest(pg_catalog.tsvector_to_array(
         pg_catalog.to_tsvector('pg_catalog.french'::pg_catalog.regconfig, coalesce(query_text, '')))) as l
  where l !~ '\\'
    and l <> all (pg_catalog.tsvector_to_array(pg_catalog.to_tsvector('pg_catalog.french'::pg_catalog.regconfig,
      'combien comment pourquoi quand quel quelle quels quelles lequel laquelle lesquels lesquelles quoi où '
      || 'est-ce qu''est-ce puis-je peut-on dois-je faut-il a-t-il y a-t-il peux peut puis dois faut savoir voudrais')))
$$;

do $$
declare
  dims constant int := public.embedding_dimensions();
begin
  execute format($f$
    create or replace function public.hybrid_search(
      query_text text,
      query_embedding extensions.vector(%1$s),
      match_count int default 10,
      filter jsonb default '{}'::jsonb,
      full_text_weight double precision default 1,
      semantic_weight double precision default 1,
      rrf_k int default 50
    ) returns table (id bigint, source_table text, source_id text, chunk_index int, content text,
                     metadata jsonb, score double precision)
    language sql stable
    security definer
    set search_path = public, extensions
    as $b$
      with q as (
        select public.embedding_question_tsquery(query_text) as tsq
      ), full_text as (
        select c.id, row_number() over (order by ts_rank_cd(c.fts, q.tsq, 1) desc, c.id) as rank_ix
        from documentation_embeddings c, q
        where c.fts @@ q.tsq
          and (filter->>'source_table' is null or c.source_table = filter->>'source_table')
          and c.metadata @> (coalesce(filter, '{}'::jsonb) - 'source_table')
        order by rank_ix
        limit least(greatest(match_count, 1), 200) * 2
      ), semantic as (
        -- Ordered by distance with a LIMIT so the HNSW index serves it; none without an embedding.
        select n.id, row_number() over (order by n.dist) as rank_ix
        from (select c.id, c.embedding <=> query_embedding as dist
              from documentation_embeddings c
              where query_embedding is not null
                and (filter->>'source_table' is null or c.source_table = filter->>'source_table')
                and c.metadata @> (coalesce(filter, '{}'::jsonb) - 'source_table')
              order by c.embedding <=> query_embedding
              limit least(greatest(match_count, 1), 200) * 2) n
      )
      select e.id, e.source_table, e.source_id, e.chunk_index, e.content, e.metadata,
             coalesce(1.0 / (rrf_k + ft.rank_ix), 0.0) * full_text_weight
           + coalesce(1.0 / (rrf_k + se.rank_ix), 0.0) * semantic_weight as score
      from full_text ft
      full outer join semantic se on se.id = ft.id
      join documentation_embeddings e on e.id = coalesce(ft.id, se.id)
      order by score desc, e.id
      limit least(greatest(match_count, 1), 200)
    $b$;
  $f$, dims);
end $$;

revoke all on function public.embedding_question_tsquery(text) from public, anon;
-- Granted like the searches it serves, so callers can see how a question is matched.
grant execute on function public.embedding_question_tsquery(text) to authenticated, service_role;

-- A metadata filter with the HNSW index: the index hands back ef_search (40) nearest candidates and the
-- filter applies after, so a filter matching 1 chunk in 20 could return none. pgvector >= 0.8's
-- iterative scan goes on scanning the index until enough candidates pass the filter (in exact
-- distance order, up to hnsw.max_scan_tuples), so `filter` returns a full page when one exists.
alter function public.match_documents(extensions.vector, int, jsonb) set hnsw.iterative_scan = strict_order;
alter function public.hybrid_search(text, extensions.vector, int, jsonb, double precision, double precision, int)
  set hnsw.iterative_scan = strict_order;
