-- files_queue: priority lanes, the rule of embedding_sync_queue (20260113000000) where the collector's
-- MAINTENANCE mode (live) and its MASSIVE mode (bulk) share the queue.
--
-- An object's lane is its Storage user metadata `lane` ('bulk', anything else live): supabase-js
-- `upload(path, body, { metadata: { lane: 'bulk' } })`. The storage trigger copies it into the row; a
-- live upload upgrades a queued bulk row, a bulk upload never downgrades a queued live one. The files
-- worker writes a bulk file's rows with embedding_sync.lane = 'bulk', so their embedding jobs are bulk
-- as well. claim_files_queue takes live rows first with the same bulk share (embedding_sync_settings).

alter table public.files_queue
  add column lane text not null default 'live' check (lane in ('live', 'bulk'));
create index files_queue_claim_lane_idx on public.files_queue (lane, run_at, id) where status = 'pending';

-- The lane an object asks for. Storage keeps upload metadata in storage.objects.user_metadata; an older
-- self-hosted Storage without that column gets a function that says live. (Reading the column directly,
-- not through to_jsonb(o): that serialised every row and made repopulating 1.3 million objects twice as slow.)
do $$
begin
  if exists (select from pg_catalog.pg_attribute
             where attrelid = 'storage.objects'::regclass and attname = 'user_metadata' and not attisdropped) then
    -- No SET clause, so the planner inlines it into the 100,000-row repopulate batches (it names no
    -- relation or function, only the row's column and built-in operators).
    create function private.files_queue_object_lane(o storage.objects) returns text
    language sql immutable
    as $f$ select case when o.user_metadata ->> 'lane' = 'bulk' then 'bulk' else 'live' end $f$;
  else
    create function private.files_queue_object_lane(o storage.objects) returns text
    language sql immutable
    as $f$ select 'live'::text $f$;
  end if;
end $$;
revoke all on function private.files_queue_object_lane(storage.objects) from public;

-- The storage trigger (20260103000000), with the lane.
create or replace function private.files_queue_on_object_change()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  if tg_op = 'DELETE' then
    update public.files_queue
       set status = 'deleted', locked_by = null, locked_at = null, lease_expires_at = null, updated_at = now()
     where file_path = old.name and bucket_id = old.bucket_id;
    return old;
  end if;

  if not exists (select 1 from public.files_queue_watched_buckets w where w.bucket_id = new.bucket_id) then
    return new;
  end if;

  if tg_op = 'UPDATE' and old.bucket_id is not distinct from new.bucket_id and old.name is not distinct from new.name
     and old.metadata is not distinct from new.metadata and old.version is not distinct from new.version then
    return new; -- e.g. last_accessed_at only: nothing new to process
  end if;

  if tg_op = 'UPDATE' and (old.bucket_id, old.name) is distinct from (new.bucket_id, new.name) then
    update public.files_queue set status = 'deleted', locked_by = null, locked_at = null, lease_expires_at = null, updated_at = now()
     where file_path = old.name and bucket_id = old.bucket_id;
  end if;

  insert into public.files_queue as q (file_path, bucket_id, file_size, status, processed, created_at, lane)
  values (new.name, new.bucket_id, (new.metadata ->> 'size')::bigint, 'pending', false, coalesce(new.created_at, now()),
          private.files_queue_object_lane(new))
  on conflict (file_path) do update
     set file_size = excluded.file_size,
         status = 'pending',
         processed = false,
         attempts = 0,
         last_error = null,
         run_at = now(),
         locked_by = null,
         locked_at = null,
         lease_expires_at = null,
         processed_at = null,
         lane = case when q.status in ('pending', 'processing') and q.lane = 'live' then 'live' else excluded.lane end,
         updated_at = now()
   where q.bucket_id = excluded.bucket_id;
  return new;
end $$;

-- claim (20260103000000): expired leases first, as before; then due pending rows, live first with
-- bulk's share of the batch (see claim_embedding_jobs), or FIFO when lanes are off.
create or replace function public.claim_files_queue(p_worker text, p_batch int default 20, p_lease_seconds int default 120)
returns setof public.files_queue
language plpgsql
set search_path = public, extensions
as $$
declare
  v_ids bigint[];
  v_bulk bigint[] := '{}';
  v_left int;
  v_reserve int;
  v_enabled boolean;
  v_share double precision;
begin
  select s.lanes_enabled, s.bulk_share into v_enabled, v_share from public.embedding_sync_settings s;
  select coalesce(array_agg(id), '{}') into v_ids from (
    select id from public.files_queue
     where status = 'processing' and lease_expires_at < now()
     order by lease_expires_at
     limit greatest(p_batch, 0)
     for update skip locked
  ) e;
  v_left := greatest(p_batch, 0) - cardinality(v_ids);
  if v_left > 0 and not coalesce(v_enabled, true) then
    select v_ids || coalesce(array_agg(id), '{}') into v_ids from (
      select id from public.files_queue
       where status = 'pending' and run_at <= now()
       order by run_at, id
       limit v_left
       for update skip locked
    ) p;
  elsif v_left > 0 then
    v_reserve := case when v_share > 0 and v_left > 1 then least(v_left - 1, greatest(1, floor(v_left * v_share)::int)) else 0 end;
    select coalesce(array_agg(id), '{}') into v_bulk from (
      select id from public.files_queue
       where status = 'pending' and lane = 'bulk' and run_at <= now()
       order by run_at, id limit v_reserve for update skip locked
    ) b;
    select v_ids || coalesce(array_agg(id), '{}') into v_ids from (
      select id from public.files_queue
       where status = 'pending' and lane = 'live' and run_at <= now()
       order by run_at, id limit v_left - cardinality(v_bulk) for update skip locked
    ) l;
    v_left := greatest(p_batch, 0) - cardinality(v_ids) - cardinality(v_bulk);
    if v_left > 0 then
      select v_bulk || coalesce(array_agg(id), '{}') into v_bulk from (
        select id from public.files_queue
         where status = 'pending' and lane = 'bulk' and run_at <= now() and not id = any (v_bulk)
         order by run_at, id limit v_left for update skip locked
      ) b;
    end if;
    v_ids := v_ids || v_bulk;
  end if;
  return query
    update public.files_queue q
       set status = 'processing',
           attempts = q.attempts + 1,
           locked_by = p_worker,
           locked_at = now(),
           lease_expires_at = now() + make_interval(secs => p_lease_seconds),
           updated_at = now()
     where q.id = any(v_ids)
    returning q.*;
end $$;

-- Repopulate and repair (20260103000000) keep each object's lane.
create or replace function public.files_queue_repopulate_batch(
  p_bucket text, p_after text default null, p_batch int default 10000, p_dry_run boolean default false
) returns table (inserted bigint, scanned bigint, cursor text, done boolean)
language plpgsql
set search_path = public, extensions
as $$
declare
  v_upper text;
  v_scanned bigint;
  v_inserted bigint;
begin
  if p_batch is null or p_batch < 1 or p_batch > 100000 then
    raise exception 'batch size must be between 1 and 100000' using errcode = '22023';
  end if;
  -- `name > coalesce(p_after, '')`: see 20260103000000 (it stays an index bound in a generic plan).
  select count(*), max(k.name) into v_scanned, v_upper
    from (select o.name from storage.objects o
           where o.bucket_id = p_bucket and o.name > coalesce(p_after, '')
           order by o.name limit p_batch) k;
  if v_scanned = 0 then
    return query select 0::bigint, 0::bigint, p_after, true;
    return;
  end if;

  if p_dry_run then
    select count(*) into v_inserted
      from storage.objects o
     where o.bucket_id = p_bucket and o.name > coalesce(p_after, '') and o.name <= v_upper
       and not exists (select 1 from public.files_queue q where q.file_path = o.name);
  else
    insert into public.files_queue (file_path, bucket_id, file_size, status, processed, created_at, lane)
    select o.name, o.bucket_id, (o.metadata ->> 'size')::bigint, 'pending', false, coalesce(o.created_at, now()),
           private.files_queue_object_lane(o)
      from storage.objects o
     where o.bucket_id = p_bucket and o.name > coalesce(p_after, '') and o.name <= v_upper
    on conflict (file_path) do nothing;
    get diagnostics v_inserted = row_count;
  end if;
  return query select v_inserted, v_scanned, v_upper, v_scanned < p_batch;
end $$;

create or replace function public.files_queue_repair_missing(p_bucket text)
returns bigint
language plpgsql
set search_path = public, extensions
as $$
declare v_inserted bigint;
begin
  insert into public.files_queue (file_path, bucket_id, file_size, status, processed, created_at, lane)
  select o.name, o.bucket_id, (o.metadata ->> 'size')::bigint, 'pending', false, coalesce(o.created_at, now()),
         private.files_queue_object_lane(o)
    from storage.objects o
   where o.bucket_id = p_bucket
     and not exists (select 1 from public.files_queue q where q.file_path = o.name)
  on conflict (file_path) do nothing;
  get diagnostics v_inserted = row_count;
  return v_inserted;
end $$;

-- files_queue_status (20260103000000), with the pending rows per lane appended.
create or replace view public.files_queue_status with (security_invoker = true) as
select bucket_id, status, count(*) as files, sum(file_size) as bytes,
       min(created_at) filter (where status = 'pending') as oldest_pending,
       max(attempts) as max_attempts_seen,
       count(*) filter (where status = 'pending' and lane = 'live') as pending_live,
       count(*) filter (where status = 'pending' and lane = 'bulk') as pending_bulk
  from public.files_queue
 group by bucket_id, status;
