-- Relational -> vector sync, part 4: what operators and assistants read.
-- Views are security_invoker: they show only what the caller may see in the underlying tables
-- (the service role everything; anon/authenticated nothing, RLS has no policy for them).

-- The runbook's dashboard: SELECT * FROM embedding_sync_status;
create view public.embedding_sync_status with (security_invoker = true) as
select q.source_table,
       count(*) filter (where q.status = 'pending') as pending,
       count(*) filter (where q.status = 'processing') as processing,
       count(*) filter (where q.status = 'completed') as completed,
       count(*) filter (where q.status = 'failed') as failed,
       now() - min(q.created_at) filter (where q.status = 'pending') as oldest_pending_age,
       max(q.processed_at) as last_processed_at
from public.embedding_sync_queue q
group by q.source_table;

-- Jobs a worker holds past its lease: recover_stuck_embedding_jobs() will return them.
create view public.embedding_sync_stuck with (security_invoker = true) as
select q.id, q.source_table, q.source_id, q.action, q.locked_by, q.locked_at, q.lease_until,
       now() - q.lease_until as overdue, q.retry_count, q.last_error
from public.embedding_sync_queue q
where q.status = 'processing' and q.lease_until < now();

-- The dead letter, for operators: failed jobs with their error.
create view public.embedding_sync_dead_letter with (security_invoker = true) as
select q.id, q.source_table, q.source_id, q.action, q.retry_count, q.last_error, q.created_at, q.processed_at
from public.embedding_sync_queue q
where q.status = 'failed';

-- Coverage needs one count per registered table, so a function reads them (as the caller) and
-- the view exposes it. Rows counted are the ones the publish filter keeps.
create function public.embedding_coverage()
returns table (source_table text, rows bigint, rows_with_embeddings bigint, rows_missing bigint,
               orphan_embeddings bigint)
language plpgsql
stable
security invoker
set search_path = public, extensions
as $$
#variable_conflict use_column
declare
  src embedding_sources;
begin
  for src in select * from embedding_sources s order by s.source_table loop
    return query execute format($q$
      with x as (select %2$s from %3$s r), src_rows as (select x.* from x as x(id, content) where x.content is not null),
           emb as (select distinct e.source_id from documentation_embeddings e where e.source_table = %1$L)
      select %1$L::text,
             (select count(*) from src_rows),
             (select count(*) from src_rows s join emb on emb.source_id = s.id),
             (select count(*) from src_rows s where not exists (select from emb where emb.source_id = s.id)),
             (select count(*) from emb where not exists (select from src_rows s where s.id = emb.source_id))
      $q$, src.source_table, src.row_sql, src.relid::regclass);
  end loop;
end $$;

create view public.embedding_sync_coverage with (security_invoker = true) as
select * from public.embedding_coverage();

revoke all on public.embedding_sync_status, public.embedding_sync_stuck, public.embedding_sync_dead_letter,
  public.embedding_sync_coverage from anon, authenticated;
grant select on public.embedding_sync_status, public.embedding_sync_stuck, public.embedding_sync_dead_letter,
  public.embedding_sync_coverage to service_role;
revoke all on function public.embedding_coverage() from public, anon, authenticated;
grant execute on function public.embedding_coverage() to service_role;

-- Search. Definer functions (granted on purpose to authenticated and service_role) so callers need
-- no access to the tables. filter: {"source_table": "faq_items", ...}; other keys must be contained
-- in the chunk's metadata.
do $$
declare
  dims constant int := public.embedding_dimensions();
begin
  execute format($f$
    create function public.match_documents(
      query_embedding extensions.vector(%1$s),
      match_count int default 10,
      filter jsonb default '{}'::jsonb
    ) returns table (id bigint, source_table text, source_id text, chunk_index int, content text,
                     metadata jsonb, similarity double precision)
    language sql stable
    security definer
    set search_path = public, extensions
    as $b$
      select e.id, e.source_table, e.source_id, e.chunk_index, e.content, e.metadata,
             1 - (e.embedding <=> query_embedding) as similarity
      from documentation_embeddings e
      where (filter->>'source_table' is null or e.source_table = filter->>'source_table')
        and e.metadata @> (coalesce(filter, '{}'::jsonb) - 'source_table')
      order by e.embedding <=> query_embedding
      limit least(greatest(match_count, 1), 200)
    $b$;

    -- Vector + French full text, fused by reciprocal rank (RRF, k = rrf_k).
    create function public.hybrid_search(
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
      with full_text as (
        select c.id, row_number() over (order by ts_rank_cd(c.fts, websearch_to_tsquery('french', query_text)) desc) as rank_ix
        from documentation_embeddings c
        where c.fts @@ websearch_to_tsquery('french', query_text)
          and (filter->>'source_table' is null or c.source_table = filter->>'source_table')
          and c.metadata @> (coalesce(filter, '{}'::jsonb) - 'source_table')
        order by rank_ix
        limit least(greatest(match_count, 1), 200) * 2
      ), semantic as (
        -- Ordered by distance with a LIMIT so the HNSW index serves it.
        select n.id, row_number() over (order by n.dist) as rank_ix
        from (select c.id, c.embedding <=> query_embedding as dist
              from documentation_embeddings c
              where (filter->>'source_table' is null or c.source_table = filter->>'source_table')
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
      order by score desc
      limit least(greatest(match_count, 1), 200)
    $b$;

    revoke all on function public.match_documents(extensions.vector(%1$s), int, jsonb) from public, anon;
    revoke all on function public.hybrid_search(text, extensions.vector(%1$s), int, jsonb,
      double precision, double precision, int) from public, anon;
    grant execute on function public.match_documents(extensions.vector(%1$s), int, jsonb) to authenticated, service_role;
    grant execute on function public.hybrid_search(text, extensions.vector(%1$s), int, jsonb,
      double precision, double precision, int) to authenticated, service_role;
  $f$, dims);
end $$;
