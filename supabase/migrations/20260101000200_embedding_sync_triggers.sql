-- Relational -> vector sync, part 2: what puts changes into embedding_sync_queue.
--
-- add_to_embedding_queue() is the trigger function to attach by hand. It takes no arguments, so
--   CREATE TRIGGER sync_faq_embeddings AFTER INSERT OR UPDATE OR DELETE ON faq_items
--     FOR EACH ROW EXECUTE FUNCTION add_to_embedding_queue();
-- works on any table with a single-column primary key. Unregistered tables get the defaults:
-- the row's text columns (text, varchar, char; not the key), each as "column: value" on its own
-- line, in column order, nulls skipped; no publish filter; 512-token chunks with 64 overlap.
--
-- register_embedding_source(..., metadata_columns => array['title', 'url', ...]) writes those columns'
-- values into every chunk's metadata (keys = column names, nulls left out, plus chunk_count). A change
-- to a metadata column alone enqueues a job whose text is unchanged: the worker finds every chunk's
-- hash already embedded (no provider call) and apply_embedding_results rewrites only the metadata.
-- `filter` containment on metadata is served by a GIN (jsonb_path_ops) index.

-- How embedding_sources and the queue name a table: like regclass::text with only public on the
-- search_path, so a plain `where source_table = 'faq_items'` matches.
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

-- The metadata expression cached in embedding_sources.metadata_sql.
create function private.embedding_metadata_sql(rel oid, metadata_columns text[]) returns text
language plpgsql stable
set search_path = ''
as $$
begin
  if metadata_columns is null or cardinality(metadata_columns) = 0 then
    return null;
  end if;
  if cardinality(metadata_columns) > 50 then
    raise exception 'metadata_columns: at most 50 columns' using errcode = '22023';
  end if;
  -- chunk_count is written by the worker; source_table is a filter key of its own.
  if 'chunk_count' = any (metadata_columns) or 'source_table' = any (metadata_columns) then
    raise exception 'metadata_columns may not name chunk_count or source_table (reserved keys)' using errcode = '22023';
  end if;
  perform 1 from unnest(metadata_columns) c
  where not exists (select from pg_catalog.pg_attribute a where a.attrelid = rel and a.attname = c
                      and a.attnum > 0 and not a.attisdropped);
  if found then
    raise exception 'metadata_columns names a column % does not have', rel::regclass using errcode = '42703';
  end if;
  return 'pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object('
    || (select string_agg(format('%L, r.%I', c, c), ', ') from unnest(metadata_columns) c) || '))';
end $$;

-- One row's metadata fingerprint, as stored in embedding_sync_versions.metadata_hash. Without a SET
-- clause so that it is inlined: it runs once per applied or resynced row. Every name in it is qualified.
create function private.embedding_metadata_hash(m jsonb) returns text
language sql immutable parallel safe
as $$ select pg_catalog.md5(coalesce(m, '{}'::pg_catalog.jsonb)::pg_catalog.text) $$;

-- Registers (or re-registers) a table: validates the settings against the table, caches the row and
-- metadata expressions, attaches the row trigger (unless one calling add_to_embedding_queue exists,
-- e.g. a sync_faq_embeddings attached by hand) and the TRUNCATE trigger. Idempotent.
create function public.register_embedding_source(
  source_table regclass,
  content_columns text[] default null,
  content_function regprocedure default null,
  publish_filter text default null,
  chunk_tokens int default 512,
  chunk_overlap_tokens int default 64,
  metadata_columns text[] default null
) returns void
language plpgsql
security definer
set search_path = public, extensions
as $$
declare
  name text := private.embedding_table_name(source_table);
  pk text := private.embedding_pk_column(source_table);
  row_sql text;
  meta_sql text;
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
  meta_sql := private.embedding_metadata_sql(source_table, metadata_columns);
  -- Compiles the expressions now, so a typo in a filter fails here and not in every later INSERT.
  execute format('select %s, %s from %s r limit 0', row_sql, coalesce(meta_sql, 'null'), source_table);

  insert into embedding_sources as s (source_table, relid, pk_column, content_columns, content_function,
    publish_filter, chunk_tokens, chunk_overlap_tokens, row_sql, metadata_columns, metadata_sql, registered)
  values (name, source_table, pk, content_columns, content_function, publish_filter, chunk_tokens,
    chunk_overlap_tokens, row_sql, nullif(metadata_columns, '{}'), meta_sql, true)
  on conflict on constraint embedding_sources_pkey do update set
    relid = excluded.relid, pk_column = excluded.pk_column, content_columns = excluded.content_columns,
    content_function = excluded.content_function, publish_filter = excluded.publish_filter,
    chunk_tokens = excluded.chunk_tokens, chunk_overlap_tokens = excluded.chunk_overlap_tokens,
    row_sql = excluded.row_sql, metadata_columns = excluded.metadata_columns,
    metadata_sql = excluded.metadata_sql, registered = true, updated_at = now();

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

-- Newest wins: a change to a row with a pending job replaces that job's action, content and metadata
-- and takes a new version. A row being processed gets a second, pending job. The lane: a live change
-- upgrades a pending bulk job, a bulk change never downgrades a pending live one.
create function private.enqueue_embedding_job(
  p_source_table text, p_source_id text, p_action text, p_content text, p_metadata jsonb
) returns void
language sql
security definer
set search_path = public, extensions
as $$
  insert into embedding_sync_queue as q (source_table, source_id, action, content, content_hash, metadata)
  values (p_source_table, p_source_id, p_action, p_content,
          case when p_content is null then null else encode(sha256(convert_to(p_content, 'UTF8')), 'hex') end,
          case when p_content is null then null else coalesce(p_metadata, '{}'::jsonb) end)
  on conflict (source_table, source_id) where status = 'pending' do update set
    action = excluded.action,
    content = excluded.content,
    content_hash = excluded.content_hash,
    metadata = excluded.metadata,
    version = excluded.version,
    lane = case when excluded.lane = 'live' then 'live' else q.lane end,
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
  new_id text; new_content text; new_meta jsonb;
  old_id text; old_content text; old_meta jsonb;
  q text;
begin
  select * into src from embedding_sources s where s.relid = TG_RELID;
  if not found then
    -- A bare trigger on an unregistered table: take the defaults, once. A table that cannot be
    -- embedded (no single-column key) is refused at CREATE TRIGGER time by an event trigger; where
    -- event triggers are not allowed, the user's write still goes through, with a warning.
    declare
      pk text;
    begin
      pk := private.embedding_pk_column(TG_RELID);
      insert into embedding_sources (source_table, relid, pk_column, row_sql, registered)
      values (private.embedding_table_name(TG_RELID), TG_RELID, pk,
              private.embedding_row_sql(TG_RELID, pk, null, null, null), false)
      on conflict do nothing;
      select * into strict src from embedding_sources s where s.relid = TG_RELID;
    exception when invalid_table_definition or invalid_parameter_value then
      raise warning 'embedding sync: % is not embedded: %', TG_RELID::regclass, sqlerrm
        using hint = 'give it a single-column primary key and call register_embedding_source, or drop the trigger';
      return null;
    end;
  end if;

  q := format('select %s, %s from (select ($1).*) r', src.row_sql, coalesce(src.metadata_sql, 'null::jsonb'));
  if TG_OP in ('INSERT', 'UPDATE') then
    execute q into new_id, new_content, new_meta using NEW;
  end if;
  if TG_OP in ('UPDATE', 'DELETE') then
    execute q into old_id, old_content, old_meta using OLD;
  end if;

  if TG_OP = 'DELETE' then
    perform private.enqueue_embedding_job(src.source_table, old_id, 'DELETE', null, null);
  elsif TG_OP = 'INSERT' then
    if new_content is not null then
      perform private.enqueue_embedding_job(src.source_table, new_id, 'INSERT', new_content, new_meta);
    end if;
  else
    if old_id is distinct from new_id then
      perform private.enqueue_embedding_job(src.source_table, old_id, 'DELETE', null, null);
      if new_content is not null then
        perform private.enqueue_embedding_job(src.source_table, new_id, 'INSERT', new_content, new_meta);
      end if;
    elsif new_content is distinct from old_content
       or (new_content is not null and new_meta is distinct from old_meta) then
      -- The embedded text changed, the row was (un)published by the filter, or only its metadata
      -- changed (then the worker finds every chunk already embedded and rewrites the metadata only).
      perform private.enqueue_embedding_job(src.source_table, new_id,
        case when new_content is null then 'DELETE' else 'UPDATE' end, new_content, new_meta);
    end if;
  end if;
  return null;
end $$;

-- TRUNCATE skips row triggers: drop the table's chunks and pending jobs at once, and fence off
-- jobs already being processed (their version is below the fence, so their writes are refused).
-- Found by oid, so a source renamed where no event trigger followed it is still cleaned.
create function private.embedding_source_truncated() returns trigger
language plpgsql
security definer
set search_path = public, extensions
as $$
declare
  name text;
begin
  update embedding_sources set truncated_below_version = nextval('embedding_sync_version_seq'), updated_at = now()
  where relid = TG_RELID
  returning source_table into name;
  name := coalesce(name, private.embedding_table_name(TG_RELID));
  delete from documentation_embeddings where source_table = name;
  delete from embedding_sync_versions where source_table = name;
  delete from embedding_sync_queue where source_table = name and status = 'pending';
  return null;
end $$;

-- Lanes ------------------------------------------------------------------------------------------------
-- Every job is in one of two lanes:
--   live  a change made by a row trigger in an ordinary transaction (an editor's FAQ edit);
--   bulk  work made in bulk: resync_embedding_sources, resync_legal_documents and the files worker's
--         writes for a bulk files_queue job, kb push and restore.
-- The lane comes from the transaction-local setting embedding_sync.lane ('bulk', or anything else for
-- live), read when the job is queued. Bulk code sets it with set_config(..., true) (or `set local`):
-- a function-level SET clause on a custom setting needs a superuser, which hosted projects do not have.
--
-- Claims take live jobs first, but while bulk jobs are ready a mixed claim reserves
-- floor(p_limit * bulk_share) of the batch (at least 1) for them, so bulk work never starves; a lane
-- that cannot fill its share leaves it to the other. lanes_enabled = false restores plain FIFO.
--
-- Wakes: a statement that queues live jobs wakes ONE worker for the live lane (coalesced per wake
-- window, on its own row so a long bulk transaction holding the bulk wake row never delays it); bulk
-- statements keep the fan-out. A live change landing on a pending bulk job (an upgrade) wakes too.

-- Bulk SQL paths call begin_bulk (sets embedding_sync.lane = 'bulk' for the transaction, returns the
-- caller's value) and restore it before returning. An error rolls the setting back with the statement.
create function private.embedding_lane_begin_bulk() returns text
language plpgsql
set search_path = ''
as $$
declare
  prev text := coalesce(pg_catalog.current_setting('embedding_sync.lane', true), '');
begin
  perform pg_catalog.set_config('embedding_sync.lane', 'bulk', true);
  return prev;
end $$;

create function private.embedding_lane_restore(prev text) returns void
language sql
set search_path = ''
as $$ select pg_catalog.set_config('embedding_sync.lane', coalesce(prev, ''), true) $$;

-- Resync: enqueues only rows whose current text or metadata differs from what was last
-- applied (embedding_sync_versions' fingerprint) and not already pending as is, plus a DELETE for every
-- row that has chunks but is gone or unpublished, and for the chunks of tables no longer registered or
-- dropped. p_force => true enqueues every published row (a model change): the worker still
-- skips every chunk whose hash is already embedded with the current model.
-- Every mode queues bulk jobs: the body runs inside the wrapper below, which sets the lane around it.
create function private.resync_embedding_sources_body(p_source_table text default null, p_force boolean default false)
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
    if not exists (select from pg_class c where c.oid = src.relid) then
      -- The table is gone (dropped where no event trigger could clean up): its chunks go, nothing else.
      raise warning 'embedding sync: the table of source % no longer exists; removing its chunks', src.source_table
        using hint = 'select unregister_embedding_source(...) removes the registration';
      insert into embedding_sync_queue as q (source_table, source_id, action)
      select distinct e.source_table, e.source_id, 'DELETE'
      from documentation_embeddings e where e.source_table = src.source_table
      on conflict (source_table, source_id) where status = 'pending' do update set
        action = 'DELETE', content = null, content_hash = null, metadata = null, version = excluded.version,
        retry_count = 0, last_error = null, run_at = now(), updated_at = now();
      get diagnostics n_del = row_count;
      source_table := src.source_table; enqueued := 0; deletes := n_del;
      return next;
      continue;
    end if;

    execute format($q$
      insert into embedding_sync_queue as q (source_table, source_id, action, content, content_hash, metadata)
      select %1$L, x.id, 'UPDATE', x.content, x.h, x.meta
      from (select y.id, y.content, encode(sha256(convert_to(y.content, 'UTF8')), 'hex') as h,
                   coalesce(y.meta, '{}'::jsonb) as meta
            from (select %2$s, %4$s from %3$s r) as y(id, content, meta)
            where y.content is not null) x
      where $1
         or (not exists (select from embedding_sync_versions v
                         where v.source_table = %1$L and v.source_id = x.id and not v.deleted
                           and v.content_hash = x.h and v.metadata_hash = private.embedding_metadata_hash(x.meta))
             and not exists (select from embedding_sync_queue p
                             where p.source_table = %1$L and p.source_id = x.id and p.status = 'pending'
                               and p.content_hash = x.h and p.metadata = x.meta))
      on conflict (source_table, source_id) where status = 'pending' do update set
        action = excluded.action, content = excluded.content, content_hash = excluded.content_hash,
        metadata = excluded.metadata, version = excluded.version, retry_count = 0, last_error = null,
        run_at = now(), updated_at = now()
      $q$, src.source_table, src.row_sql, src.relid::regclass, coalesce(src.metadata_sql, 'null::jsonb'))
      using coalesce(p_force, false);
    get diagnostics n_up = row_count;

    -- Chunks whose row is gone or no longer published.
    execute format($q$
      insert into embedding_sync_queue as q (source_table, source_id, action)
      select distinct e.source_table, e.source_id, 'DELETE'
      from documentation_embeddings e
      where e.source_table = %1$L
        and not exists (select from (select %2$s from %3$s r) as x(id, content)
                        where x.id = e.source_id and x.content is not null)
        and not exists (select from embedding_sync_queue p where p.source_table = %1$L
                          and p.source_id = e.source_id and p.status = 'pending' and p.action = 'DELETE')
      on conflict (source_table, source_id) where status = 'pending' do update set
        action = 'DELETE', content = null, content_hash = null, metadata = null, version = excluded.version,
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
      action = 'DELETE', content = null, content_hash = null, metadata = null, version = excluded.version,
      retry_count = 0, last_error = null, run_at = now(), updated_at = now();
    get diagnostics n_del = row_count;
    if n_del > 0 then
      source_table := '(unregistered)'; enqueued := 0; deletes := n_del;
      return next;
    end if;
  end if;
end $$;

create function public.resync_embedding_sources(p_source_table text default null, p_force boolean default false)
returns table (source_table text, enqueued bigint, deletes bigint)
language plpgsql
security definer
set search_path = public, extensions
as $$
declare
  prev text := private.embedding_lane_begin_bulk();
begin
  return query select * from private.resync_embedding_sources_body(p_source_table, p_force);
  perform private.embedding_lane_restore(prev);
end $$;

revoke all on function private.embedding_table_name(oid), private.embedding_pk_column(oid),
  private.embedding_row_sql(oid, text, text[], regprocedure, text), private.embedding_source_truncated(),
  private.embedding_lane_begin_bulk(), private.embedding_lane_restore(text) from public;
revoke all on function private.embedding_metadata_sql(oid, text[]), private.embedding_metadata_hash(jsonb),
  private.enqueue_embedding_job(text, text, text, text, jsonb) from public, anon, authenticated;
revoke all on function private.resync_embedding_sources_body(text, boolean) from public, anon, authenticated, service_role;
revoke all on function public.add_to_embedding_queue() from public, anon, authenticated;
revoke all on function public.register_embedding_source(regclass, text[], regprocedure, text, int, int, text[]),
  public.resync_embedding_sources(text, boolean) from public, anon, authenticated;
grant execute on function public.register_embedding_source(regclass, text[], regprocedure, text, int, int, text[]),
  public.resync_embedding_sources(text, boolean) to service_role;
