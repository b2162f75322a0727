-- match_documents and hybrid_search under the reader's RLS, with their indexes.
--
-- Since they became security invoker (20260110999999), a user's call runs under the RLS policy of
-- documentation_embeddings, and PostgreSQL must evaluate that policy before any qual that is not
-- leakproof: jsonb `@>` (the metadata filter) and tsvector `@@` (the full text) are not, so neither the
-- GIN metadata index nor the full-text index could serve a user, and a selective metadata filter fell
-- back to an HNSW walk that can miss matching chunks (6 rows tagged 'rare' among 3,000: 5 found).
--
-- So the candidates come first, chosen with the indexes by the two functions below (owner's rights:
-- they return chunk ids only, never content), and the caller's RLS then decides on those candidates
-- by primary key. The service role gets exactly what it got before: the same ordering over the same
-- rows. A user who may read few of the candidates gets fewer results, never another user's chunk.
-- Without a metadata filter the vector branch still walks HNSW under RLS (iterative scan), which finds
-- enough readable chunks however sparse they are.

do $$
declare
  dims constant int := public.embedding_dimensions();
begin
  execute format($f$
    -- The nearest chunks that match a metadata / source_table filter (GIN serves a selective filter,
    -- HNSW with iterative scan a broad one).
    create function public.embedding_filter_candidates(
      query_embedding extensions.vector(%1$s), filter jsonb, cap int
    ) returns bigint[]
    language sql stable
    security definer
    set search_path = public, extensions
    set hnsw.iterative_scan = strict_order
    as $b$
      select coalesce(array_agg(s.id), '{}') from (
        select c.id from documentation_embeddings c
        where (filter->>'source_table' is null or c.source_table = filter->>'source_table')
          and c.metadata @> (coalesce(filter, '{}'::jsonb) - 'source_table')
        order by c.embedding <=> query_embedding
        limit least(greatest(cap, 1), 10000)) s
    $b$;
  $f$, dims);
end $$;

-- The best full-text matches of a question (any meaningful word, ts_rank_cd), with the same filter.
create function public.embedding_text_candidates(query_text text, filter jsonb, cap int)
returns bigint[]
language sql stable
security definer
set search_path = public, extensions
as $$
  select coalesce(array_agg(s.id), '{}') from (
    select c.id from documentation_embeddings c, public.embedding_question_tsquery(query_text) q(tsq)
    where c.fts @@ q.tsq
      and (filter->>'source_table' is null or c.source_table = filter->>'source_table')
      and c.metadata @> (coalesce(filter, '{}'::jsonb) - 'source_table')
    order by ts_rank_cd(c.fts, q.tsq, 1) desc, c.id
    limit least(greatest(cap, 1), 10000)) s
$$;

do $$
declare
  dims constant int := public.embedding_dimensions();
begin
  execute format($f$
    create or replace function public.match_documents(
      query_embedding extensions.vector(%1$s),
      match_count int default 10,
      filter jsonb default '{}'::jsonb
    ) returns table (id bigint, source_table text, source_id text, chunk_index int, content text,
                     metadata jsonb, similarity double precision)
    language sql stable
    security invoker
    set search_path = public, extensions
    set hnsw.iterative_scan = strict_order
    as $b$
      (select e.id, e.source_table, e.source_id, e.chunk_index, e.content, e.metadata,
              1 - (e.embedding <=> query_embedding) as similarity
       from unnest(embedding_filter_candidates(query_embedding, filter, least(greatest(match_count, 1), 200) * 10)) k(id)
       join documentation_embeddings e on e.id = k.id
       where coalesce(filter, '{}'::jsonb) <> '{}'::jsonb
       order by e.embedding <=> query_embedding
       limit least(greatest(match_count, 1), 200))
      union all
      (select e.id, e.source_table, e.source_id, e.chunk_index, e.content, e.metadata,
              1 - (e.embedding <=> query_embedding) as similarity
       from documentation_embeddings e
       where coalesce(filter, '{}'::jsonb) = '{}'::jsonb
       order by e.embedding <=> query_embedding
       limit least(greatest(match_count, 1), 200))
    $b$;

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
    security invoker
    set search_path = public, extensions
    set hnsw.iterative_scan = strict_order
    as $b$
      with full_text as (
        select k.id, row_number() over (order by k.ord) as rank_ix
        from unnest(embedding_text_candidates(query_text, filter, least(greatest(match_count, 1), 200) * 10))
               with ordinality k(id, ord)
        join documentation_embeddings c on c.id = k.id      -- the caller's RLS decides here
        order by k.ord
        limit least(greatest(match_count, 1), 200) * 2
      ), semantic as (
        -- No embedding, no vector branch: the gate keeps match_documents from running at all.
        select m.id, row_number() over (order by m.similarity desc) as rank_ix
        from (select where query_embedding is not null) gate,
             lateral match_documents(query_embedding, least(greatest(match_count, 1), 200) * 2, filter) m
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

    revoke all on function public.embedding_filter_candidates(extensions.vector(%1$s), jsonb, int) from public, anon, authenticated;
    grant execute on function public.embedding_filter_candidates(extensions.vector(%1$s), jsonb, int) to authenticated, service_role;
  $f$, dims);
end $$;

revoke all on function public.embedding_text_candidates(text, jsonb, int) from public, anon, authenticated;
grant execute on function public.embedding_text_candidates(text, jsonb, int) to authenticated, service_role;
