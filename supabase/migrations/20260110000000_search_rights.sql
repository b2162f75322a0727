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
--
-- The policy's expression is generated from embedding_sources (refreshed by a trigger whenever a
-- source is registered or removed): one CASE branch per table, calling that table's own small SQL
-- function `private.can_read_source_<oid>(id)`, security invoker, so the table's RLS answers. A SQL
-- function's plan is cached for the whole query, which makes the check cost microseconds per
-- candidate row; the generic can_read_source_row above (dynamic SQL) re-plans on every call, far too
-- slow for a policy. The functions are not inlined (SET clause), so a table the caller has no grant on
-- is only touched after has_table_privilege said yes: it is invisible, never an error.
grant select on public.documentation_embeddings to authenticated;
create policy documentation_embeddings_readable_source on public.documentation_embeddings
  for select to authenticated, anon
  using (false);

create function private.refresh_embedding_read_policy() returns void
language plpgsql
security definer
set search_path = ''
as $$
declare
  src record;
  fn text;
  branches text := '';
  keep text[] := '{}';
begin
  for src in
    select s.source_table, s.relid, s.relid::regclass::text as rel, s.pk_column,
           pg_catalog.format_type(a.atttypid, a.atttypmod) as pk_type
      from public.embedding_sources s
      join pg_catalog.pg_attribute a on a.attrelid = s.relid and a.attname = s.pk_column
     order by s.source_table
  loop
    fn := 'can_read_source_' || src.relid::text;
    keep := keep || fn;
    execute format(
      'create or replace function private.%I(p_id text) returns boolean language sql stable security invoker '
      'set search_path = '''' as %L',
      fn, format('select exists (select 1 from %s r where r.%I = p_id::%s)', src.rel, src.pk_column, src.pk_type));
    execute format('revoke all on function private.%I(text) from public', fn);
    execute format('grant execute on function private.%I(text) to anon, authenticated, service_role', fn);
    branches := branches || format(
      ' when %L then case when pg_catalog.has_table_privilege(%s::oid, ''select'') then private.%I(source_id) else false end',
      src.source_table, src.relid::text, fn);
  end loop;
  execute format('alter policy documentation_embeddings_readable_source on public.documentation_embeddings using (%s)',
    case when branches = '' then 'false' else 'case source_table' || branches || ' else false end' end);
  -- Functions of sources that are gone.
  for fn in
    select p.proname from pg_catalog.pg_proc p
     where p.pronamespace = 'private'::regnamespace and p.proname like 'can\_read\_source\_%' and p.proname <> all (keep)
  loop
    execute format('drop function private.%I(text)', fn);
  end loop;
end $$;
revoke all on function private.refresh_embedding_read_policy() from public;

create function private.embedding_sources_refresh_read_policy() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  perform private.refresh_embedding_read_policy();
  return null;
end $$;
revoke all on function private.embedding_sources_refresh_read_policy() from public;

create trigger embedding_sources_refresh_read_policy
  after insert or delete or update of relid, pk_column, source_table on public.embedding_sources
  for each statement execute function private.embedding_sources_refresh_read_policy();

select private.refresh_embedding_read_policy();

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
--   text_candidates: chunk ids the full-text branch is limited to. Under RLS PostgreSQL may not use the
--   GIN index for `@@` (the operator is not leakproof, so the policy must run first, on every row), so
--   the search function finds the best full-text matches as the service role and passes their ids; the
--   policy then runs on those candidates only (a primary-key lookup). Passing ids reveals nothing: a
--   caller still sees only rows the policy lets through.
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
      rrf_k int default 50,
      text_candidates bigint[] default null
    ) returns table (id bigint, source_table text, source_id text, chunk_index int, content text,
                     metadata jsonb, score double precision, similarity double precision)
    language plpgsql stable
    security invoker
    set search_path = public, extensions
    set hnsw.iterative_scan = 'relaxed_order'
    as $b$
    declare
      f jsonb := coalesce(filter, '{}'::jsonb);
      conds text := '';
      semantic text := 'select null::bigint as id, null::float8 as dist, null::bigint as rank_ix where false';
      full_text text := 'select null::bigint as id, null::real as rank, null::bigint as rank_ix where false';
    begin
      if mode not in ('vector', 'text', 'hybrid') then
        raise exception 'mode must be vector, text or hybrid' using errcode = '22023';
      end if;
      -- Only the filters that are there: a generic "metadata @> '{}'" looks selective to the planner
      -- and makes it sort the whole table instead of walking the HNSW index.
      if f ? 'source_table' then conds := conds || ' and c.source_table = $5->>''source_table'''; end if;
      if (f - 'source_table') <> '{}'::jsonb then conds := conds || ' and c.metadata @> ($5 - ''source_table'')'; end if;
      if mode in ('vector', 'hybrid') and query_embedding is not null then
        semantic := 'select n.id, n.dist, row_number() over (order by n.dist) as rank_ix
          from (select c.id, c.embedding <=> $2 as dist from documentation_embeddings c where true' || conds || '
                order by c.embedding <=> $2 limit least(greatest($3, 1), 200) * 2) n';
      end if;
      if mode in ('text', 'hybrid') then
        full_text := 'select t.id, t.rank, row_number() over (order by t.rank desc, t.id) as rank_ix
          from (select c.id, ts_rank_cd(c.fts, websearch_to_tsquery(''french'', $1)) as rank
                from documentation_embeddings c
                where c.fts @@ websearch_to_tsquery(''french'', $1)'
                || case when text_candidates is not null then ' and c.id = any($7)' else '' end || conds || '
                order by rank desc, c.id limit least(greatest($3, 1), 200) * 2) t';
      end if;
      return query execute format($q$
        with semantic as materialized (%%s), full_text as materialized (%%s),
        fused as materialized (
          select coalesce(ft.id, se.id) as id,
                 (case $4
                    when 'vector' then 1 - se.dist
                    when 'text' then ft.rank
                    else coalesce(1.0 / ($6 + ft.rank_ix), 0.0) + coalesce(1.0 / ($6 + se.rank_ix), 0.0)
                  end)::double precision as score
          from full_text ft full outer join semantic se on se.id = ft.id
        )
        select e.id, e.source_table, e.source_id, e.chunk_index, e.content, e.metadata, f.score,
               case when $2 is null then null else (1 - (e.embedding <=> $2))::double precision end
        from fused f join documentation_embeddings e on e.id = f.id
        order by f.score desc, e.id
        limit least(greatest($3, 1), 200)
      $q$, semantic, full_text)
      using query_text, query_embedding, match_count, mode, f, rrf_k, text_candidates;
    end
    $b$;
    revoke all on function public.search_documents(text, extensions.vector(%1$s), int, text, jsonb, int, bigint[])
      from public, anon, authenticated;
    grant execute on function public.search_documents(text, extensions.vector(%1$s), int, text, jsonb, int, bigint[])
      to authenticated, service_role;
  $f$, dims);
end $$;
