-- Relational -> vector sync, part 3: the worker's queue operations. Every one is a single set-based
-- statement (or a few), so a worker claims or completes hundreds of jobs in one round trip.
-- The TypeScript worker orchestrates; the rules (leases, backoff, dead letter, newest wins, lanes,
-- segments) are here.

-- claim_embedding_jobs: up to p_limit ready pending jobs, FOR UPDATE SKIP LOCKED so concurrent workers
-- never get the same job. Each claimed job is leased to p_worker until lease_until; past it
-- recover_stuck_embedding_jobs() returns the job to pending. Lanes:
--   p_lane null   live first; while bulk jobs are ready, floor(p_limit * bulk_share) of the batch (at
--                 least 1, never the whole batch when live jobs wait) goes to bulk; whatever one lane
--                 leaves unused goes to the other.
--   p_lane 'live' / 'bulk'  that lane only.
--   lanes_enabled = false   plain FIFO (run_at, id), whatever p_lane says.
-- Each lane's scan reads embedding_sync_queue_ready_lane in order (one OR across lanes would sort the
-- whole backlog).
create function public.claim_embedding_jobs(p_worker text, p_limit int, p_lease_seconds int default null,
                                            p_lane text default null)
returns table (
  id bigint, source_table text, source_id text, action text, content text, content_hash text,
  version bigint, retry_count int, chunk_tokens int, chunk_overlap_tokens int, lease_until timestamptz,
  lane text
)
language plpgsql
security definer
set search_path = public, extensions
as $$
#variable_conflict use_column
declare
  st embedding_sync_settings;
  lease interval;
  n int := greatest(coalesce(p_limit, 0), 0);
  reserve int;
  ids bigint[] := '{}';
  bulk_ids bigint[] := '{}';
begin
  if p_lane is not null and p_lane not in ('live', 'bulk') then
    raise exception 'p_lane must be live, bulk or null, not %', p_lane using errcode = '22023';
  end if;
  select * into st from embedding_sync_settings;
  lease := make_interval(secs => coalesce(p_lease_seconds, st.lease_seconds));

  if not st.lanes_enabled then
    select coalesce(array_agg(r.id), '{}') into ids from (
      select q.id from embedding_sync_queue q
      where q.status = 'pending' and q.run_at <= now()
      order by q.run_at, q.id limit n for update skip locked) r;
  elsif p_lane is not null then
    select coalesce(array_agg(r.id), '{}') into ids from (
      select q.id from embedding_sync_queue q
      where q.status = 'pending' and q.lane = p_lane and q.run_at <= now()
      order by q.run_at, q.id limit n for update skip locked) r;
  else
    reserve := case when st.bulk_share > 0 and n > 1 then least(n - 1, greatest(1, floor(n * st.bulk_share)::int))
                    else 0 end;
    select coalesce(array_agg(r.id), '{}') into bulk_ids from (
      select q.id from embedding_sync_queue q
      where q.status = 'pending' and q.lane = 'bulk' and q.run_at <= now()
      order by q.run_at, q.id limit reserve for update skip locked) r;
    select coalesce(array_agg(r.id), '{}') into ids from (
      select q.id from embedding_sync_queue q
      where q.status = 'pending' and q.lane = 'live' and q.run_at <= now()
      order by q.run_at, q.id limit n - cardinality(bulk_ids) for update skip locked) r;
    if cardinality(ids) + cardinality(bulk_ids) < n then
      -- Live left part of its share unused: more bulk.
      select bulk_ids || coalesce(array_agg(r.id), '{}') into bulk_ids from (
        select q.id from embedding_sync_queue q
        where q.status = 'pending' and q.lane = 'bulk' and q.run_at <= now() and not q.id = any (bulk_ids)
        order by q.run_at, q.id limit n - cardinality(ids) - cardinality(bulk_ids) for update skip locked) r;
    end if;
    ids := ids || bulk_ids;
  end if;

  return query
  with claimed as (
    update embedding_sync_queue q
    set status = 'processing', locked_by = p_worker, locked_at = clock_timestamp(),
        lease_until = clock_timestamp() + lease, updated_at = clock_timestamp()
    where q.id = any (ids)
    returning q.*
  )
  select c.id, c.source_table, c.source_id, c.action, c.content, c.content_hash, c.version, c.retry_count,
         coalesce(s.chunk_tokens, 512), coalesce(s.chunk_overlap_tokens, 64), c.lease_until, c.lane
  from claimed c left join embedding_sources s on s.source_table = c.source_table
  order by c.id;
end $$;

-- complete_embedding_jobs: only the lease holder completes; returns how many it completed.
create function public.complete_embedding_jobs(p_worker text, p_ids bigint[])
returns int
language sql
security definer
set search_path = public, extensions
as $$
  with done as (
    update embedding_sync_queue q
    set status = 'completed', processed_at = clock_timestamp(), updated_at = clock_timestamp(),
        locked_by = null, locked_at = null, lease_until = null
    where q.id = any (p_ids) and q.status = 'processing' and q.locked_by = p_worker
    returning 1
  ) select count(*)::int from done
$$;

-- fail_embedding_jobs: the lease holder gives jobs back. Each is retried after an exponential
-- backoff with jitter (never sooner than p_min_delay_seconds, e.g. a provider's Retry-After), or
-- becomes 'failed' with its error (the dead letter) once it reached max_attempts or when the error
-- is permanent. A job whose row already has a newer pending job is superseded, not retried.
create function public.fail_embedding_jobs(
  p_worker text, p_ids bigint[], p_error text,
  p_min_delay_seconds double precision default 0, p_permanent boolean default false
) returns table (id bigint, status text, run_at timestamptz)
language plpgsql
security definer
set search_path = public, extensions
as $$
#variable_conflict use_column
declare
  st embedding_sync_settings;
begin
  select * into st from embedding_sync_settings;
  return query
  with mine as (
    select q.id, q.retry_count, q.max_attempts,
           exists (select from embedding_sync_queue p where p.source_table = q.source_table
                     and p.source_id = q.source_id and p.status = 'pending') as superseded
    from embedding_sync_queue q
    where q.id = any (p_ids) and q.status = 'processing' and q.locked_by = p_worker
    for update
  )
  update embedding_sync_queue q set
    retry_count = q.retry_count + 1,
    status = case when mine.superseded then 'completed'
                  when p_permanent or q.retry_count + 1 >= q.max_attempts then 'failed'
                  else 'pending' end,
    run_at = case when mine.superseded or p_permanent or q.retry_count + 1 >= q.max_attempts then q.run_at
                  else now() + make_interval(secs => greatest(coalesce(p_min_delay_seconds, 0),
                    least(st.backoff_max_seconds, st.backoff_base_seconds * power(2, q.retry_count))
                    * (0.5 + random()))) end,
    last_error = case when mine.superseded then 'superseded by a newer change after: ' || p_error else p_error end,
    processed_at = case when mine.superseded or p_permanent or q.retry_count + 1 >= q.max_attempts
                        then clock_timestamp() end,
    locked_by = null, locked_at = null, lease_until = null, updated_at = clock_timestamp()
  from mine where q.id = mine.id
  returning q.id, q.status, q.run_at;
end $$;

-- recover_stuck_embedding_jobs: jobs still 'processing' past their lease (a worker crashed or
-- timed out) go back to pending, counting the attempt; superseded ones are closed instead.
create function public.recover_stuck_embedding_jobs()
returns int
language plpgsql
security definer
set search_path = public, extensions
as $$
declare
  n int;
begin
  with stuck as (
    select q.id,
           exists (select from embedding_sync_queue p where p.source_table = q.source_table
                     and p.source_id = q.source_id and p.status = 'pending') as superseded
    from embedding_sync_queue q
    where q.status = 'processing' and q.lease_until < now()
    for update skip locked
  )
  update embedding_sync_queue q set
    retry_count = q.retry_count + 1,
    status = case when stuck.superseded then 'completed'
                  when q.retry_count + 1 >= q.max_attempts then 'failed' else 'pending' end,
    last_error = 'lease expired (worker ' || coalesce(q.locked_by, '?') || ' did not finish)',
    run_at = now(),
    processed_at = case when stuck.superseded or q.retry_count + 1 >= q.max_attempts then clock_timestamp() end,
    locked_by = null, locked_at = null, lease_until = null, updated_at = clock_timestamp()
  from stuck where q.id = stuck.id;
  get diagnostics n = row_count;
  return n;
end $$;

-- cleanup_embedding_queue: completed jobs older than p_older_than (7 days) and the version
-- tombstones of rows deleted as long ago. Failed jobs (the dead letter) stay until an operator acts.
create function public.cleanup_embedding_queue(p_older_than interval default '7 days')
returns int
language plpgsql
security definer
set search_path = public, extensions
as $$
declare
  n int;
begin
  delete from embedding_sync_queue q where q.status = 'completed' and q.processed_at < now() - p_older_than;
  get diagnostics n = row_count;
  delete from embedding_sync_versions v where v.deleted and v.updated_at < now() - p_older_than;
  return n;
end $$;

-- apply_embedding_results: the worker's single write transaction for a batch. For the jobs it
-- still holds, it writes their chunks, removes stale chunks, and completes them. Newest wins:
-- a job only writes when its version is at least the row's applied version (and above the
-- table's TRUNCATE fence); an older job is completed as superseded and writes nothing.
-- p_chunks: [{"j": job id, "i": chunk index, "c": text, "h": sha256 hex, "t": tokens,
--             "e": "[v1,...]" or null}] -- null means "this hash is already embedded for p_model".
-- Returns one outcome per job: applied | superseded | lost (lease gone) | missing (a reused
-- embedding vanished meanwhile: the worker gives the job back).
-- Each chunk's metadata is the job's metadata plus chunk_count, and the applied row's fingerprint
-- (content and metadata hashes) is kept in embedding_sync_versions for resync.
-- Segments: each applied job writes into one segment, its target (a bulk-lane job: the loading
-- segment, else 0; any other job: 0), and the row's chunks in every other segment are deleted, so a
-- source row lives in exactly one segment. The segments the batch's rows have chunks in are read first
-- (a plain SELECT), and each delete names its segment as a literal, so the planner prunes every other
-- partition and never locks it; the insert locks only the partitions its rows go to. Chunks to delete
-- in a segment under build are marked in embedding_pending_deletes instead, and that segment is never
-- locked (see public.embedding_pending_deletes).
create function public.apply_embedding_results(
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
  bulk_target int;
  t_job bigint[]; t_seg int[]; t_cnt int[];
  segs int[];
  locked int[];
  deferred int[];
  seg_state text;
  seg int;
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

  if exists (select from embedding_sync_queue q where q.id = any (applied) and q.lane = 'bulk' and q.action <> 'DELETE') then
    bulk_target := private.embedding_bulk_target();
  end if;

  -- Each applied job: its target segment and how many chunks it now has (0 for a delete).
  select coalesce(array_agg(q.id), '{}'),
         coalesce(array_agg(case when q.lane = 'bulk' and q.action <> 'DELETE' then bulk_target else 0 end), '{}'),
         coalesce(array_agg(case when q.action = 'DELETE' then 0
                                 else (select count(*) from unnest(c_j) x(j) where x.j = q.id) end), '{}')
    into t_job, t_seg, t_cnt
  from embedding_sync_queue q where q.id = any (applied);

  -- The segments these rows have chunks in now (read with ACCESS SHARE: never waits for a build), each
  -- then locked ROW EXCLUSIVE (as the deletes below would lock it, only earlier), in ascending order.
  -- A merge's swap moves a sealed segment's rows into the merged segment under a SHARE lock on its
  -- sources: once a segment is locked here, no swap takes rows out of it until this transaction ends;
  -- a swap that committed between the read and the lock moved the rows, so the segments are read again
  -- until no new one appears, and the deletes find the chunks where they are.
  -- A segment under build ('building') is SHARE-locked by its CREATE INDEX for as long as the build
  -- runs: it is never locked here, and its chunks are marked in embedding_pending_deletes instead of
  -- deleted (the build deletes them when it seals the segment). A loading or building segment changes
  -- state only under a lock on embedding_segments that conflicts with FOR SHARE, so the state read
  -- here holds until this transaction ends: a segment read as 'loading' is not closed and built before
  -- the delete below, and a build does not seal a segment while a mark for it is uncommitted.
  locked := '{}';
  deferred := '{}';
  loop
    select coalesce(array_agg(distinct d.segment), '{}') into segs
    from embedding_sync_queue q
    join documentation_embeddings d on d.source_table = q.source_table and d.source_id = q.source_id
    where q.id = any (applied);
    exit when segs <@ (locked || deferred);
    foreach seg in array segs loop
      continue when seg = any (locked) or seg = any (deferred);
      seg_state := null;
      select g.state into seg_state from embedding_segments g
      where g.id = seg and g.state in ('loading', 'building') for share;
      if seg_state = 'building' then
        deferred := deferred || seg;
        continue;
      end if;
      execute format('lock table private.%I in row exclusive mode', 'documentation_embeddings_s' || seg);
      locked := locked || seg;
    end loop;
  end loop;

  -- An unchanged chunk (same index, hash, model and metadata) is left as is; a metadata-only change
  -- rewrites the metadata and reuses the stored vector.
  with chunks as (
    select c.j, c.i, c.c, c.h, c.t, c.e, count(*) over (partition by c.j) as cnt
    from unnest(c_j, c_i, c_c, c_h, c_t, c_e) as c(j, i, c, h, t, e)
    where c.j = any (applied)
  )
  insert into documentation_embeddings as d (source_table, source_id, chunk_index, content, content_hash,
    embedding, model, token_count, metadata, source_version, updated_at, segment)
  select q.source_table, q.source_id, c.i, c.c, c.h,
         coalesce(c.e::vector, (select x.embedding from documentation_embeddings x
                                where x.content_hash = c.h and x.model = p_model limit 1)),
         p_model, c.t, coalesce(q.metadata, '{}'::jsonb) || jsonb_build_object('chunk_count', c.cnt),
         q.version, now(), t.seg
  from chunks c
  join embedding_sync_queue q on q.id = c.j
  join unnest(t_job, t_seg) t(j, seg) on t.j = c.j
  where q.action <> 'DELETE'
  on conflict (source_table, source_id, chunk_index, segment) do update set
    content = excluded.content, content_hash = excluded.content_hash, embedding = excluded.embedding,
    model = excluded.model, token_count = excluded.token_count, metadata = excluded.metadata,
    source_version = excluded.source_version, updated_at = excluded.updated_at
  where d.content_hash is distinct from excluded.content_hash or d.model is distinct from excluded.model
     or d.metadata is distinct from excluded.metadata;

  -- Then deleted rows, rows that moved to another segment, and chunks past a row's new chunk count
  -- (after the insert: a chunk sent without a vector reuses the stored one, maybe this row's own).
  foreach seg in array locked loop
    execute format($d$
      delete from public.documentation_embeddings d
      using public.embedding_sync_queue q, unnest($1::bigint[], $2::int[], $3::int[]) t(j, seg, cnt)
      where d.segment = %1$s and q.id = t.j
        and d.source_table = q.source_table and d.source_id = q.source_id
        and (t.seg <> %1$s or d.chunk_index >= t.cnt)
      $d$, seg) using t_job, t_seg, t_cnt;
  end loop;
  -- No job targets a segment under build, so every chunk a row has there goes.
  foreach seg in array deferred loop
    execute format($d$
      insert into public.embedding_pending_deletes (segment, id)
      select %1$s, d.id
      from public.documentation_embeddings d
      join public.embedding_sync_queue q on d.source_table = q.source_table and d.source_id = q.source_id
      where d.segment = %1$s and q.id = any ($1)
      on conflict do nothing
      $d$, seg) using t_job;
  end loop;

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

revoke all on function public.claim_embedding_jobs(text, int, int, text), public.complete_embedding_jobs(text, bigint[]),
  public.fail_embedding_jobs(text, bigint[], text, double precision, boolean),
  public.recover_stuck_embedding_jobs(), public.cleanup_embedding_queue(interval),
  public.apply_embedding_results(text, text, bigint[], jsonb) from public, anon, authenticated;
grant execute on function public.claim_embedding_jobs(text, int, int, text), public.complete_embedding_jobs(text, bigint[]),
  public.fail_embedding_jobs(text, bigint[], text, double precision, boolean),
  public.recover_stuck_embedding_jobs(), public.cleanup_embedding_queue(interval),
  public.apply_embedding_results(text, text, bigint[], jsonb) to service_role;
