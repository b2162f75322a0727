-- Search with each reader's rights.
--
-- A user may read a chunk only when they may SELECT its source row: the source table's own RLS (and
-- grants) decide, at query time, for any registered table. That rule lives in ONE place, the RLS
-- policy on documentation_embeddings below, whose check runs the source-row lookup with the querying
-- user's rights. Every search function is security invoker (search_documents, match_documents and
-- hybrid_search, below) and therefore inherits it. The service role has BYPASSRLS and sees everything.

-- A source's readable rows, asked with the caller's rights. The functions below are generated, one set
-- per registered source, by private.refresh_embedding_read_policy() (next section), with the table and
-- key written into their bodies: no user-executable function reads embedding_sources (service only) or
-- says which key or RLS a table has. They live in their own schema, embedding_rights, which signed-in
-- users may use (a function body is resolved with its caller's rights, and users have no usage on
-- private); every one of them is security invoker, so the source table's grants and RLS answer, and each
-- returns only what the caller may read anyway.
create schema if not exists embedding_rights;
revoke all on schema embedding_rights from public;
grant usage on schema embedding_rights to anon, authenticated, service_role;

-- The service path's view of a source's key (service only: it names key columns and RLS flags).
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
grant execute on function public.embedding_source_key(text) to service_role;

-- Readable source rows up to which a search is exact over them (above: the index's iterative scan).
-- The exact plan reads every chunk of the caller's rows, checked against the set of their readable keys
-- (embedding_rights.readable_set, at most this many), so its cost grows with the caller's rows; 2,000
-- keeps it near 20 ms.
create function public.search_exact_max_rows() returns int
language sql
stable
set search_path = ''
as $$ select coalesce(nullif(pg_catalog.current_setting('search.exact_max_rows', true), '')::int, 2000) $$;

-- Signed-in users read chunks through this policy only. anon has no grant: a project that opens search
-- to anonymous visitors (SEARCH_ALLOW_ANON=true) grants select on documentation_embeddings and execute
-- on search_documents to anon, and the same policy then shows them only rows anon may read.
--
-- The policy's expression is generated from embedding_sources (refreshed by a trigger whenever a
-- source is registered or removed): one CASE branch per table, calling that table's own small SQL
-- function embedding_rights.can_read_<oid>(id), security invoker, so the table's RLS answers. A
-- function, not a subquery written into the policy: a policy naming a table would stop the user from
-- dropping or altering that table (the policy depends on it), and a table the caller has no grant on
-- would make every query fail with "permission denied" instead of being skipped. The function is not
-- inlined (its body is a sub-select), so such a table is only touched after has_table_privilege said
-- yes. Each call costs an executor start-up and runs the table policy's own subqueries again (5 to 13
-- microseconds), which is why the broad plan checks few chunks. The exact plan, which reads every chunk
-- of a small reader's rows, asks the policy to check them against the set of the caller's readable
-- keys instead (embedding_rights.by_set, below).
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
  guard text;
  branches text := '';
  keys_body text := '';
  can_body text := '';
  row_body text := '';
  no_keys jsonb := '{}';
  keep text[] := '{}';
begin
  for src in
    select s.source_table, s.relid, s.relid::regclass::text as rel, s.pk_column,
           pg_catalog.format_type(a.atttypid, a.atttypmod) as pk_type
      from public.embedding_sources s
      join pg_catalog.pg_attribute a on a.attrelid = s.relid and a.attname = s.pk_column
     order by s.source_table
  loop
    -- Three small functions per source: is this row readable, which keys are readable (at most
    -- p_cap of them), and the row itself.
    keep := keep || array['can_read_' || src.relid, 'keys_' || src.relid, 'row_' || src.relid];
    -- The check runs once per chunk a user's search reads, so it has no SET clause: a SET makes every
    -- call save and restore the settings, about half of the call's cost. Its names need no search_path:
    -- the table and the type come qualified, and the operator is pg_catalog's, so a caller's own
    -- search_path cannot change what it compares. PostgreSQL never inlines a function whose body is a
    -- sub-select, so the table is still only touched once the policy's guard said yes.
    execute format(
      'create or replace function embedding_rights.%I(p_id text) returns boolean language sql stable security invoker '
      'as %L',
      'can_read_' || src.relid,
      format('select exists (select 1 from %s r where r.%I operator(pg_catalog.=) p_id::%s)', src.rel, src.pk_column, src.pk_type));
    -- The keys stop at p_cap: no bitmap scan, which visits every row the table's policy lets through
    -- before returning the first (a policy such as "client_id = any (array(<the caller's clients>))"
    -- took 33 ms for 2,001 keys of a reader of a million rows by bitmap, 3 ms by index scan).
    execute format(
      'create or replace function embedding_rights.%I(p_cap int) returns setof text language sql stable security invoker '
      'set search_path = '''' set enable_bitmapscan = off as %L',
      'keys_' || src.relid, format('select r.%I::text from %s r limit p_cap', src.pk_column, src.rel));
    execute format(
      'create or replace function embedding_rights.%I(p_id text) returns jsonb language sql stable security invoker '
      'set search_path = '''' as %L',
      'row_' || src.relid, format('select pg_catalog.to_jsonb(r) from %s r where r.%I = p_id::%s', src.rel, src.pk_column, src.pk_type));
    foreach fn in array array['can_read_' || src.relid, 'keys_' || src.relid, 'row_' || src.relid] loop
      execute format('revoke all on function embedding_rights.%I from public', fn);
      execute format('grant execute on function embedding_rights.%I to anon, authenticated, service_role', fn);
    end loop;
    guard := format('pg_catalog.has_table_privilege(%s::oid, ''select'')', src.relid);
    -- In the policy, the guard is a sub-select: asked once per query, not once per chunk.
    branches := branches || format(' when %L then case when (select %s) then embedding_rights.%I(source_id) else false end',
      src.source_table, guard, 'can_read_' || src.relid);
    keys_body := keys_body || format($b$
      if (p_source_table is null or p_source_table = %1$L) and left_over > 0 and %2$s then
        return query select %1$L::text, k from embedding_rights.%3$I(left_over) k;
        get diagnostics n = row_count;
        left_over := left_over - n;
      end if;$b$, src.source_table, guard, 'keys_' || src.relid);
    can_body := can_body || format(' when %L then case when %s then embedding_rights.%I(p_id) else false end',
      src.source_table, guard, 'can_read_' || src.relid);
    row_body := row_body || format(' when %L then case when %s then embedding_rights.%I(p_id) end',
      src.source_table, guard, 'row_' || src.relid);
    no_keys := no_keys || pg_catalog.jsonb_build_object(src.source_table, '{}'::jsonb);
  end loop;

  -- The dispatchers. plpgsql plans a branch only when it runs, so a table without a grant is never
  -- touched (has_table_privilege comes first), and a source nobody registered reads as nothing.
  execute format($f$
    create or replace function embedding_rights.readable_keys(p_source_table text, p_cap int)
    returns table (source_table text, source_id text)
    language plpgsql stable security invoker set search_path = '' as $b$
    declare
      left_over int := greatest(p_cap, 0);
      n int;
    begin%s
    end $b$
  $f$, keys_body);
  -- The caller's readable keys as {"<source table>": {"<key>": 1, ...}, ...}, every source present (a
  -- table with no readable row maps to {}), or null when the caller may read more rows than the exact
  -- plan's threshold (search_exact_max_rows()): the policy then checks each row on its own.
  execute format(
    'create or replace function embedding_rights.readable_set() returns jsonb '
    'language sql stable security invoker set search_path = '''' as %L',
    format($b$
      with k as materialized (
        select k.source_table, k.source_id
        from embedding_rights.readable_keys(null, public.search_exact_max_rows() + 1) k)
      select case when (select count(*) from k) <= public.search_exact_max_rows()
                  then %L::jsonb || coalesce((select pg_catalog.jsonb_object_agg(t.source_table, t.ids)
                                              from (select k.source_table, pg_catalog.jsonb_object_agg(k.source_id, 1) as ids
                                                    from k group by k.source_table) t), '{}'::jsonb) end $b$,
      no_keys));
  execute format(
    'create or replace function embedding_rights.can_read(p_source_table text, p_id text) returns boolean '
    'language sql stable security invoker set search_path = '''' as %L',
    'select ' || case when can_body = '' then 'false' else 'case p_source_table' || can_body || ' else false end' end);
  execute format(
    'create or replace function embedding_rights.read_row(p_source_table text, p_id text) returns jsonb '
    'language sql stable security invoker set search_path = '''' as %L',
    'select ' || case when row_body = '' then 'null::jsonb' else 'case p_source_table' || row_body || ' end' end);
  foreach fn in array array['readable_keys', 'readable_set', 'can_read', 'read_row'] loop
    execute format('revoke all on function embedding_rights.%I from public', fn);
    execute format('grant execute on function embedding_rights.%I to anon, authenticated, service_role', fn);
  end loop;

  -- The per-row check, or, while a search asks for it (search_documents sets embedding_rights.by_set for
  -- the exact plan's statements), a look-up in the set of the caller's readable keys, computed once per
  -- statement (an InitPlan, run only when first needed). The setting chooses the cost, never the answer:
  -- anyone may set it, the set is read with the caller's rights, and over its cap it is null, so the
  -- coalesce falls through to the per-row check.
  execute format('alter policy documentation_embeddings_readable_source on public.documentation_embeddings using (%s)',
    case when branches = '' then 'false'
         else 'coalesce(case when pg_catalog.current_setting(''embedding_rights.by_set'', true) operator(pg_catalog.=) ''on'' '
              'then ((select embedding_rights.readable_set()) operator(pg_catalog.->) source_table) '
              'operator(pg_catalog.?) source_id end, case source_table' || branches || ' else false end)' end);

  -- Functions of sources that are gone.
  for fn in
    select p.oid::regprocedure::text from pg_catalog.pg_proc p
     where p.pronamespace = 'embedding_rights'::regnamespace
       and p.proname ~ '^(can_read|keys|row)_[0-9]+$' and p.proname <> all (keep)
  loop
    execute 'drop function ' || fn;
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

-- May the current role SELECT this source row? A table the caller has no SELECT grant on, or a source
-- nobody registered, answers false (never an error: one unreadable table must not break every search).
create function public.can_read_source_row(p_source_table text, p_source_id text)
returns boolean
language sql
stable
security invoker
set search_path = ''
as $$ select embedding_rights.can_read(p_source_table, p_source_id) $$;
revoke all on function public.can_read_source_row(text, text) from public, anon, authenticated;
grant execute on function public.can_read_source_row(text, text) to authenticated, service_role;

-- The live source row as jsonb, read with the caller's rights (null when they may not read it).
create function public.read_source_row(p_source_table text, p_source_id text)
returns jsonb
language sql
stable
security invoker
set search_path = ''
as $$ select embedding_rights.read_row(p_source_table, p_source_id) $$;
revoke all on function public.read_source_row(text, text) from public, anon, authenticated;
grant execute on function public.read_source_row(text, text) to authenticated, service_role;


-- Query-embedding cache: the same normalized question embeds once per model and dimension. Only the
-- hash of the query is kept, not its text. Service only (the search function writes it).
-- Scoped per asker (`scope`: the user's id, or 'service'): a hit, and the time it saves, would tell a
-- user that somebody else already asked exactly this question ("... licencier Jean Dupont ?").
do $$
declare
  dims constant int := public.embedding_dimensions();
begin
  execute format($t$
    create table public.query_embedding_cache (
      model text not null,
      dimensions int not null,
      scope text not null,
      query_hash text not null,
      embedding extensions.vector(%s) not null,
      hits bigint not null default 0,
      created_at timestamptz not null default now(),
      last_used_at timestamptz not null default now(),
      primary key (model, dimensions, scope, query_hash)
    )$t$, dims);
end $$;
alter table public.query_embedding_cache enable row level security;
revoke all on table public.query_embedding_cache from anon, authenticated;
grant all on table public.query_embedding_cache to service_role;

-- The question rule ----------------------------------------------------------------------------------
-- The full-text branch matches ANY meaningful word of the question, ranked by ts_rank_cd (rows with
-- more of the words, closer together, first). websearch_to_tsquery would require every word, so a
-- natural question ("combien de jours de congé par mois ?") would find nothing. French stop words are
-- dropped by the french configuration; question words and modal verbs ("combien", "comment",
-- "peut-on", …) too.
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

revoke all on function public.embedding_question_tsquery(text) from public, anon;
-- Granted like the searches it serves, so callers can see how a question is matched.
grant execute on function public.embedding_question_tsquery(text) to authenticated, service_role;

-- The search ------------------------------------------------------------------------------------------
-- Search that is right for every reader: the best chunks among the rows the caller may read.
--
-- A user's search returns the same top-k as an exact search over the rows that user may SELECT, in
-- every mode, with or without a filter. Everything runs with the caller's rights: the functions are
-- security invoker, and the RLS policy of documentation_embeddings (above) lets each source table's own
-- RLS decide. The plan follows the size of what the caller may read:
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
--   Chunks whose delete waits for their segment's index build (embedding_pending_deletes) are skipped:
--   an edit is searchable at once with its new text only, and a deleted row is gone at once.
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
set hnsw.ef_search = 400
set embedding_rights.by_set = 'off'
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
  hidden bigint[];
  hide text := '';                -- excludes the chunks whose deletes wait for their segment's build
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
  -- Chunks replaced or deleted while their segment's index was being built, until the build deletes
  -- them (usually none; under RLS, only the caller's readable ones are seen, and only those matter).
  select pg_catalog.array_agg(p.id) into hidden from public.embedding_pending_deletes p;
  if hidden is not null then
    hide := format(' and c.id <> all (%L::bigint[])', hidden);
  end if;
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

  -- A small reader's branches read every one of their chunks: the policy checks them against the set of
  -- the caller's readable keys, computed once per statement, instead of looking each chunk's source row
  -- up (measured over 1,000 chunks of a reader's 1,000 rows: 2.4 ms against 13.5 ms). A broad reader's
  -- set would cost more than the checks it saves (10,000 keys took 58 ms; its scan checks about 1,700
  -- chunks), so its chunks are checked one by one.
  if under_rls and small and n > 50 then
    perform pg_catalog.set_config('embedding_rights.by_set', 'on', true);
  end if;

  -- Vector branch.
  if mode <> 'text' and query_embedding is not null then
    if not small then
      -- The index, scanning on (iterative) past rows the policy or the filter drops; re-sorted exactly.
      execute format('with r as materialized (
          select c.id, c.embedding <=> %1$s as dist from public.documentation_embeddings c where true %2$s
          order by c.embedding <=> %1$s limit $2)
        select coalesce(array_agg(r.id order by r.dist, r.id), ''{}''), coalesce(array_agg(r.dist order by r.dist, r.id), ''{}'') from r',
        q, conds || hide)
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
        q, from_small, conds || hide)
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
      from_small, conds || hide,
      case when not small and under_rls and text_candidates is not null then 'and c.id = any ($7)' else '' end)
      into t_ids, t_rank using query_embedding, depth, f, key_tables, key_ids, tsq, text_candidates;
  end if;

  -- The rows, looked up by id (an index scan: the policy then runs on these few rows only, each on its own).
  perform pg_catalog.set_config('embedding_rights.by_set', 'off', true);
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

-- Vector search (the name Supabase's guides use): search_documents in vector mode.
create function public.match_documents(
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
create function public.hybrid_search(
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
