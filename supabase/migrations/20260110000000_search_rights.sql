-- Search with each reader's rights (issue 12).
--
-- A user may read a chunk only when they may SELECT its source row: the source table's own RLS (and
-- grants) decide, at query time, for any registered table. That rule lives in ONE place, the RLS
-- policy on documentation_embeddings below, whose check runs the source-row lookup with the querying
-- user's rights. Every search function that is security invoker (search_documents here; match_documents
-- and hybrid_search in the last migration of this range) therefore inherits it. The service role
-- has BYPASSRLS and sees everything.

-- Which table and key a source_table names. Definer: embedding_sources is service-only, and this
-- reveals only a table's name, key column and key type. The bare flags let the visibility check skip
-- the lookup for tables whose readers need no per-row decision.
create function public.embedding_source_key(p_source_table text)
returns table (relid regclass, pk_column text, pk_type text, row_security boolean)
language sql
stable
security definer
set search_path = ''
as $$
  select s.relid::regclass, s.pk_column, pg_catalog.format_type(a.atttypid, a.atttypmod), c.relrowsecurity
  from public.embedding_sources s
  join pg_catalog.pg_attribute a on a.attrelid = s.relid and a.attname = s.pk_column
  join pg_catalog.pg_class c on c.oid = s.relid
  where s.source_table = p_source_table
$$;
revoke all on function public.embedding_source_key(text) from public, anon, authenticated;
grant execute on function public.embedding_source_key(text) to authenticated, service_role;

-- May the current role SELECT this source row? Security invoker: the lookup runs with the caller's
-- grants and under the source table's RLS, so the table's own policies answer. A table the caller has
-- no SELECT grant on, or a source nobody registered, answers false (never an error: one unreadable
-- table must not break every search).
create function public.can_read_source_row(p_source_table text, p_source_id text)
returns boolean
language plpgsql
stable
security invoker
set search_path = ''
as $$
declare
  k record;
  visible boolean;
begin
  select * into k from public.embedding_source_key(p_source_table);
  if k.relid is null or not pg_catalog.has_table_privilege(k.relid, 'select') then
    return false;
  end if;
  if not k.row_security then
    return true;  -- granted and no RLS: every row is readable
  end if;
  execute format('select exists (select 1 from %s r where r.%I = $1::%s)', k.relid, k.pk_column, k.pk_type)
    into visible using p_source_id;
  return visible;
end $$;
revoke all on function public.can_read_source_row(text, text) from public, anon, authenticated;
grant execute on function public.can_read_source_row(text, text) to authenticated, service_role;

-- The live source row as jsonb, read with the caller's rights (null when they may not read it).
create function public.read_source_row(p_source_table text, p_source_id text)
returns jsonb
language plpgsql
stable
security invoker
set search_path = ''
as $$
declare
  k record;
  row_json jsonb;
begin
  select * into k from public.embedding_source_key(p_source_table);
  if k.relid is null or not pg_catalog.has_table_privilege(k.relid, 'select') then
    return null;
  end if;
  execute format('select to_jsonb(r) from %s r where r.%I = $1::%s', k.relid, k.pk_column, k.pk_type)
    into row_json using p_source_id;
  return row_json;
end $$;
revoke all on function public.read_source_row(text, text) from public, anon, authenticated;
grant execute on function public.read_source_row(text, text) to authenticated, service_role;

-- Signed-in users read chunks through this policy only. anon has no grant: a project that opens search
-- to anonymous visitors (SEARCH_ALLOW_ANON=true) grants select on documentation_embeddings and execute
-- on search_documents to anon, and the same policy then shows them only rows anon may read.
grant select on public.documentation_embeddings to authenticated;
create policy documentation_embeddings_readable_source on public.documentation_embeddings
  for select to authenticated, anon
  using (public.can_read_source_row(source_table, source_id));

-- Query-embedding cache: the same normalized question embeds once per model and dimension. Only the
-- hash of the query is kept, not its text. Service only (the search function writes it).
do $$
declare
  dims constant int := public.embedding_dimensions();
begin
  execute format($t$
    create table public.query_embedding_cache (
      model text not null,
      dimensions int not null,
      query_hash text not null,
      embedding extensions.vector(%s) not null,
      hits bigint not null default 0,
      created_at timestamptz not null default now(),
      last_used_at timestamptz not null default now(),
      primary key (model, dimensions, query_hash)
    )$t$, dims);
end $$;
alter table public.query_embedding_cache enable row level security;
revoke all on table public.query_embedding_cache from anon, authenticated;
grant all on table public.query_embedding_cache to service_role;

-- The search edge function's query. Security invoker: called as `authenticated` (with the user's JWT
-- claims), the policy above hides every chunk whose source row the user may not read, and HNSW's
-- iterative scan keeps walking the graph until match_count readable chunks are found; called as the
-- service role it sees everything.
--   mode 'vector': cosine similarity; 'text': French full text (ts_rank_cd); 'hybrid': both, fused by
--   reciprocal rank (k = rrf_k). `similarity` is the cosine similarity whenever an embedding is given,
--   so a log can tell a weak best match (an unanswered question) in every mode.
--   filter: {"source_table": "..."} and/or keys contained in the chunk's metadata.
do $$
declare
  dims constant int := public.embedding_dimensions();
begin
  execute format($f$
    create function public.search_documents(
      query_text text,
      query_embedding extensions.vector(%1$s),
      match_count int default 8,
      mode text default 'hybrid',
      filter jsonb default '{}'::jsonb,
      rrf_k int default 50
    ) returns table (id bigint, source_table text, source_id text, chunk_index int, content text,
                     metadata jsonb, score double precision, similarity double precision)
    language sql stable
    security invoker
    set search_path = public, extensions
    set hnsw.iterative_scan = 'relaxed_order'
    as $b$
      with params as (
        select least(greatest(match_count, 1), 200) as lim,
               websearch_to_tsquery('french', coalesce(query_text, '')) as tsq,
               coalesce(filter, '{}'::jsonb) as f
      ), semantic as (
        select n.id, n.dist, row_number() over (order by n.dist) as rank_ix
        from (select c.id, c.embedding <=> query_embedding as dist
              from documentation_embeddings c, params p
              where mode in ('vector', 'hybrid') and query_embedding is not null
                and (p.f->>'source_table' is null or c.source_table = p.f->>'source_table')
                and c.metadata @> (p.f - 'source_table')
              order by c.embedding <=> query_embedding
              limit (select lim * 2 from params)) n
      ), full_text as (
        select t.id, t.rank, row_number() over (order by t.rank desc, t.id) as rank_ix
        from (select c.id, ts_rank_cd(c.fts, p.tsq) as rank
              from documentation_embeddings c, params p
              where mode in ('text', 'hybrid') and c.fts @@ p.tsq
                and (p.f->>'source_table' is null or c.source_table = p.f->>'source_table')
                and c.metadata @> (p.f - 'source_table')
              order by rank desc, c.id
              limit (select lim * 2 from params)) t
      )
      select e.id, e.source_table, e.source_id, e.chunk_index, e.content, e.metadata,
             (case mode
                when 'vector' then 1 - se.dist
                when 'text' then ft.rank
                else coalesce(1.0 / (rrf_k + ft.rank_ix), 0.0) + coalesce(1.0 / (rrf_k + se.rank_ix), 0.0)
              end)::double precision as score,
             case when query_embedding is null then null
                  else (1 - (e.embedding <=> query_embedding))::double precision end as similarity
      from full_text ft
      full outer join semantic se on se.id = ft.id
      join documentation_embeddings e on e.id = coalesce(ft.id, se.id)
      where mode in ('vector', 'text', 'hybrid')
      order by score desc, e.id
      limit (select lim from params)
    $b$;
    revoke all on function public.search_documents(text, extensions.vector(%1$s), int, text, jsonb, int)
      from public, anon, authenticated;
    grant execute on function public.search_documents(text, extensions.vector(%1$s), int, text, jsonb, int)
      to authenticated, service_role;
  $f$, dims);
end $$;
