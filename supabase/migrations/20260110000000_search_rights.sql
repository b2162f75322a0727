-- Search with each reader's rights (issue 12).
--
-- A user may read a chunk only when they may SELECT its source row: the source table's own RLS (and
-- grants) decide, at query time, for any registered table. That rule lives in ONE place, the RLS
-- policy on documentation_embeddings below, whose check runs the source-row lookup with the querying
-- user's rights. Every search function is security invoker (search_documents, match_documents and
-- hybrid_search: 20260112000000_search_rights_complete.sql) and therefore inherits it. The service role
-- has BYPASSRLS and sees everything.

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
-- inlined (SET clause), so such a table is only touched after has_table_privilege said yes. Each call
-- costs an executor start-up (tens of microseconds), which is why the searches check few chunks.
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
    execute format(
      'create or replace function embedding_rights.%I(p_id text) returns boolean language sql stable security invoker '
      'set search_path = '''' as %L',
      'can_read_' || src.relid, format('select exists (select 1 from %s r where r.%I = p_id::%s)', src.rel, src.pk_column, src.pk_type));
    execute format(
      'create or replace function embedding_rights.%I(p_cap int) returns setof text language sql stable security invoker '
      'set search_path = '''' as %L',
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
    branches := branches || format(' when %L then case when %s then embedding_rights.%I(source_id) else false end',
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
  end loop;

  execute format('alter policy documentation_embeddings_readable_source on public.documentation_embeddings using (%s)',
    case when branches = '' then 'false' else 'case source_table' || branches || ' else false end' end);

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
  execute format(
    'create or replace function embedding_rights.can_read(p_source_table text, p_id text) returns boolean '
    'language sql stable security invoker set search_path = '''' as %L',
    'select ' || case when can_body = '' then 'false' else 'case p_source_table' || can_body || ' else false end' end);
  execute format(
    'create or replace function embedding_rights.read_row(p_source_table text, p_id text) returns jsonb '
    'language sql stable security invoker set search_path = '''' as %L',
    'select ' || case when row_body = '' then 'null::jsonb' else 'case p_source_table' || row_body || ' end' end);
  foreach fn in array array['readable_keys', 'can_read', 'read_row'] loop
    execute format('revoke all on function embedding_rights.%I from public', fn);
    execute format('grant execute on function embedding_rights.%I to anon, authenticated, service_role', fn);
  end loop;

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
