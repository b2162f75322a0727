-- Relational -> vector sync, part 2: what puts changes into embedding_sync_queue.
--
-- add_to_embedding_queue() is the runbook's trigger function. It takes no arguments, so
--   CREATE TRIGGER sync_faq_embeddings AFTER INSERT OR UPDATE OR DELETE ON faq_items
--     FOR EACH ROW EXECUTE FUNCTION add_to_embedding_queue();
-- works on any table with a single-column primary key. Unregistered tables get the defaults:
-- the row's text columns (text, varchar, char; not the key), each as "column: value" on its own
-- line, in column order, nulls skipped; no publish filter; 512-token chunks with 64 overlap.

-- How embedding_sources and the queue name a table: like regclass::text with only public on the
-- search_path, so the runbook's `where source_table = 'faq_items'` matches.
create function private.embedding_table_name(rel oid) returns text
language sql stable
set search_path = ''
as $$
  select case when n.nspname = 'public' then pg_catalog.quote_ident(c.relname)
              else pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.relname) end
  from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace
  where c.oid = rel
$$;

create function private.embedding_pk_column(rel oid) returns text
language plpgsql stable
set search_path = ''
as $$
declare
  cols text[];
begin
  select array_agg(a.attname::text order by a.attnum) into cols
  from pg_catalog.pg_index i
  join pg_catalog.pg_attribute a on a.attrelid = i.indrelid and a.attnum = any (i.indkey)
  where i.indrelid = rel and i.indisprimary;
  if cols is null or array_length(cols, 1) <> 1 then
    raise exception 'embedding sync needs a single-column primary key on %', rel::regclass
      using errcode = '42P16';
  end if;
  return cols[1];
end $$;

-- The select list cached in embedding_sources.row_sql: `<id>, <content or null>` over alias r.
create function private.embedding_row_sql(
  rel oid, pk text, content_columns text[], content_function regprocedure, publish_filter text
) returns text
language plpgsql stable
set search_path = ''
as $$
declare
  cols text[];
  content_expr text;
begin
  if content_function is not null then
    content_expr := format('%s(pg_catalog.to_jsonb(r))', content_function::oid::regproc);
  else
    if content_columns is null then
      select array_agg(a.attname::text order by a.attnum) into cols
      from pg_catalog.pg_attribute a
      where a.attrelid = rel and a.attnum > 0 and not a.attisdropped and a.attname <> pk
        and a.atttypid in ('text'::regtype, 'varchar'::regtype, 'bpchar'::regtype);
    else
      cols := content_columns;
    end if;
    if cols is null or cardinality(cols) = 0 then
      raise exception 'embedding sync: % has no text column to embed; give content_columns or content_function',
        rel::regclass using errcode = '22023';
    end if;
    select 'pg_catalog.concat_ws(E''\n'', ' || string_agg(
             format('case when r.%1$I is not null then %2$L || r.%1$I::text end', c, c || ': '), ', ')
           || ')'
      into content_expr from unnest(cols) as c;
  end if;
  content_expr := format('nullif(pg_catalog.btrim(%s), '''')', content_expr);
  if publish_filter is not null then
    content_expr := format('case when (%s) then %s end', publish_filter, content_expr);
  end if;
  return format('r.%I::text, %s', pk, content_expr);
end $$;

-- Registers (or re-registers) a table: validates the settings against the table, caches the
-- row expression, attaches the row trigger (unless one calling add_to_embedding_queue exists,
-- e.g. the runbook's sync_faq_embeddings) and the TRUNCATE trigger. Idempotent.
create function public.register_embedding_source(
  source_table regclass,
  content_columns text[] default null,
  content_function regprocedure default null,
  publish_filter text default null,
  chunk_tokens int default 512,
  chunk_overlap_tokens int default 64
) returns void
language plpgsql
security definer
set search_path = public, extensions
as $$
declare
  name text := private.embedding_table_name(source_table);
  pk text := private.embedding_pk_column(source_table);
  row_sql text;
begin
  if content_columns is not null and content_function is not null then
    raise exception 'give content_columns or content_function, not both' using errcode = '22023';
  end if;
  if content_columns is not null then
    perform 1 from unnest(content_columns) c
    where not exists (select from pg_attribute a where a.attrelid = source_table and a.attname = c
                        and a.attnum > 0 and not a.attisdropped);
    if found then
      raise exception 'content_columns names a column % does not have', source_table using errcode = '42703';
    end if;
  end if;
  row_sql := private.embedding_row_sql(source_table, pk, content_columns, content_function, publish_filter);
  -- Compiles the expression now, so a typo in a filter fails here and not in every later INSERT.
  execute format('select %s from %s r limit 0', row_sql, source_table);

  insert into embedding_sources as s (source_table, relid, pk_column, content_columns, content_function,
    publish_filter, chunk_tokens, chunk_overlap_tokens, row_sql, registered)
  values (name, source_table, pk, content_columns, content_function, publish_filter, chunk_tokens,
    chunk_overlap_tokens, row_sql, true)
  on conflict on constraint embedding_sources_pkey do update set
    relid = excluded.relid, pk_column = excluded.pk_column, content_columns = excluded.content_columns,
    content_function = excluded.content_function, publish_filter = excluded.publish_filter,
    chunk_tokens = excluded.chunk_tokens, chunk_overlap_tokens = excluded.chunk_overlap_tokens,
    row_sql = excluded.row_sql, registered = true, updated_at = now();

  if not exists (
    select from pg_trigger t where t.tgrelid = source_table and not t.tgisinternal
      and t.tgfoid = 'public.add_to_embedding_queue()'::regprocedure
      and (t.tgtype::int & 1) = 1                 -- a row-level trigger
  ) then
    execute format('create trigger embedding_sync after insert or update or delete on %s
                    for each row execute function public.add_to_embedding_queue()', source_table);
  end if;
  if not exists (
    select from pg_trigger t where t.tgrelid = source_table and not t.tgisinternal
      and t.tgfoid = 'private.embedding_source_truncated()'::regprocedure
  ) then
    execute format('create trigger embedding_sync_truncate after truncate on %s
                    for each statement execute function private.embedding_source_truncated()', source_table);
  end if;
end $$;

-- Newest wins: a change to a row with a pending job replaces that job's action and content and
-- takes a new version. A row being processed gets a second, pending job.
create function private.enqueue_embedding_job(
  p_source_table text, p_source_id text, p_action text, p_content text
) returns void
language sql
security definer
set search_path = public, extensions
as $$
  insert into embedding_sync_queue as q (source_table, source_id, action, content, content_hash)
  values (p_source_table, p_source_id, p_action, p_content,
          case when p_content is null then null else encode(sha256(convert_to(p_content, 'UTF8')), 'hex') end)
  on conflict (source_table, source_id) where status = 'pending' do update set
    action = excluded.action,
    content = excluded.content,
    content_hash = excluded.content_hash,
    version = excluded.version,
    retry_count = 0,
    last_error = null,
    run_at = now(),
    updated_at = now()
$$;

create function public.add_to_embedding_queue() returns trigger
language plpgsql
security definer
set search_path = public, extensions
as $$
declare
  src embedding_sources;
  new_id text; new_content text;
  old_id text; old_content text;
begin
  select * into src from embedding_sources s where s.relid = TG_RELID;
  if not found then
    -- A bare trigger on an unregistered table: take the defaults, once.
    declare
      pk text := private.embedding_pk_column(TG_RELID);
    begin
      insert into embedding_sources (source_table, relid, pk_column, row_sql, registered)
      values (private.embedding_table_name(TG_RELID), TG_RELID, pk,
              private.embedding_row_sql(TG_RELID, pk, null, null, null), false)
      on conflict do nothing;
      select * into strict src from embedding_sources s where s.relid = TG_RELID;
    end;
  end if;

  if TG_OP in ('INSERT', 'UPDATE') then
    execute format('select %s from (select ($1).*) r', src.row_sql) into new_id, new_content using NEW;
  end if;
  if TG_OP in ('UPDATE', 'DELETE') then
    execute format('select %s from (select ($1).*) r', src.row_sql) into old_id, old_content using OLD;
  end if;

  if TG_OP = 'DELETE' then
    perform private.enqueue_embedding_job(src.source_table, old_id, 'DELETE', null);
  elsif TG_OP = 'INSERT' then
    if new_content is not null then
      perform private.enqueue_embedding_job(src.source_table, new_id, 'INSERT', new_content);
    end if;
  else
    if old_id is distinct from new_id then
      perform private.enqueue_embedding_job(src.source_table, old_id, 'DELETE', null);
      if new_content is not null then
        perform private.enqueue_embedding_job(src.source_table, new_id, 'INSERT', new_content);
      end if;
    elsif new_content is distinct from old_content then
      -- The embedded text changed, or the row was (un)published by the filter.
      perform private.enqueue_embedding_job(src.source_table, new_id,
        case when new_content is null then 'DELETE' else 'UPDATE' end, new_content);
    end if;
  end if;
  return null;
end $$;

-- TRUNCATE skips row triggers: drop the table's chunks and pending jobs at once, and fence off
-- jobs already being processed (their version is below the fence, so their writes are refused).
create function private.embedding_source_truncated() returns trigger
language plpgsql
security definer
set search_path = public, extensions
as $$
declare
  name text := private.embedding_table_name(TG_RELID);
begin
  update embedding_sources set truncated_below_version = nextval('embedding_sync_version_seq'), updated_at = now()
  where source_table = name;
  delete from documentation_embeddings where source_table = name;
  delete from embedding_sync_versions where source_table = name;
  delete from embedding_sync_queue where source_table = name and status = 'pending';
  return null;
end $$;

-- Set-based resync: one INSERT ... SELECT per table enqueues every published row (the worker's
-- hash check makes unchanged text free), a DELETE job for every row that has chunks but is gone
-- or unpublished, and for chunks of tables no longer registered.
create function public.resync_embedding_sources(p_source_table text default null)
returns table (source_table text, enqueued bigint, deletes bigint)
language plpgsql
security definer
set search_path = public, extensions
as $$
#variable_conflict use_column
declare
  src embedding_sources;
  n_up bigint;
  n_del bigint;
begin
  if p_source_table is not null then
    perform 1 from embedding_sources s where s.source_table = p_source_table
      or s.relid = to_regclass(p_source_table);
    if not found then
      raise exception 'not a registered embedding source: %', p_source_table using errcode = '22023';
    end if;
  end if;
  for src in
    select * from embedding_sources s
    where p_source_table is null or s.source_table = p_source_table or s.relid = to_regclass(p_source_table)
    order by s.source_table
  loop
    execute format($q$
      insert into embedding_sync_queue as q (source_table, source_id, action, content, content_hash)
      select %1$L, x.id, 'UPDATE', x.content, encode(sha256(convert_to(x.content, 'UTF8')), 'hex')
      from (select %2$s from %3$s r) as x(id, content)
      where x.content is not null
      on conflict (source_table, source_id) where status = 'pending' do update set
        action = excluded.action, content = excluded.content, content_hash = excluded.content_hash,
        version = excluded.version, retry_count = 0, last_error = null, run_at = now(), updated_at = now()
      $q$, src.source_table, src.row_sql, src.relid::regclass);
    get diagnostics n_up = row_count;

    -- Chunks whose row is gone or no longer published.
    execute format($q$
      insert into embedding_sync_queue as q (source_table, source_id, action)
      select distinct e.source_table, e.source_id, 'DELETE'
      from documentation_embeddings e
      where e.source_table = %1$L
        and not exists (select from (select %2$s from %3$s r) as x(id, content)
                        where x.id = e.source_id and x.content is not null)
      on conflict (source_table, source_id) where status = 'pending' do update set
        action = 'DELETE', content = null, content_hash = null, version = excluded.version,
        retry_count = 0, last_error = null, run_at = now(), updated_at = now()
      $q$, src.source_table, src.row_sql, src.relid::regclass);
    get diagnostics n_del = row_count;

    source_table := src.source_table; enqueued := n_up; deletes := n_del;
    return next;
  end loop;

  if p_source_table is null then
    insert into embedding_sync_queue as q (source_table, source_id, action)
    select distinct e.source_table, e.source_id, 'DELETE'
    from documentation_embeddings e
    where not exists (select from embedding_sources s where s.source_table = e.source_table)
    on conflict (source_table, source_id) where status = 'pending' do update set
      action = 'DELETE', content = null, content_hash = null, version = excluded.version,
      retry_count = 0, last_error = null, run_at = now(), updated_at = now();
    get diagnostics n_del = row_count;
    if n_del > 0 then
      source_table := '(unregistered)'; enqueued := 0; deletes := n_del;
      return next;
    end if;
  end if;
end $$;

revoke all on function private.embedding_table_name(oid), private.embedding_pk_column(oid),
  private.embedding_row_sql(oid, text, text[], regprocedure, text),
  private.enqueue_embedding_job(text, text, text, text), private.embedding_source_truncated() from public;
revoke all on function public.add_to_embedding_queue() from public, anon, authenticated;
revoke all on function public.register_embedding_source(regclass, text[], regprocedure, text, int, int),
  public.resync_embedding_sources(text) from public, anon, authenticated;
grant execute on function public.register_embedding_source(regclass, text[], regprocedure, text, int, int),
  public.resync_embedding_sources(text) to service_role;
