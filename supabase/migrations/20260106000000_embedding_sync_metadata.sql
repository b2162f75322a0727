-- Relational -> vector sync: chunk metadata (issue 13, point 5) and the per-row fingerprint that lets
-- resync skip unchanged rows (point 6).
--
-- register_embedding_source(..., metadata_columns => array['title', 'url', ...]) writes those columns'
-- values into every chunk's metadata (keys = column names, nulls left out, plus chunk_count). A change
-- to a metadata column alone enqueues a job whose text is unchanged: the worker finds every chunk's
-- hash already embedded (no provider call) and apply_embedding_results rewrites only the metadata.
-- `filter` containment on metadata is served by a GIN (jsonb_path_ops) index.

alter table public.embedding_sources
  add column metadata_columns text[],
  -- A jsonb expression over `r` (the row), cached like row_sql; null when no metadata columns.
  add column metadata_sql text;

alter table public.embedding_sync_queue add column metadata jsonb;

-- What was last applied per row: resync compares the current row against these, set-based.
alter table public.embedding_sync_versions
  add column content_hash text,
  add column metadata_hash text;

-- Rows embedded before this migration: take the fingerprint from their last completed job when it is
-- still in the queue (completed jobs are kept 7 days); the others are re-enqueued once by the next
-- resync, and cost no provider call.
update public.embedding_sync_versions v
set content_hash = q.content_hash, metadata_hash = md5('{}')
from public.embedding_sync_queue q
where q.source_table = v.source_table and q.source_id = v.source_id and q.version = v.version
  and q.status = 'completed' and not v.deleted;

create index documentation_embeddings_metadata
  on public.documentation_embeddings using gin (metadata jsonb_path_ops);

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

-- One row's fingerprint of its metadata, as stored in embedding_sync_versions.metadata_hash.
create function private.embedding_metadata_hash(m jsonb) returns text
language sql immutable
set search_path = ''
as $$ select pg_catalog.md5(coalesce(m, '{}'::jsonb)::text) $$;

drop function public.register_embedding_source(regclass, text[], regprocedure, text, int, int);

-- Registers (or re-registers) a table: validates the settings against the table, caches the row and
-- metadata expressions, attaches the row trigger (unless one calling add_to_embedding_queue exists,
-- e.g. the runbook's sync_faq_embeddings) and the TRUNCATE trigger. Idempotent.
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

-- Newest wins, as before, now carrying the row's metadata.
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
    retry_count = 0,
    last_error = null,
    run_at = now(),
    updated_at = now()
$$;

create or replace function public.add_to_embedding_queue() returns trigger
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

-- The worker's write, as before, plus: each chunk's metadata is the job's metadata and chunk_count,
-- and the applied row's fingerprint (content and metadata hashes) is kept for resync.
create or replace function public.apply_embedding_results(
  p_worker text, p_model text, p_job_ids bigint[], p_chunks jsonb
) returns table (job_id bigint, outcome text)
language plpgsql
security definer
set search_path = public, extensions
as $$
#variable_conflict use_column
declare
  held bigint[];
  missing bigint[];
  applied bigint[];
  c_j bigint[]; c_i int[]; c_c text[]; c_h text[]; c_t int[]; c_e text[];
begin
  select coalesce(array_agg(q.id order by q.id), '{}') into held
  from (select q.id from embedding_sync_queue q
        where q.id = any (p_job_ids) and q.status = 'processing' and q.locked_by = p_worker
        order by q.id for update) q;

  select coalesce(array_agg(x.j), '{}'), coalesce(array_agg(x.i), '{}'), coalesce(array_agg(x.c), '{}'),
         coalesce(array_agg(x.h), '{}'), coalesce(array_agg(x.t), '{}'), coalesce(array_agg(x.e), '{}')
    into c_j, c_i, c_c, c_h, c_t, c_e
  from jsonb_to_recordset(coalesce(p_chunks, '[]'::jsonb)) as x(j bigint, i int, c text, h text, t int, e text);

  select coalesce(array_agg(distinct c.j), '{}') into missing
  from unnest(c_j, c_h, c_e) as c(j, h, e)
  where c.j = any (held) and c.e is null
    and not exists (select from documentation_embeddings d where d.content_hash = c.h and d.model = p_model);

  with cand as (
    select distinct on (q.source_table, q.source_id) q.id, q.source_table, q.source_id, q.version, q.action,
           q.content_hash, q.metadata
    from embedding_sync_queue q
    left join embedding_sources s on s.source_table = q.source_table
    where q.id = any (held) and not q.id = any (missing) and q.version >= coalesce(s.truncated_below_version, 0)
    order by q.source_table, q.source_id, q.version desc
  ), bumped as (
    insert into embedding_sync_versions as v (source_table, source_id, version, deleted, updated_at,
      content_hash, metadata_hash)
    select cand.source_table, cand.source_id, cand.version, cand.action = 'DELETE', now(),
           case when cand.action <> 'DELETE' then cand.content_hash end,
           case when cand.action <> 'DELETE' then private.embedding_metadata_hash(cand.metadata) end
    from cand
    on conflict (source_table, source_id) do update
      set version = excluded.version, deleted = excluded.deleted, updated_at = excluded.updated_at,
          content_hash = excluded.content_hash, metadata_hash = excluded.metadata_hash
      where v.version <= excluded.version
    returning v.source_table, v.source_id
  )
  select coalesce(array_agg(cand.id), '{}') into applied
  from cand join bumped using (source_table, source_id);

  delete from documentation_embeddings d
  using embedding_sync_queue q
  where q.id = any (applied) and q.action = 'DELETE'
    and d.source_table = q.source_table and d.source_id = q.source_id;

  -- An unchanged chunk (same index, hash, model and metadata) is left as is; a metadata-only change
  -- rewrites the metadata and reuses the stored vector.
  with chunks as (
    select c.j, c.i, c.c, c.h, c.t, c.e, count(*) over (partition by c.j) as cnt
    from unnest(c_j, c_i, c_c, c_h, c_t, c_e) as c(j, i, c, h, t, e)
    where c.j = any (applied)
  )
  insert into documentation_embeddings as d (source_table, source_id, chunk_index, content, content_hash,
    embedding, model, token_count, metadata, source_version, updated_at)
  select q.source_table, q.source_id, c.i, c.c, c.h,
         coalesce(c.e::vector, (select x.embedding from documentation_embeddings x
                                where x.content_hash = c.h and x.model = p_model limit 1)),
         p_model, c.t, coalesce(q.metadata, '{}'::jsonb) || jsonb_build_object('chunk_count', c.cnt),
         q.version, now()
  from chunks c
  join embedding_sync_queue q on q.id = c.j
  where q.action <> 'DELETE'
  on conflict (source_table, source_id, chunk_index) do update set
    content = excluded.content, content_hash = excluded.content_hash, embedding = excluded.embedding,
    model = excluded.model, token_count = excluded.token_count, metadata = excluded.metadata,
    source_version = excluded.source_version, updated_at = excluded.updated_at
  where d.content_hash is distinct from excluded.content_hash or d.model is distinct from excluded.model
     or d.metadata is distinct from excluded.metadata;

  delete from documentation_embeddings d
  using embedding_sync_queue q,
        (select x.j as id, count(*) as cnt from unnest(c_j) as x(j) where x.j = any (applied) group by x.j) n
  where q.id = n.id and q.action <> 'DELETE'
    and d.source_table = q.source_table and d.source_id = q.source_id and d.chunk_index >= n.cnt;

  update embedding_sync_queue q
  set status = 'completed', processed_at = clock_timestamp(), updated_at = clock_timestamp(),
      locked_by = null, locked_at = null, lease_until = null,
      last_error = case when q.id = any (applied) then null else 'superseded by a newer version' end
  where q.id = any (held) and not q.id = any (missing);

  return query
    select j.id, case when not j.id = any (held) then 'lost'
                      when j.id = any (missing) then 'missing'
                      when j.id = any (applied) then 'applied'
                      else 'superseded' end
    from unnest(p_job_ids) as j(id);
end $$;

revoke all on function private.embedding_metadata_sql(oid, text[]), private.embedding_metadata_hash(jsonb),
  private.enqueue_embedding_job(text, text, text, text, jsonb) from public, anon, authenticated;
revoke all on function public.register_embedding_source(regclass, text[], regprocedure, text, int, int, text[])
  from public, anon, authenticated;
grant execute on function public.register_embedding_source(regclass, text[], regprocedure, text, int, int, text[])
  to service_role;
revoke all on function public.apply_embedding_results(text, text, bigint[], jsonb) from public, anon, authenticated;
grant execute on function public.apply_embedding_results(text, text, bigint[], jsonb) to service_role;

-- Resync (point 6): enqueues only rows whose current text or metadata differs from what was last
-- applied (embedding_sync_versions' fingerprint) and not already pending as is, plus a DELETE for every
-- row that has chunks but is gone or unpublished, and for the chunks of tables no longer registered or
-- dropped. p_force => true enqueues every published row, as before (a model change): the worker still
-- skips every chunk whose hash is already embedded with the current model.
drop function public.resync_embedding_sources(text);
create function public.resync_embedding_sources(p_source_table text default null, p_force boolean default false)
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

revoke all on function public.resync_embedding_sources(text, boolean) from public, anon, authenticated;
grant execute on function public.resync_embedding_sources(text, boolean) to service_role;
