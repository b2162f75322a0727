-- Bulk segments, part 2: their life cycle, run in the database by pg_cron.
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
--   After the builds, the same job merges sealed segments (private.merge_embedding_segment, below), one
--   merge at a time and a pending build first: a search scans about log(n) segments, not n.
-- Operators may run `call private.maintain_embedding_segments();` by hand (both).
-- Not security definer (a procedure that is cannot COMMIT): they run as their caller, the pg_cron job's
-- owner (the role that applied the migrations and owns the tables), every name fully qualified.

-- `using hnsw (embedding <opclass>) with (<options>)`: segment 0's HNSW index, which every bulk or
-- merged segment copies so that one query's distances agree across segments; for a graph of p_rows
-- chunks, ef_construction at least 128 from 100,000 and 200 from 400,000. A graph's recall falls as it
-- grows at a fixed ef_construction, and more ef_search does not bring it back: on clustered vectors (as
-- a corpus's embeddings are), 200,000 chunks built with pgvector's 64 found 85% of the true ten nearest
-- at ef_search 200 (95% at 1,000), built with 128 99.7% at 200, a build 2.6 times as long; 1,000,000
-- chunks in segments of 200,000 to 550,000, all built with 128, 94.8%. Small segments (a backfill's
-- first builds, segment 0's live writes) keep the cheaper graph. The largest (merged) graph stays the
-- weakest, which is why search_documents asks for ef_search 400: 1,000,000 chunks in segments of
-- 200,000 and 250,000 (128) and 550,000 (200) gave 91.5% at 200, 98.3% at 400 (12.9 ms p95).
create function private.embedding_hnsw_index_spec(p_rows bigint default 0) returns text
language sql
stable
set search_path = ''
as $$
  with s0 as (
    select format('%I.%I', n.nspname, opc.opcname) as opclass, coalesce(ic.reloptions, '{}') as opts
    from pg_catalog.pg_index i
    join pg_catalog.pg_class ic on ic.oid = i.indexrelid
    join pg_catalog.pg_am am on am.oid = ic.relam
    join pg_catalog.pg_opclass opc on opc.oid = i.indclass[0]
    join pg_catalog.pg_namespace n on n.oid = opc.opcnamespace
    where i.indrelid = 'private.documentation_embeddings_s0'::regclass and am.amname = 'hnsw'
    limit 1
  ), spec as (
    select coalesce((select s0.opclass from s0),
                    (select format('extensions.%I', t.typname || '_cosine_ops')
                     from pg_catalog.pg_attribute a join pg_catalog.pg_type t on t.oid = a.atttypid
                     where a.attrelid = 'public.documentation_embeddings'::regclass and a.attname = 'embedding')) as opclass,
           coalesce((select s0.opts from s0), '{}') as opts
  ), tuned as (
    select spec.opclass,
           case when p_rows < 100000 then spec.opts
                else array(select o from unnest(spec.opts) o where o not like 'ef_construction=%')
                     || ('ef_construction=' || greatest(case when p_rows >= 400000 then 200 else 128 end,
                                                        coalesce((select substr(o, 17)::int from unnest(spec.opts) o
                                                                        where o like 'ef_construction=%'), 64)))
           end as opts
    from spec
  )
  select 'using hnsw (embedding ' || tuned.opclass || ')'
         || case when cardinality(tuned.opts) = 0 then '' else ' with (' || array_to_string(tuned.opts, ', ') || ')' end
  from tuned
$$;

-- Bytes that one element of an HNSW graph takes in maintenance_work_mem while pgvector (0.8) builds the
-- graph in memory: its vector (8 header bytes + 4 a dimension for `vector`, 2 for `halfvec`), its
-- layer-0 neighbour list (2*m candidates of 16 bytes), the rare upper layers' lists and the element
-- itself. Measured from pgvector's own notice ("hnsw graph no longer fits into maintenance_work_mem
-- after N tuples"), m = 16, serial and parallel builds alike: vector(1536) 6,941 bytes, halfvec(1536)
-- 3,856, vector(512) 2,830; that is 8 + bytes_per_dim * dims + 32 * m + 270 (within 1%).
create function private.embedding_hnsw_element_bytes(p_type text, p_dims int, p_m int default 16) returns bigint
language sql
immutable
set search_path = ''
as $$
  select 8 + (case when p_type = 'halfvec' then 2 else 4 end)::bigint * p_dims + 32 * p_m + 270
$$;

-- The most chunks a segment may hold so that its HNSW graph is built in memory under
-- bulk_segment_build_mem_mb, for the embedding column's type and dimensions as the catalog has them now
-- (never assumed: the column may be halfvec) and segment 0's m, with 10% headroom. Loading segments
-- close at this size at the latest, and no merge produces a larger segment.
create function private.embedding_segment_max_rows() returns bigint
language sql
stable
set search_path = ''
as $$
  select greatest(1, floor(0.9 * s.bulk_segment_build_mem_mb * 1048576.0 / private.embedding_hnsw_element_bytes(
           t.typname, coalesce(nullif(a.atttypmod, -1), 1536),
           coalesce((select (regexp_match(private.embedding_hnsw_index_spec(), '[( ]m=(\d+)'))[1]::int), 16))))::bigint
  from public.embedding_sync_settings s,
       pg_catalog.pg_attribute a join pg_catalog.pg_type t on t.oid = a.atttypid
  where a.attrelid = 'public.documentation_embeddings'::regclass and a.attname = 'embedding'
  limit 1
$$;

-- The merge policy, size-tiered in the spirit of Lucene's TieredMergePolicy. Given the sealed segments
-- (ids, chunks), returns the segments to merge next, or null. A segment's tier is how many times
-- p_factor fits between p_floor (the size of a freshly built segment; smaller ones count as that size)
-- and its size: tier t holds sizes in [p_floor * p_factor^t, p_floor * p_factor^(t+1)). The lowest
-- tier holding p_factor segments merges its p_factor smallest, as many of them as fit in p_max (at
-- least two); a segment above p_max / 2 merges no more. Each merge moves its rows one tier up, so
-- there are at most p_factor - 1 segments in each of about log_factor(p_max / p_floor) tiers, plus the
-- full ones: a search scans about log(n) segments until they reach p_max.
create function private.embedding_merge_plan(p_ids int[], p_rows bigint[], p_factor int, p_floor bigint, p_max bigint)
returns int[]
language sql
immutable
set search_path = ''
as $$
  with s as (
    select u.id, coalesce(u.rows, 0) as rows,
           (select count(*) from generate_series(1, 64) k
            where greatest(p_floor, 1)::numeric * p_factor::numeric ^ k <= coalesce(u.rows, 0)) as tier
    from unnest(p_ids, p_rows) as u(id, rows)
    where coalesce(u.rows, 0) <= p_max / 2
  ), r as (
    select s.id, s.tier,
           row_number() over w as rn,
           sum(s.rows) over w as running,
           count(*) over (partition by s.tier) as n
    from s
    window w as (partition by s.tier order by s.rows, s.id)
  )
  select array_agg(r.id order by r.id)
  from r
  where r.n >= p_factor and r.rn <= p_factor and r.running <= p_max
  group by r.tier
  having count(*) >= 2
  order by r.tier
  limit 1
$$;

-- Builds (or rebuilds, after a crash) the HNSW index of every 'building' segment, oldest first, with
-- segment 0's operator class and options, then seals it, deleting the chunks marked in
-- embedding_pending_deletes while it built (and the marks). One builder at a time (its own advisory lock).
-- Then merges sealed segments (when segment_merges_enabled), one merge at a time, building first any
-- segment closed meanwhile.
-- Drops the segments a merge emptied, and sealed segments left empty when no bulk work waits (an
-- emptied segment's HNSW index still holds every old entry, which searches step over). Run by the
-- maintenance job, and by the build job right after its merges: waiting for the next maintenance run
-- would leave the emptied segments to every search for up to a minute more where pg_cron has no
-- second schedules. One dropper at a time, under the maintenance job's lock (which its own session
-- may take again).
create procedure private.drop_empty_embedding_segments()
language plpgsql
as $$
declare
  seg_id int;
  part text;
  has_rows boolean;
  bulk_waits boolean;
begin
  if not pg_catalog.pg_try_advisory_lock(1306521729) then
    return;
  end if;
  bulk_waits := exists (select from public.embedding_sync_queue q where q.lane = 'bulk' and q.status in ('pending', 'processing'));
  for seg_id in select g.id from public.embedding_segments g
                where g.state = 'merged' or (g.state = 'sealed' and not bulk_waits) order by g.id loop
    part := 'documentation_embeddings_s' || seg_id;
    execute format('select exists (select from private.%I)', part) into has_rows;
    continue when has_rows;
    begin
      -- DROP takes ACCESS EXCLUSIVE on the parent, and while it waits for that lock every search
      -- and every live write queues behind it: wait 100 ms at most, or give up until the next run
      -- (an empty segment costs nothing meanwhile).
      set local lock_timeout = '100ms';
      execute format('drop table private.%I', part);
      delete from public.embedding_segments g where g.id = seg_id;
    exception when lock_not_available then
      raise notice 'embedding segments: could not drop empty segment % now (%)', seg_id, sqlerrm;
    end;
    commit;
  end loop;
  perform pg_catalog.pg_advisory_unlock(1306521729);
end $$;

create procedure private.build_embedding_segments()
language plpgsql
as $$
declare
  cfg public.embedding_sync_settings;
  seg_id int;
  part text;
  n bigint;
  dropped bigint;
  took_ms bigint;
  t0 timestamptz;
  spec text;
  err text;
  merged boolean;
  merges int := 0;
begin
  -- hashtext('private.build_embedding_segments'), spelled out.
  if not pg_catalog.pg_try_advisory_lock(1306521730) then
    raise notice 'embedding segments: another build is in progress';
    return;
  end if;
  loop
    select * into cfg from public.embedding_sync_settings;
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
          -- Leaves cores to live work (embedding_sync_settings.bulk_segment_build_workers).
          perform pg_catalog.set_config('max_parallel_maintenance_workers', cfg.bulk_segment_build_workers::text, true);
          execute format('select count(*) from private.%I', part) into n;
          spec := private.embedding_hnsw_index_spec(n);
          execute format('create index %I on private.%I %s', part || '_embedding_hnsw', part, spec);
        exception when others then
          err := sqlerrm;
        end;
        if err is not null then
          update public.embedding_segments g set last_error = err where g.id = seg_id;
          commit;
          continue;
        end if;
      end if;
      -- Exact: this transaction holds the build's SHARE lock, so nobody else writes the segment.
      execute format('select count(*) from private.%I', part) into n;
      took_ms := (extract(epoch from clock_timestamp() - t0) * 1000)::bigint;
      -- The seal. Locking the segment's row waits for the live writers holding it FOR SHARE (their
      -- marks are committed then), and makes new ones wait the few milliseconds to the COMMIT, after
      -- which they see 'sealed' and delete themselves. The row, not the table: a table lock queued
      -- behind a bulk writer's long transaction (its loading segment's row FOR SHARE) would hold every
      -- live writer for as long (measured: 4.4 s under load).
      perform from public.embedding_segments g where g.id = seg_id for update;
      execute format('delete from private.%I d using public.embedding_pending_deletes p where p.segment = %s and d.id = p.id',
                     part, seg_id);
      get diagnostics dropped = row_count;
      delete from public.embedding_pending_deletes p where p.segment = seg_id;
      update public.embedding_segments g
         set state = 'sealed', sealed_at = clock_timestamp(), rows = n - dropped, last_error = null,
             build_ms = coalesce(took_ms, g.build_ms)
       where g.id = seg_id;
      commit;
    end loop;

    exit when not cfg.segment_merges_enabled;
    call private.merge_embedding_segment(merged);
    exit when not merged;
    merges := merges + 1;
  end loop;
  if merges > 0 then
    call private.drop_empty_embedding_segments();
  end if;
  perform pg_catalog.pg_advisory_unlock(1306521730);
end $$;

-- One merge, when the policy picks one (p_merged says whether it did). The caller holds the build lock.
--
-- 1. (short transaction) The merged segment's table is created like the parent and ATTACHed at once,
--    empty, in state 'merging' (SHARE UPDATE EXCLUSIVE on the parent: reads and writes go on; the CHECK
--    constraint spares the validation scan). Attached before any row lands in it, because PostgreSQL
--    fixes a query's partitions when it plans and takes the snapshot it reads with afterwards: had the
--    table been attached at the swap, a query planned just before the swap's commit and reading just
--    after it would miss the merged rows, the old ones being deleted by then.
-- 2. (one transaction, the long one) The sources' rows are copied into it, its HNSW index is built once
--    (segment 0's opclass and options, maintenance_work_mem = bulk_segment_build_mem_mb); nobody sees
--    those rows yet. Locks held meanwhile: on the new table, and ACCESS SHARE on the sources (live
--    edits move rows out of them, reads go on).
--    Then the swap: LOCK the sources IN SHARE MODE (writes to them wait from here to the commit; reads
--    never), delete from the copy the rows that left a source or changed in place since the copy, add
--    those that changed, empty the sources (DELETE: readers keep reading), mark the new segment
--    'sealed' and the sources 'merged', COMMIT. Every reader's snapshot sees either the sources' rows
--    or the merged ones, never both, never neither.
-- Killed at any point before that COMMIT, everything of step 2 rolls back: the sources keep their rows
-- and the new table stays attached and empty ('merging'); the next run merges into it again (or,
-- when the policy no longer wants a merge, marks it 'merged' so maintenance drops it). The emptied
-- sources are dropped by private.maintain_embedding_segments (DROP needs a brief ACCESS EXCLUSIVE
-- on the parent, taken under lock_timeout).
create procedure private.merge_embedding_segment(inout p_merged boolean default null)
language plpgsql
as $$
declare
  cfg public.embedding_sync_settings;
  max_rows bigint;
  plan int[];
  total bigint;
  target int;
  leftover int;
  part text;
  cols text;
  cmp_cols text;
  cmp text;
  src_keys text;
  src_ids text;
  sources text;
  src_list text;
  n bigint;
  d bigint;
  attempt int;
  src int;
  t0 timestamptz;
  t_build timestamptz;
  t_swap timestamptz;
  err text;
begin
  p_merged := false;
  select * into cfg from public.embedding_sync_settings;
  max_rows := private.embedding_segment_max_rows();
  -- A sealed segment's size: its count when sealed, or the planner's, lower once live edits took rows away.
  select private.embedding_merge_plan(array_agg(g.id order by g.id),
           array_agg(least(g.rows, case when c.reltuples >= 0 then c.reltuples::bigint end) order by g.id),
           cfg.segment_merge_factor, least(cfg.bulk_segment_max_rows, max_rows), max_rows)
    into plan
  from public.embedding_segments g
  join pg_catalog.pg_class c on c.oid = to_regclass('private.documentation_embeddings_s' || g.id)
  where g.state = 'sealed';
  select min(g.id) into leftover from public.embedding_segments g where g.state = 'merging';

  if plan is null then
    if leftover is not null then
      -- A killed merge's table, empty, and nothing to merge any more: dropped like a merged segment.
      update public.embedding_segments set state = 'merged', rows = 0 where id = leftover;
      commit;
    end if;
    return;
  end if;
  select sum(g.rows) into total from public.embedding_segments g where g.id = any (plan);

  -- 1. The merged segment's table, attached and empty (or a killed merge's, reused).
  if leftover is not null then
    target := leftover;
    part := 'documentation_embeddings_s' || target;
    execute format('select count(*) from private.%I', part) into n;
    if n > 0 then
      raise warning 'embedding segments: merging segment % is not empty (% rows); not merging', target, n;
      return;
    end if;
    update public.embedding_segments g
       set merged_from = plan, rows = total, build_attempts = g.build_attempts + 1
     where g.id = target;
  else
    begin
      -- Segment ids are taken one at a time (the maintenance job opens segments too).
      perform pg_catalog.pg_advisory_xact_lock(1306521731);
      target := coalesce((select max(g.id) from public.embedding_segments g), 0) + 1;
      part := 'documentation_embeddings_s' || target;
      execute format('create table private.%I (like public.documentation_embeddings including defaults including generated)', part);
      execute format('alter table private.%I add constraint %I check (segment = %s)', part, part || '_segment', target);
      execute format('alter table private.%I enable row level security', part);
      execute format('revoke all on private.%I from public, anon, authenticated, service_role', part);
      set local lock_timeout = '5s';
      execute format('alter table public.documentation_embeddings attach partition private.%I for values in (%s)', part, target);
      insert into public.embedding_segments (id, state, rows, merged_from, build_attempts)
      values (target, 'merging', total, plan, 1);
    exception when lock_not_available then
      raise notice 'embedding segments: could not attach a merged segment now (%)', sqlerrm;
      return;
    end;
  end if;
  commit;

  -- 2. Copy, build, swap: one transaction.
  select string_agg(quote_ident(a.attname), ', ' order by a.attnum),
         -- What tells a row changed in place (a source renamed, a promotion): all but the vector and the
         -- text, which content_hash and model stand for. The swap reads only these (and id).
         string_agg(quote_ident(a.attname), ', ' order by a.attnum) filter (where a.attname not in ('embedding', 'content')),
         string_agg(format('k.%1$I is not distinct from m.%1$I', a.attname), ' and ' order by a.attnum)
           filter (where a.attname not in ('id', 'embedding', 'content'))
    into cols, cmp_cols, cmp
  from pg_catalog.pg_attribute a
  where a.attrelid = 'public.documentation_embeddings'::regclass and a.attnum > 0 and not a.attisdropped
    and a.attgenerated = '' and a.attname <> 'segment';
  select string_agg(format('select %s, %s as segment from private.%I', cols, target, 'documentation_embeddings_s' || x), ' union all ' order by x),
         string_agg(format('select %s from private.%I', cmp_cols, 'documentation_embeddings_s' || x), ' union all ' order by x),
         string_agg(format('select id from private.%I', 'documentation_embeddings_s' || x), ' union all ' order by x),
         string_agg(format('private.%I', 'documentation_embeddings_s' || x), ', ' order by x)
    into sources, src_keys, src_ids, src_list
  from unnest(plan) x;

  t0 := clock_timestamp();
  begin
    perform pg_catalog.set_config('maintenance_work_mem', cfg.bulk_segment_build_mem_mb || 'MB', true);
    -- Leaves cores to live work (embedding_sync_settings.bulk_segment_build_workers).
    perform pg_catalog.set_config('max_parallel_maintenance_workers', cfg.bulk_segment_build_workers::text, true);
    execute format('insert into private.%I (%s, segment) %s', part, cols, sources);
    get diagnostics n = row_count;
    t_build := clock_timestamp();
    execute format('create index %I on private.%I %s', part || '_embedding_hnsw', part, private.embedding_hnsw_index_spec(n));

    -- The swap. Wait for the sources' writers 200 ms at a time, for at most 30 s: a lock request in
    -- the queue holds up every live write that comes after it, so it must never wait long at once;
    -- between attempts, the writers queued behind it go on.
    attempt := 0;
    loop
      begin
        set local lock_timeout = '200ms';
        execute format('lock table %s in share mode', src_list);
        exit;
      exception when lock_not_available then
        attempt := attempt + 1;
        if attempt >= 150 then
          raise;
        end if;
      end;
    end loop;
    set local lock_timeout = 0;
    t_swap := clock_timestamp();
    execute format('delete from private.%I m where not exists (select from (%s) k where k.id = m.id and %s)',
                   part, src_keys, cmp);
    get diagnostics d = row_count;
    n := n - d;
    execute format('insert into private.%I (%s, segment) select * from (%s) k where k.id in (%s except select id from private.%I)',
                   part, cols, sources, src_ids, part);
    get diagnostics d = row_count;
    n := n + d;
    foreach src in array plan loop
      execute format('delete from private.%I', 'documentation_embeddings_s' || src);
    end loop;
    update public.embedding_segments g
       set state = 'sealed', rows = n, sealed_at = clock_timestamp(), last_error = null,
           build_ms = (extract(epoch from clock_timestamp() - t0) * 1000)::bigint
     where g.id = target;
    update public.embedding_segments g set state = 'merged', rows = 0, merged_into = target where g.id = any (plan);
    raise notice 'embedding segments: merged % into % (% chunks): copy % ms, build % ms, swap % ms (writes to the sources waited)',
      plan, target, n, (extract(epoch from t_build - t0) * 1000)::int, (extract(epoch from t_swap - t_build) * 1000)::int,
      (extract(epoch from clock_timestamp() - t_swap) * 1000)::int;
  exception when others then
    err := sqlerrm;
  end;
  if err is not null then
    update public.embedding_segments g set last_error = err where g.id = target;
    commit;
    return;
  end if;
  commit;
  p_merged := true;
end $$;

-- Merges until the policy is satisfied, for operators and benchmarks (the build job does it on its own).
create procedure private.merge_embedding_segments()
language plpgsql
as $$
declare
  merged boolean;
begin
  if not pg_catalog.pg_try_advisory_lock(1306521730) then
    raise notice 'embedding segments: another build or merge is in progress';
    return;
  end if;
  loop
    call private.merge_embedding_segment(merged);
    exit when not merged;
  end loop;
  perform pg_catalog.pg_advisory_unlock(1306521730);
end $$;

-- Opens a loading segment: CREATE TABLE, then ATTACH PARTITION (SHARE UPDATE EXCLUSIVE on the parent:
-- reads and writes go on; the CHECK constraint spares the validation scan). Returns its id, or null
-- when the parent stayed locked past lock_timeout (retry later) or a segment is already loading.
-- Bulk writes then go to it (private.embedding_bulk_target()) until maintenance closes it.
create function private.open_embedding_segment() returns int
language plpgsql
set search_path = ''
as $$
declare
  seg_id int;
  part text;
begin
  -- Segment ids are taken one at a time (a merge takes one too).
  perform pg_catalog.pg_advisory_xact_lock(1306521731);
  if exists (select from public.embedding_segments g where g.state = 'loading') then
    return null;
  end if;
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
    return null;
  end;
  return seg_id;
end $$;

-- The quick steps (close, open, drop empty), then the builds when p_build.
create procedure private.maintain_embedding_segments(p_build boolean default true)
language plpgsql
as $$
declare
  cfg public.embedding_sync_settings;
  seg public.embedding_segments;
  n bigint;
begin
  if pg_catalog.pg_try_advisory_lock(1306521729) then
    select * into cfg from public.embedding_sync_settings;

    -- 1. Close the loading segment.
    select * into seg from public.embedding_segments g where g.state = 'loading';
    if found then
      execute format('select count(*) from private.%I', 'documentation_embeddings_s' || seg.id) into n;
      if n >= least(cfg.bulk_segment_max_rows, private.embedding_segment_max_rows()) or not cfg.bulk_segments_enabled
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
      perform private.open_embedding_segment();
    end if;
    commit;

    -- 3. Drop the segments left empty.
    call private.drop_empty_embedding_segments();
    perform pg_catalog.pg_advisory_unlock(1306521729);
  else
    raise notice 'embedding segments: another maintenance run is in progress';
  end if;
  commit;

  if p_build then
    call private.build_embedding_segments();
  end if;
end $$;

revoke all on procedure private.maintain_embedding_segments(boolean), private.build_embedding_segments(),
  private.drop_empty_embedding_segments(),
  private.merge_embedding_segment(boolean), private.merge_embedding_segments() from public, anon, authenticated;
revoke all on function private.open_embedding_segment(), private.embedding_hnsw_index_spec(bigint),
  private.embedding_hnsw_element_bytes(text, int, int), private.embedding_segment_max_rows(),
  private.embedding_merge_plan(int[], bigint[], int, bigint, bigint) from public, anon, authenticated;

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
