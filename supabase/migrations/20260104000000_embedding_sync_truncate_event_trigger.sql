-- Relational -> vector sync, part 6: TRUNCATE handling for the runbook's bare trigger.
--
-- Row triggers never see TRUNCATE. register_embedding_source() attaches a TRUNCATE trigger, but a table
-- wired only with the runbook's `CREATE TRIGGER … EXECUTE FUNCTION add_to_embedding_queue()` would keep
-- its chunks after a TRUNCATE, and search would go on returning rows that are gone. This event trigger
-- attaches embedding_sync_truncate in the same transaction as such a CREATE TRIGGER, while that
-- statement already holds the table's trigger lock, so no writer ever waits on it.
--
-- Hosted Supabase lets the postgres role create event triggers (supautils); where a role may not, the
-- migration says so and goes on, and register_embedding_source() remains the way to get the trigger.

create function private.embedding_attach_truncate_trigger() returns event_trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  rel regclass;
begin
  for rel in
    select distinct t.tgrelid::regclass
    from pg_catalog.pg_event_trigger_ddl_commands() c
    join pg_catalog.pg_trigger t on t.oid = c.objid
    where c.classid = 'pg_catalog.pg_trigger'::regclass
      -- to_regprocedure: null rather than an error (in every CREATE TRIGGER) if a function was dropped.
      and t.tgfoid = pg_catalog.to_regprocedure('public.add_to_embedding_queue()')
      and not exists (select from pg_catalog.pg_trigger x where x.tgrelid = t.tgrelid
                        and x.tgfoid = pg_catalog.to_regprocedure('private.embedding_source_truncated()'))
  loop
    begin
      execute format('create trigger embedding_sync_truncate after truncate on %s
                      for each statement execute function private.embedding_source_truncated()', rel);
    exception when others then
      -- Never fail the user's own CREATE TRIGGER over this; say what is missing and how to fix it.
      raise warning 'embedding sync: could not attach the TRUNCATE trigger to % (%); run select register_embedding_source(%L)',
        rel, sqlerrm, rel::text;
    end;
  end loop;
end $$;

revoke all on function private.embedding_attach_truncate_trigger() from public;

do $$
begin
  create event trigger embedding_sync_attach_truncate on ddl_command_end
    when tag in ('CREATE TRIGGER')
    execute function private.embedding_attach_truncate_trigger();
exception when insufficient_privilege then
  raise notice 'embedding sync: this role may not create event triggers; tables wired with a bare '
               'add_to_embedding_queue() trigger get TRUNCATE handling from register_embedding_source()';
end $$;
