-- Bulk segments, part 2: their life cycle, run in the database by pg_cron (issue 9, deliverable 3).
--
-- Two procedures, so they can COMMIT between their steps (the state change that closes a segment must
-- be visible to the workers before its index build starts, and a build, a minute or more, must hold
-- nothing else), and two cron jobs, because pg_cron never overlaps runs of one job: with a single job,
-- no segment could close or open while another one built, and the loading segment grew past its size.
--
-- private.maintain_embedding_segments(p_build) -- the quick steps, one run at a time (advisory lock):
--   1. closes the loading segment (state 'building') when it holds bulk_segment_max_rows chunks, when no
--      bulk job is pending or processing any more, or when bulk segments are turned off; COMMIT, so new
--      bulk writes go to a new loading segment or to segment 0;
--   2. opens a loading segment when none is open and at least bulk_segment_min_rows bulk jobs are ready:
--      CREATE TABLE, then ATTACH PARTITION (SHARE UPDATE EXCLUSIVE on the parent: reads and writes go
--      on; the CHECK constraint spares the validation scan);
--   3. drops sealed segments left empty (every row moved to segment 0 or deleted) when no bulk work waits;
--   then, when p_build (the default, for operators and tests), the builds below.
-- private.build_embedding_segments() -- builds the HNSW index of every 'building' segment, oldest first
--   (same operator class and options as segment 0's), then marks it 'sealed'; one builder at a time. The
--   non-concurrent build holds a SHARE lock on that segment only: searches read it (by exact scan)
--   meanwhile, and no worker writes it, since nothing routes there any more. A crash (backend killed,
--   server restart) rolls the build back and leaves the segment 'building' and searchable; the next run
--   builds it again.
-- Operators may run `call private.maintain_embedding_segments();` by hand (both).
-- Not security definer (a procedure that is cannot COMMIT): they run as their caller, the pg_cron job's
-- owner (the role that applied the migrations and owns the tables), every name fully qualified.

-- Builds (or rebuilds, after a crash) the HNSW index of every 'building' segment, oldest first, with
-- segment 0's operator class and options, then seals it. One builder at a time (its own advisory lock).
create procedure private.build_embedding_segments()
language plpgsql
as $$
declare
  cfg public.embedding_sync_settings;
  seg_id int;
  part text;
  n bigint;
  t0 timestamptz;
  opclass text;
  with_clause text;
  err text;
begin
  -- hashtext('private.build_embedding_segments'), spelled out.
  if not pg_catalog.pg_try_advisory_lock(1306521730) then
    raise notice 'embedding segments: another build is in progress';
    return;
  end if;
  select * into cfg from public.embedding_sync_settings;
  select format('%I.%I', n.nspname, opc.opcname),
         coalesce(' with (' || array_to_string(ic.reloptions, ', ') || ')', '')
    into opclass, with_clause
  from pg_catalog.pg_index i
  join pg_catalog.pg_class ic on ic.oid = i.indexrelid
  join pg_catalog.pg_am am on am.oid = ic.relam
  join pg_catalog.pg_opclass opc on opc.oid = i.indclass[0]
  join pg_catalog.pg_namespace n on n.oid = opc.opcnamespace
  where i.indrelid = 'private.documentation_embeddings_s0'::regclass and am.amname = 'hnsw'
  limit 1;
  opclass := coalesce(opclass, 'extensions.vector_cosine_ops');
  with_clause := coalesce(with_clause, '');
  commit;

  for seg_id in select g.id from public.embedding_segments g where g.state = 'building' order by g.id loop
    part := 'documentation_embeddings_s' || seg_id;
    t0 := null;
    -- Drop what a failed attempt may have left (a non-concurrent build leaves nothing, but be sure).
    if not exists (select from pg_catalog.pg_index i join pg_catalog.pg_class ic on ic.oid = i.indexrelid
                   where i.indrelid = ('private.' || part)::regclass and ic.relname = part || '_embedding_hnsw'
                     and i.indisvalid) then
      execute format('drop index if exists private.%I', part || '_embedding_hnsw');
      update public.embedding_segments g set build_attempts = g.build_attempts + 1 where g.id = seg_id;
      commit;
      t0 := clock_timestamp();
      err := null;
      begin
        perform pg_catalog.set_config('maintenance_work_mem', cfg.bulk_segment_build_mem_mb || 'MB', true);
        -- Leaves cores to live work (see bulk_segment_build_workers).
        perform pg_catalog.set_config('max_parallel_maintenance_workers', cfg.bulk_segment_build_workers::text, true);
        execute format('create index %I on private.%I using hnsw (embedding %s)%s',
                       part || '_embedding_hnsw', part, opclass, with_clause);
      exception when others then
        err := sqlerrm;
      end;
      if err is not null then
        update public.embedding_segments g set last_error = err where g.id = seg_id;
        commit;
        continue;
      end if;
    end if;
    execute format('select count(*) from private.%I', part) into n;
    update public.embedding_segments g
       set state = 'sealed', sealed_at = clock_timestamp(), rows = n, last_error = null,
           build_ms = coalesce((extract(epoch from clock_timestamp() - t0) * 1000)::bigint, g.build_ms)
     where g.id = seg_id;
    commit;
  end loop;
  perform pg_catalog.pg_advisory_unlock(1306521730);
end $$;

-- The quick steps (close, open, drop empty), then the builds when p_build.
create procedure private.maintain_embedding_segments(p_build boolean default true)
language plpgsql
as $$
declare
  cfg public.embedding_sync_settings;
  seg public.embedding_segments;
  seg_id int;
  part text;
  n bigint;
  has_rows boolean;
begin
  if pg_catalog.pg_try_advisory_lock(1306521729) then
    select * into cfg from public.embedding_sync_settings;

    -- 1. Close the loading segment.
    select * into seg from public.embedding_segments g where g.state = 'loading';
    if found then
      execute format('select count(*) from private.%I', 'documentation_embeddings_s' || seg.id) into n;
      if n >= cfg.bulk_segment_max_rows or not cfg.bulk_segments_enabled
         or not exists (select from public.embedding_sync_queue q
                        where q.lane = 'bulk' and q.status in ('pending', 'processing')) then
        -- Waits for the workers' transactions that chose this segment (they hold its row FOR SHARE, and
        -- so ROW SHARE on the table), and makes new ones wait the few ms until this COMMIT: a table lock
        -- queues them fairly, where a steady stream of row share-lockers could starve a row update.
        lock table public.embedding_segments in exclusive mode;
        update public.embedding_segments set state = 'building', building_at = now() where id = seg.id;
      end if;
    end if;
    commit;

    -- 2. Open one when a large bulk backlog is ready.
    if cfg.bulk_segments_enabled
       and not exists (select from public.embedding_segments g where g.state = 'loading')
       and (select count(*) from (select from public.embedding_sync_queue q
                                  where q.status = 'pending' and q.lane = 'bulk' and q.action <> 'DELETE'
                                    and q.run_at <= now()
                                  limit cfg.bulk_segment_min_rows) b) >= cfg.bulk_segment_min_rows then
      seg_id := coalesce((select max(g.id) from public.embedding_segments g), 0) + 1;
      part := 'documentation_embeddings_s' || seg_id;
      begin
        execute format('create table private.%I (like public.documentation_embeddings including defaults including generated)', part);
        execute format('alter table private.%I add constraint %I check (segment = %s)', part, part || '_segment', seg_id);
        execute format('alter table private.%I enable row level security', part);
        execute format('revoke all on private.%I from public, anon, authenticated, service_role', part);
        -- Never queue behind a long lock on the parent (a kb push holds EXCLUSIVE): retry next run.
        set local lock_timeout = '5s';
        execute format('alter table public.documentation_embeddings attach partition private.%I for values in (%s)', part, seg_id);
        insert into public.embedding_segments (id) values (seg_id);
      exception when lock_not_available then
        raise notice 'embedding segments: could not attach a new segment now (%)', sqlerrm;
      end;
    end if;
    commit;

    -- 3. Drop sealed segments left empty, when no bulk work waits.
    if not exists (select from public.embedding_sync_queue q where q.lane = 'bulk' and q.status in ('pending', 'processing')) then
      for seg_id in select g.id from public.embedding_segments g where g.state = 'sealed' order by g.id loop
        part := 'documentation_embeddings_s' || seg_id;
        execute format('select exists (select from private.%I)', part) into has_rows;
        continue when has_rows;
        begin
          -- DROP takes ACCESS EXCLUSIVE on the parent: wait briefly, or give up until the next run.
          set local lock_timeout = '2s';
          execute format('drop table private.%I', part);
          delete from public.embedding_segments g where g.id = seg_id;
        exception when lock_not_available then
          raise notice 'embedding segments: could not drop empty segment % now (%)', seg_id, sqlerrm;
        end;
        commit;
      end loop;
    end if;
    perform pg_catalog.pg_advisory_unlock(1306521729);
  else
    raise notice 'embedding segments: another maintenance run is in progress';
  end if;
  commit;

  if p_build then
    call private.build_embedding_segments();
  end if;
end $$;

revoke all on procedure private.maintain_embedding_segments(boolean), private.build_embedding_segments()
  from public, anon, authenticated;

-- Every 10 seconds where pg_cron has second schedules (1.5+, as hosted Supabase), else every minute.
do $$
begin
  begin
    perform cron.schedule('embedding-segments-maintenance', '10 seconds', 'call private.maintain_embedding_segments(false)');
    perform cron.schedule('embedding-segments-build', '10 seconds', 'call private.build_embedding_segments()');
  exception when others then
    perform cron.schedule('embedding-segments-maintenance', '* * * * *', 'call private.maintain_embedding_segments(false)');
    perform cron.schedule('embedding-segments-build', '* * * * *', 'call private.build_embedding_segments()');
  end;
end $$;
