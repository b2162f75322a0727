-- Live edits never wait for a segment's index build.
--
-- A closed bulk segment gets its HNSW index from a plain CREATE INDEX (private.build_embedding_segments),
-- which holds a SHARE lock on that segment for the whole build: tens of seconds on two idle cores,
-- minutes under load. A live edit of a row whose chunks are in that segment had to delete them there,
-- and its ROW EXCLUSIVE lock waited for the whole build (pg_locks: the worker's apply_embedding_results
-- waiting on RowExclusiveLock of private.documentation_embeddings_s<N>, the build holding ShareLock).
--
-- CREATE INDEX CONCURRENTLY would not take that lock, but it cannot run in a function or a procedure,
-- and the builds run in the database (pg_cron). So the deletes wait instead of the writer:
--   - apply_embedding_results marks the chunks it would delete in a segment under build in
--     public.embedding_pending_deletes (same transaction as the new chunks, which go to segment 0 or
--     the loading segment, never to the segment under build);
--   - searches (search_documents, and so match_documents and hybrid_search) skip marked chunks: an edit
--     is searchable at once, with its new text only, and a deleted row is gone at once;
--   - the build, once its index is built, deletes the marked chunks and the marks in the transaction
--     that seals the segment.
-- Rights: a user reads the marks of the chunks they may read (the same RLS as the chunks), so nothing
-- of another's rows shows through them.

create table public.embedding_pending_deletes (
  segment int not null,
  id bigint not null,
  created_at timestamptz not null default now(),
  primary key (segment, id)
);
alter table public.embedding_pending_deletes enable row level security;
revoke all on public.embedding_pending_deletes from anon, authenticated;
grant select on public.embedding_pending_deletes to authenticated;
grant all on public.embedding_pending_deletes to service_role;
-- A mark is visible to whoever may read its chunk: documentation_embeddings' own policy decides.
create policy embedding_pending_deletes_readable_chunk on public.embedding_pending_deletes
  for select to authenticated
  using (exists (select from public.documentation_embeddings d
                 where d.id = embedding_pending_deletes.id and d.segment = embedding_pending_deletes.segment));

-- The worker's write: as in 20260115000000, except that the chunks to delete in a segment under build
-- are marked, not deleted, and that segment is never locked.
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

revoke all on function public.apply_embedding_results(text, text, bigint[], jsonb) from public, anon, authenticated;
grant execute on function public.apply_embedding_results(text, text, bigint[], jsonb) to service_role;

-- The build: as in 20260115000100, except that it deletes the chunks marked while it built (and the
-- marks) when it seals the segment.
create or replace procedure private.build_embedding_segments()
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
begin
  -- hashtext('private.build_embedding_segments'), spelled out.
  if not pg_catalog.pg_try_advisory_lock(1306521730) then
    raise notice 'embedding segments: another build is in progress';
    return;
  end if;
  loop
    select * into cfg from public.embedding_sync_settings;
    spec := private.embedding_hnsw_index_spec();
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
          -- Leaves cores to live work (bulk_segment_build_workers, 20260121000000).
          perform pg_catalog.set_config('max_parallel_maintenance_workers', cfg.bulk_segment_build_workers::text, true);
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
  end loop;
  perform pg_catalog.pg_advisory_unlock(1306521730);
end $$;
revoke all on procedure private.build_embedding_segments() from public, anon, authenticated;

-- The search: as in 20260112000000, except that it skips the chunks marked in embedding_pending_deletes.
create or replace function public.search_documents(
  query_text text,
  query_embedding extensions.vector,
  match_count int default 8,
  mode text default 'hybrid',
  filter jsonb default '{}'::jsonb,
  rrf_k int default 50,
  text_candidates bigint[] default null,
  full_text_weight double precision default 1,
  semantic_weight double precision default 1,
  reader_is_broad boolean default null
) returns table (id bigint, source_table text, source_id text, chunk_index int, content text,
                 metadata jsonb, score double precision, similarity double precision)
language plpgsql
stable
security invoker
set search_path = public, extensions
set hnsw.iterative_scan = 'relaxed_order'
set hnsw.ef_search = 200
as $$
declare
  f jsonb := coalesce(filter, '{}'::jsonb);
  k int := least(greatest(match_count, 1), 200);
  depth int;                      -- rows each branch contributes: k, or 2k to fuse
  under_rls boolean := pg_catalog.row_security_active('public.documentation_embeddings'::regclass);
  cap int := public.search_exact_max_rows();
  conds text := '';
  vtype text;                     -- the column's type (vector or halfvec), to cast the query to
  q text;                         -- the query embedding, cast, as SQL
  tsq tsquery;
  from_small text := 'public.documentation_embeddings c';
  small boolean := false;
  key_tables text[];
  key_ids text[];
  n bigint;
  s_ids bigint[] := '{}';
  s_dist float8[] := '{}';
  t_ids bigint[] := '{}';
  t_rank float8[] := '{}';
  hidden bigint[];
  hide text := '';                -- excludes the chunks whose deletes wait for their segment's build
begin
  if mode is null or mode not in ('vector', 'text', 'hybrid') then
    raise exception 'mode must be vector, text or hybrid' using errcode = '22023';
  end if;
  depth := case when mode = 'hybrid' then k * 2 else k end;
  -- Only the filters that are there: a generic "metadata @> '{}'" looks selective to the planner.
  if f ? 'source_table' then conds := conds || ' and c.source_table = $3->>''source_table'''; end if;
  if (f - 'source_table') <> '{}'::jsonb then conds := conds || ' and c.metadata @> ($3 - ''source_table'')'; end if;
  select pg_catalog.format_type(a.atttypid, null) into vtype
  from pg_catalog.pg_attribute a
  where a.attrelid = 'public.documentation_embeddings'::regclass and a.attname = 'embedding';
  q := '$1::' || vtype;
  -- Chunks replaced or deleted while their segment's index was being built, until the build deletes
  -- them (usually none; under RLS, only the caller's readable ones are seen, and only those matter).
  select pg_catalog.array_agg(p.id) into hidden from public.embedding_pending_deletes p;
  if hidden is not null then
    hide := format(' and c.id <> all (%L::bigint[])', hidden);
  end if;
  if mode <> 'vector' then tsq := public.embedding_question_tsquery(query_text); end if;

  -- The plan: small (exact over the caller's rows, or over a filter's few chunks) or broad.
  if under_rls and reader_is_broad then
    small := false;
  elsif under_rls then
    select pg_catalog.array_agg(r.source_table), pg_catalog.array_agg(r.source_id), count(*)
      into key_tables, key_ids, n
    from embedding_rights.readable_keys(f->>'source_table', cap + 1) r;
    small := n <= cap;
    if small then
      from_small := 'unnest($4::text[], $5::text[]) r(st, sid)
        join public.documentation_embeddings c on c.source_table = r.st and c.source_id = r.sid';
    end if;
  elsif conds <> '' then
    execute 'select count(*) from (select from public.documentation_embeddings c where true' || conds || ' limit $2) x'
      into n using null::text, cap + 1, f;
    small := n <= cap;
  end if;

  -- Vector branch.
  if mode <> 'text' and query_embedding is not null then
    if not small then
      -- The index, scanning on (iterative) past rows the policy or the filter drops; re-sorted exactly.
      execute format('with r as materialized (
          select c.id, c.embedding <=> %1$s as dist from public.documentation_embeddings c where true %2$s
          order by c.embedding <=> %1$s limit $2)
        select coalesce(array_agg(r.id order by r.dist, r.id), ''{}''), coalesce(array_agg(r.dist order by r.dist, r.id), ''{}'') from r',
        q, conds || hide)
        into s_ids, s_dist using query_embedding, depth, f;
    end if;
    if small or coalesce(array_length(s_ids, 1), 0) < depth then
      -- Exact: every candidate's distance, then the best. The materialized CTE keeps the planner from
      -- answering with an approximate index order.
      execute format('with r as materialized (
          select c.id, c.embedding <=> %1$s as dist from %2$s where true %3$s)
        , best as (select r.id, r.dist from r order by r.dist, r.id limit $2)
        select coalesce(array_agg(best.id order by best.dist, best.id), ''{}''),
               coalesce(array_agg(best.dist order by best.dist, best.id), ''{}'') from best',
        q, from_small, conds || hide)
        into s_ids, s_dist using query_embedding, depth, f, key_tables, key_ids;
    end if;
  end if;

  -- Full-text branch.
  if mode <> 'vector' and tsq is not null then
    execute format('with r as materialized (
        select c.id, ts_rank_cd(c.fts, $6, 1) as rank from %1$s
        where c.fts @@ $6 %2$s %3$s)
      , best as (select r.id, r.rank from r order by r.rank desc, r.id limit $2)
      select coalesce(array_agg(best.id order by best.rank desc, best.id), ''{}''),
             coalesce(array_agg(best.rank order by best.rank desc, best.id), ''{}'') from best',
      from_small, conds || hide,
      case when not small and under_rls and text_candidates is not null then 'and c.id = any ($7)' else '' end)
      into t_ids, t_rank using query_embedding, depth, f, key_tables, key_ids, tsq, text_candidates;
  end if;

  -- The rows, looked up by id (an index scan: the policy then runs on these few rows only).
  return query execute format($q$
    with se as (select s.id, s.dist, s.ix from unnest($1::bigint[], $2::float8[]) with ordinality s(id, dist, ix)),
         ft as (select t.id, t.rank, t.ix from unnest($3::bigint[], $4::float8[]) with ordinality t(id, rank, ix)),
         fused as (
           select coalesce(ft.id, se.id) as id,
                  (case $5
                     when 'vector' then 1 - se.dist
                     when 'text' then ft.rank
                     else coalesce(1.0 / ($6 + ft.ix), 0.0) * $8 + coalesce(1.0 / ($6 + se.ix), 0.0) * $9
                   end)::double precision as score
           from ft full outer join se on se.id = ft.id),
         e as materialized (
           select e.id, e.source_table, e.source_id, e.chunk_index, e.content, e.metadata,
                  case when $7::extensions.vector is null then null
                       else (1 - (e.embedding <=> $7::%s))::double precision end as similarity
           from public.documentation_embeddings e
           where e.id = any ($1::bigint[] || $3::bigint[]))
    select e.id, e.source_table, e.source_id, e.chunk_index, e.content, e.metadata, f.score, e.similarity
    from fused f join e on e.id = f.id
    order by f.score desc, e.id
    limit $10
  $q$, vtype)
  using s_ids, s_dist, t_ids, t_rank, mode, rrf_k, query_embedding, full_text_weight, semantic_weight, k;
end $$;
