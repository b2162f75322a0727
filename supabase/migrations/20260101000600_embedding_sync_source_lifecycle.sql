-- Relational -> vector sync: a source's lifecycle.
--
-- * DROP TABLE of a source removes its registration, jobs, versions and chunks in the same transaction
--   (event trigger on sql_drop). Where event triggers are not allowed, coverage and resync skip the
--   missing table and say so instead of failing (a dropped table's oid, rendered as a number, would
--   break them for every table).
-- * Renaming a source (ALTER TABLE … RENAME / SET SCHEMA) renames it everywhere (ddl_command_end), and
--   column changes rebuild its cached expressions (or are refused when they would break its writes).
-- * unregister_embedding_source(table) stops embedding a table and removes everything of it.
-- * CREATE TRIGGER … EXECUTE FUNCTION add_to_embedding_queue() on a table that cannot be embedded (no
--   single-column primary key, or nothing to embed) is refused at CREATE TRIGGER time, with the way out,
--   instead of failing every later INSERT. On a table that can, the same event trigger attaches the
--   TRUNCATE trigger: row triggers never see TRUNCATE, and a table wired only with a bare
--   `CREATE TRIGGER … EXECUTE FUNCTION add_to_embedding_queue()` would keep its chunks after a TRUNCATE,
--   so search would go on returning rows that are gone. It is attached in the same transaction as the
--   CREATE TRIGGER, while that statement already holds the table's trigger lock, so no writer ever
--   waits on it.
--
-- Hosted Supabase lets the postgres role create event triggers (supautils); where a role may not, the
-- migration says so and goes on, and register_embedding_source() remains the way to get the triggers.

-- Everything of one source, in an order that also fences a worker in flight: its jobs go first (a
-- worker's apply then finds its jobs gone and writes nothing), then the chunks and versions.
create function private.embedding_forget_source(p_source_table text) returns bigint
language plpgsql
security definer
set search_path = public, extensions
as $$
declare
  n bigint;
begin
  delete from embedding_sync_queue q where q.source_table = p_source_table;
  delete from documentation_embeddings e where e.source_table = p_source_table;
  get diagnostics n = row_count;
  delete from embedding_sync_versions v where v.source_table = p_source_table;
  delete from embedding_sources s where s.source_table = p_source_table;
  return n;
end $$;

-- Stops embedding a table: drops the sync triggers this project attached (and bare
-- add_to_embedding_queue() triggers attached by hand, which would otherwise register it again with defaults), then
-- removes its registration, jobs and chunks. Takes the name as text so a table already dropped can be
-- unregistered too. Returns the number of chunks removed.
create function public.unregister_embedding_source(source_table text) returns bigint
language plpgsql
security definer
set search_path = public, extensions
as $$
#variable_conflict use_variable
declare
  src embedding_sources;
  trg record;
begin
  select * into src from embedding_sources s
  where s.source_table = source_table or s.relid = to_regclass(source_table)
  order by s.source_table = source_table desc limit 1;
  if not found then
    raise exception 'not a registered embedding source: %', source_table using errcode = '22023';
  end if;
  for trg in
    select t.tgname from pg_trigger t
    where t.tgrelid = src.relid and not t.tgisinternal
      and t.tgfoid in ('public.add_to_embedding_queue()'::regprocedure, 'private.embedding_source_truncated()'::regprocedure)
  loop
    execute format('drop trigger %I on %s', trg.tgname, src.relid::regclass);
  end loop;
  return private.embedding_forget_source(src.source_table);
end $$;

-- sql_drop: a dropped source table is forgotten in the DROP's own transaction. Never fails the DROP.
create function private.embedding_forget_dropped() returns event_trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  name text;
begin
  if pg_catalog.to_regclass('public.embedding_sources') is null then
    return;  -- the sync itself is being dropped
  end if;
  for name in
    select s.source_table from public.embedding_sources s
    join pg_catalog.pg_event_trigger_dropped_objects() d
      on d.classid = 'pg_catalog.pg_class'::regclass and d.objid = s.relid and d.objsubid = 0
  loop
    begin
      perform private.embedding_forget_source(name);
    exception when others then
      raise warning 'embedding sync: could not remove the dropped source % (%); run select unregister_embedding_source(%L)',
        name, sqlerrm, name;
    end;
  end loop;
end $$;

-- ddl_command_end on ALTER TABLE of a source:
-- * a renamed (or moved) source keeps working under its new name, in the queue, the versions, the
--   chunks (so filter {"source_table": new name} finds them) and the views;
-- * its cached expressions are rebuilt from its settings, so a renamed key, a new text column (default
--   content) or any column change is followed. When the settings name a column that is gone (a content,
--   metadata or filter column renamed or dropped) the ALTER is refused, saying what to re-register:
--   otherwise every later write to the table would fail.
create function private.embedding_follow_rename() returns event_trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  r record;
  pk text;
  v_row_sql text;
  v_meta_sql text;
begin
  if pg_catalog.to_regclass('public.embedding_sources') is null then
    return;
  end if;
  for r in
    select s.*, private.embedding_table_name(s.relid) as new_name
    from public.embedding_sources s
    where s.relid in (select c.objid from pg_catalog.pg_event_trigger_ddl_commands() c
                      where c.classid = 'pg_catalog.pg_class'::regclass)
  loop
    begin
      pk := private.embedding_pk_column(r.relid);
      v_row_sql := private.embedding_row_sql(r.relid, pk, r.content_columns, r.content_function, r.publish_filter);
      v_meta_sql := private.embedding_metadata_sql(r.relid, r.metadata_columns);
      execute pg_catalog.format('select %s, %s from %s r limit 0', v_row_sql, coalesce(v_meta_sql, 'null'), r.relid::regclass);
    exception when others then
      raise exception 'embedding sync: this ALTER TABLE breaks the embedding of % (%)', r.source_table, sqlerrm
        using errcode = 'dependent_objects_still_exist',
              hint = pg_catalog.format('call register_embedding_source(%L, …) with the new columns first, '
                  || 'or select unregister_embedding_source(%L)', r.source_table, r.source_table);
    end;
    if v_row_sql is distinct from r.row_sql or v_meta_sql is distinct from r.metadata_sql or pk is distinct from r.pk_column then
      update public.embedding_sources set pk_column = pk, row_sql = v_row_sql, metadata_sql = v_meta_sql, updated_at = now()
      where source_table = r.source_table;
    end if;
    if r.new_name is distinct from r.source_table then
      begin
        update public.embedding_sources set source_table = r.new_name, updated_at = now() where source_table = r.source_table;
        update public.embedding_sync_queue set source_table = r.new_name where source_table = r.source_table;
        update public.embedding_sync_versions set source_table = r.new_name where source_table = r.source_table;
        update public.documentation_embeddings set source_table = r.new_name where source_table = r.source_table;
      exception when others then
        -- e.g. the new name was registered before: keep the old name (still found by oid) rather than fail the ALTER.
        raise warning 'embedding sync: % was renamed to % but its index keeps the old name (%)', r.source_table, r.new_name, sqlerrm;
      end;
    end if;
  end loop;
end $$;

-- CREATE TRIGGER: refuse a sync trigger on a table that cannot be embedded, then attach the TRUNCATE
-- trigger (with a warning, never an error, when it cannot). The refusal aborts only the CREATE TRIGGER.
create function private.embedding_attach_truncate_trigger() returns event_trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  rel regclass;
  pk text;
begin
  for rel in
    select distinct t.tgrelid::regclass
    from pg_catalog.pg_event_trigger_ddl_commands() c
    join pg_catalog.pg_trigger t on t.oid = c.objid
    where c.classid = 'pg_catalog.pg_trigger'::regclass
      and t.tgfoid = pg_catalog.to_regprocedure('public.add_to_embedding_queue()')
      and (t.tgtype::int & 1) = 1                 -- row-level
  loop
    if not exists (select from public.embedding_sources s where s.relid = rel) then
      begin
        pk := private.embedding_pk_column(rel);
        perform private.embedding_row_sql(rel, pk, null, null, null);
      exception when invalid_table_definition or invalid_parameter_value then
        raise exception '%', sqlerrm using errcode = '42P16',
          hint = 'embedding sync keys each row by one column: give the table a single-column primary key '
              || '(e.g. id bigint generated always as identity primary key), or call register_embedding_source() '
              || 'with content_columns or a content_function once it has one. Composite keys are not supported.';
      end;
    end if;
    if not exists (select from pg_catalog.pg_trigger x where x.tgrelid = rel
                     and x.tgfoid = pg_catalog.to_regprocedure('private.embedding_source_truncated()')) then
      begin
        execute format('create trigger embedding_sync_truncate after truncate on %s
                        for each statement execute function private.embedding_source_truncated()', rel);
      exception when others then
        raise warning 'embedding sync: could not attach the TRUNCATE trigger to % (%); run select register_embedding_source(%L)',
          rel, sqlerrm, rel::text;
      end;
    end if;
  end loop;
end $$;

revoke all on function private.embedding_attach_truncate_trigger() from public;
revoke all on function private.embedding_forget_source(text), private.embedding_forget_dropped(),
  private.embedding_follow_rename() from public;
revoke all on function public.unregister_embedding_source(text) from public, anon, authenticated;
grant execute on function public.unregister_embedding_source(text) to service_role;


do $$
begin
  create event trigger embedding_sync_attach_truncate on ddl_command_end
    when tag in ('CREATE TRIGGER')
    execute function private.embedding_attach_truncate_trigger();
exception when insufficient_privilege then
  raise notice 'embedding sync: this role may not create event triggers; tables wired with a bare '
               'add_to_embedding_queue() trigger get TRUNCATE handling from register_embedding_source()';
end $$;

do $$
begin
  create event trigger embedding_sync_forget_dropped on sql_drop
    execute function private.embedding_forget_dropped();
  create event trigger embedding_sync_follow_rename on ddl_command_end
    when tag in ('ALTER TABLE')
    execute function private.embedding_follow_rename();
exception when insufficient_privilege then
  raise notice 'embedding sync: this role may not create event triggers; after DROP TABLE of a source run '
               'select unregister_embedding_source(''<table>'') (coverage and resync report the missing table meanwhile)';
end $$;
