-- Search that is right for every reader: the best chunks among the rows the caller may read.
--
-- A user's search returns the same top-k as an exact search over the rows that user may SELECT, in
-- every mode, with or without a filter. Everything runs with the caller's rights: the functions are
-- security invoker, and the RLS policy of documentation_embeddings (20260110000000_search_rights.sql)
-- lets each source table's own RLS decide. The plan follows the size of what the caller may read:
--
--   small   At most search_exact_max_rows() readable source rows (a client's own documents), or, for
--           a caller RLS does not apply to, a filter matching at most that many chunks: exact distances
--           and exact full-text ranks over exactly those chunks. The readable keys come from
--           embedding_rights.readable_keys(), which reads each source table with the caller's rights.
--           An approximate index over everyone's chunks would spend its candidates on rows the caller
--           cannot read: 20 readable rows among 4,000 got 0 results from a "best 100, then RLS" plan.
--   broad   HNSW with pgvector's iterative scan (relaxed order, re-sorted exactly, at most
--           hnsw.max_scan_tuples visited) under the caller's RLS. A scan that ends short of the page (a
--           sparse filter) is followed by an exact scan under RLS, so a page that exists is returned.
--           Full text: the GIN index serves callers RLS does not apply to. Under RLS it cannot serve
--           (`@@` is not leakproof, so PostgreSQL runs the policy first, on every row), so the search
--           function passes `text_candidates`: full-text matches in rank order, as many pages as it
--           takes to hold the page's worth of rows the caller may read (packages/search/search.ts).
--           They are checked here by primary key under the caller's RLS: ids a caller passes can only
--           narrow what they see, never widen it.
--
-- One question rule everywhere: every full-text branch reads the question with
-- embedding_question_tsquery() (meaningful words OR-ed, ranked by ts_rank_cd), so "combien de jours de
-- congé par mois ?" finds "... deux jours et demi ouvrables de congé par mois ...".
--
-- match_documents and hybrid_search keep their signatures and are this same search: one plan, one rule.
-- The query embedding is cast to the column's type, so the index may store vector or halfvec.

-- Readable source rows up to which a search is exact over them (above: the index's iterative scan).
-- A chunk is checked by the RLS policy (a primary-key lookup in its source table) in both plans, so the
-- exact plan costs about as many lookups as the caller has rows; 2,000 keeps it near 20 ms.
create function public.search_exact_max_rows() returns int
language sql
stable
set search_path = ''
as $$ select coalesce(nullif(pg_catalog.current_setting('search.exact_max_rows', true), '')::int, 2000) $$;

-- Is what the caller may read (within one source table when filter names it) too large for the exact
-- plan? Counted with the caller's rights, stopping at the threshold: it says nothing about rows the
-- caller cannot read. Callers RLS does not apply to read everything: broad.
create function public.search_reader_is_broad(filter jsonb default '{}'::jsonb) returns boolean
language sql
stable
security invoker
set search_path = ''
as $$
  select not pg_catalog.row_security_active('public.documentation_embeddings'::regclass)
      or (select count(*) from embedding_rights.readable_keys(filter->>'source_table', public.search_exact_max_rows() + 1))
         > public.search_exact_max_rows()
$$;

-- The service path's full-text candidates: chunk ids in rank order (ts_rank_cd, then id), with the
-- filter. Not executable by users (it ranks every chunk); the search function passes what it returns
-- to search_documents, whose RLS check keeps only the caller's rows.
create function private.search_text_ranked(query_text text, filter jsonb, p_limit int)
returns table (id bigint)
language sql
stable
set search_path = public, extensions
as $$
  select c.id from public.documentation_embeddings c, public.embedding_question_tsquery(query_text) q(tsq)
  where c.fts @@ q.tsq
    and (filter->>'source_table' is null or c.source_table = filter->>'source_table')
    and c.metadata @> (coalesce(filter, '{}'::jsonb) - 'source_table')
  order by ts_rank_cd(c.fts, q.tsq, 1) desc, c.id
  limit greatest(p_limit, 1)
$$;
revoke all on function private.search_text_ranked(text, jsonb, int) from public, anon, authenticated;

-- The search, in one function.
--   mode 'vector': cosine similarity; 'text': full text (ts_rank_cd); 'hybrid': both branches, each
--   exact over the caller's rows as above, fused by reciprocal rank (k = rrf_k, each branch weighted).
--   `similarity` is the cosine similarity whenever an embedding is given, so a log can tell a weak best
--   match (an unanswered question) in every mode.
--   filter: {"source_table": "..."} and/or keys contained in the chunk's metadata.
--   reader_is_broad: search_reader_is_broad(filter), when the caller already asked it in this
--   transaction (the search function does, to decide on text candidates): true skips counting the
--   caller's rows again. It can only choose the plan, never widen what the caller sees.
create function public.search_documents(
  query_text text,
  query_embedding extensions.vector,
  match_count int default 8,
  mode text default 'hybrid',
  filter jsonb default '{}'::jsonb,
  rrf_k int default 50,
  text_candidates bigint[] default null,
  full_text_weight double precision default 1,
  semantic_weight double precision default 1,
  reader_is_broad boolean default null
) returns table (id bigint, source_table text, source_id text, chunk_index int, content text,
                 metadata jsonb, score double precision, similarity double precision)
language plpgsql
stable
security invoker
set search_path = public, extensions
set hnsw.iterative_scan = 'relaxed_order'
set hnsw.ef_search = 200
as $$
declare
  f jsonb := coalesce(filter, '{}'::jsonb);
  k int := least(greatest(match_count, 1), 200);
  depth int;                      -- rows each branch contributes: k, or 2k to fuse
  under_rls boolean := pg_catalog.row_security_active('public.documentation_embeddings'::regclass);
  cap int := public.search_exact_max_rows();
  conds text := '';
  vtype text;                     -- the column's type (vector or halfvec), to cast the query to
  q text;                         -- the query embedding, cast, as SQL
  tsq tsquery;
  from_small text := 'public.documentation_embeddings c';
  small boolean := false;
  key_tables text[];
  key_ids text[];
  n bigint;
  s_ids bigint[] := '{}';
  s_dist float8[] := '{}';
  t_ids bigint[] := '{}';
  t_rank float8[] := '{}';
begin
  if mode is null or mode not in ('vector', 'text', 'hybrid') then
    raise exception 'mode must be vector, text or hybrid' using errcode = '22023';
  end if;
  depth := case when mode = 'hybrid' then k * 2 else k end;
  -- Only the filters that are there: a generic "metadata @> '{}'" looks selective to the planner.
  if f ? 'source_table' then conds := conds || ' and c.source_table = $3->>''source_table'''; end if;
  if (f - 'source_table') <> '{}'::jsonb then conds := conds || ' and c.metadata @> ($3 - ''source_table'')'; end if;
  select pg_catalog.format_type(a.atttypid, null) into vtype
  from pg_catalog.pg_attribute a
  where a.attrelid = 'public.documentation_embeddings'::regclass and a.attname = 'embedding';
  q := '$1::' || vtype;
  if mode <> 'vector' then tsq := public.embedding_question_tsquery(query_text); end if;

  -- The plan: small (exact over the caller's rows, or over a filter's few chunks) or broad.
  if under_rls and reader_is_broad then
    small := false;
  elsif under_rls then
    select pg_catalog.array_agg(r.source_table), pg_catalog.array_agg(r.source_id), count(*)
      into key_tables, key_ids, n
    from embedding_rights.readable_keys(f->>'source_table', cap + 1) r;
    small := n <= cap;
    if small then
      from_small := 'unnest($4::text[], $5::text[]) r(st, sid)
        join public.documentation_embeddings c on c.source_table = r.st and c.source_id = r.sid';
    end if;
  elsif conds <> '' then
    execute 'select count(*) from (select from public.documentation_embeddings c where true' || conds || ' limit $2) x'
      into n using null::text, cap + 1, f;
    small := n <= cap;
  end if;

  -- Vector branch.
  if mode <> 'text' and query_embedding is not null then
    if not small then
      -- The index, scanning on (iterative) past rows the policy or the filter drops; re-sorted exactly.
      execute format('with r as materialized (
          select c.id, c.embedding <=> %1$s as dist from public.documentation_embeddings c where true %2$s
          order by c.embedding <=> %1$s limit $2)
        select coalesce(array_agg(r.id order by r.dist, r.id), ''{}''), coalesce(array_agg(r.dist order by r.dist, r.id), ''{}'') from r',
        q, conds)
        into s_ids, s_dist using query_embedding, depth, f;
    end if;
    if small or coalesce(array_length(s_ids, 1), 0) < depth then
      -- Exact: every candidate's distance, then the best. The materialized CTE keeps the planner from
      -- answering with an approximate index order.
      execute format('with r as materialized (
          select c.id, c.embedding <=> %1$s as dist from %2$s where true %3$s)
        , best as (select r.id, r.dist from r order by r.dist, r.id limit $2)
        select coalesce(array_agg(best.id order by best.dist, best.id), ''{}''),
               coalesce(array_agg(best.dist order by best.dist, best.id), ''{}'') from best',
        q, from_small, conds)
        into s_ids, s_dist using query_embedding, depth, f, key_tables, key_ids;
    end if;
  end if;

  -- Full-text branch.
  if mode <> 'vector' and tsq is not null then
    execute format('with r as materialized (
        select c.id, ts_rank_cd(c.fts, $6, 1) as rank from %1$s
        where c.fts @@ $6 %2$s %3$s)
      , best as (select r.id, r.rank from r order by r.rank desc, r.id limit $2)
      select coalesce(array_agg(best.id order by best.rank desc, best.id), ''{}''),
             coalesce(array_agg(best.rank order by best.rank desc, best.id), ''{}'') from best',
      from_small, conds,
      case when not small and under_rls and text_candidates is not null then 'and c.id = any ($7)' else '' end)
      into t_ids, t_rank using query_embedding, depth, f, key_tables, key_ids, tsq, text_candidates;
  end if;

  -- The rows, looked up by id (an index scan: the policy then runs on these few rows only).
  return query execute format($q$
    with se as (select s.id, s.dist, s.ix from unnest($1::bigint[], $2::float8[]) with ordinality s(id, dist, ix)),
         ft as (select t.id, t.rank, t.ix from unnest($3::bigint[], $4::float8[]) with ordinality t(id, rank, ix)),
         fused as (
           select coalesce(ft.id, se.id) as id,
                  (case $5
                     when 'vector' then 1 - se.dist
                     when 'text' then ft.rank
                     else coalesce(1.0 / ($6 + ft.ix), 0.0) * $8 + coalesce(1.0 / ($6 + se.ix), 0.0) * $9
                   end)::double precision as score
           from ft full outer join se on se.id = ft.id),
         e as materialized (
           select e.id, e.source_table, e.source_id, e.chunk_index, e.content, e.metadata,
                  case when $7::extensions.vector is null then null
                       else (1 - (e.embedding <=> $7::%s))::double precision end as similarity
           from public.documentation_embeddings e
           where e.id = any ($1::bigint[] || $3::bigint[]))
    select e.id, e.source_table, e.source_id, e.chunk_index, e.content, e.metadata, f.score, e.similarity
    from fused f join e on e.id = f.id
    order by f.score desc, e.id
    limit $10
  $q$, vtype)
  using s_ids, s_dist, t_ids, t_rank, mode, rrf_k, query_embedding, full_text_weight, semantic_weight, k;
end $$;

-- Vector search (the runbooks' name): search_documents in vector mode.
create or replace function public.match_documents(
  query_embedding extensions.vector,
  match_count int default 10,
  filter jsonb default '{}'::jsonb
) returns table (id bigint, source_table text, source_id text, chunk_index int, content text,
                 metadata jsonb, similarity double precision)
language sql
stable
security invoker
set search_path = public, extensions
as $$
  select s.id, s.source_table, s.source_id, s.chunk_index, s.content, s.metadata, s.similarity
  from public.search_documents(null, query_embedding, match_count, 'vector', filter) s
$$;

-- Hybrid search (Supabase's documented signature): search_documents in hybrid mode. Without an
-- embedding only the text branch contributes, without text only the vector branch.
create or replace function public.hybrid_search(
  query_text text,
  query_embedding extensions.vector,
  match_count int default 10,
  filter jsonb default '{}'::jsonb,
  full_text_weight double precision default 1,
  semantic_weight double precision default 1,
  rrf_k int default 50
) returns table (id bigint, source_table text, source_id text, chunk_index int, content text,
                 metadata jsonb, score double precision)
language sql
stable
security invoker
set search_path = public, extensions
as $$
  select s.id, s.source_table, s.source_id, s.chunk_index, s.content, s.metadata, s.score
  from public.search_documents(query_text, query_embedding, match_count, 'hybrid',
         filter, rrf_k, null, full_text_weight, semantic_weight) s
$$;

revoke all on function public.search_exact_max_rows(), public.search_reader_is_broad(jsonb),
  public.search_documents(text, extensions.vector, int, text, jsonb, int, bigint[], double precision, double precision, boolean),
  public.match_documents(extensions.vector, int, jsonb),
  public.hybrid_search(text, extensions.vector, int, jsonb, double precision, double precision, int)
  from public, anon, authenticated;
grant execute on function public.search_exact_max_rows(), public.search_reader_is_broad(jsonb),
  public.search_documents(text, extensions.vector, int, text, jsonb, int, bigint[], double precision, double precision, boolean),
  public.match_documents(extensions.vector, int, jsonb),
  public.hybrid_search(text, extensions.vector, int, jsonb, double precision, double precision, int)
  to authenticated, service_role;
