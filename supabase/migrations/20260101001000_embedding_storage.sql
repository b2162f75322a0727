-- Index memory as a setting: the vector type (vector | halfvec) and the dimensions of the stored
-- embeddings, and the one command that changes them on an existing index.
--
-- The setting IS the column type of public.documentation_embeddings.embedding (and of
-- public.query_embedding_cache.embedding): there is no second copy to drift from it.
-- public.embedding_dimensions() reads the dimensions back (pgvector's typmod is the dimension count for
-- both types), public.embedding_storage() the type too.
--
-- call public.set_embedding_storage(p_dimensions, p_type)  (npm run embeddings:storage wraps it)
--   type only (vector <-> halfvec, same dimensions): the stored vectors are converted in place
--     (ALTER COLUMN TYPE ... USING embedding::<type>(d)) and nothing is re-embedded. halfvec keeps 16
--     bits a component: embedding components are within [-1, 1], where that is 3 significant digits,
--     and HNSW's neighbours barely move (tested). Every HNSW index is dropped first (its operator class
--     belongs to the old type) and rebuilt with the same options and the same distance in the new
--     type's operator class (vector_cosine_ops <-> halfvec_cosine_ops, and so on).
--   dimensions (with or without a type change): the stored vectors cannot be converted, so the chunks,
--     the query cache and the per-row fingerprints that let resync and the worker skip unchanged rows
--     are cleared, the columns change, and every published row is queued again (a forced bulk resync):
--     the provider embeds everything again at the new dimensions. Set EMBEDDING_DIMENSIONS of the
--     functions to the same value first: they refuse to start while it differs from the table, so no
--     worker writes old-size vectors meanwhile.
--
-- Steps and locks. The first transaction holds ACCESS EXCLUSIVE on documentation_embeddings (an ALTER
-- COLUMN TYPE rewrites the table), converts or clears, and rebuilds segment 0's index, so the live
-- segment, which takes every live write, is whole when it commits, and a segment build started later
-- copies the right operator class from it. Every other partition's index is then rebuilt in its own
-- transaction (SHARE lock on that partition only: searches read it by exact scan meanwhile). The
-- indexes still to rebuild are kept in private.embedding_storage_rebuilds, so a run killed at any
-- point is finished by the next call (the same settings again do nothing else).
-- A procedure, not a security definer function: only a procedure can COMMIT between the steps, and
-- only the tables' owner (the role that applies migrations) may alter them; nobody else may call it.

create table private.embedding_storage_rebuilds (
  partition text primary key,         -- a partition of public.documentation_embeddings, schema-qualified
  index_name text not null,
  opclass_suffix text not null,       -- '_cosine_ops', '_l2_ops', ...: the distance, whatever the type
  with_clause text not null,          -- ' with (m=16, ...)' or ''
  queued_at timestamptz not null default now()
);
alter table private.embedding_storage_rebuilds enable row level security;
revoke all on private.embedding_storage_rebuilds from public, anon, authenticated, service_role;

-- The stored embeddings' type and dimensions, and how many partition indexes still wait for a rebuild.
-- Security definer: it counts a private table's rows; service only.
create function public.embedding_storage()
returns table (vector_type text, dimensions int, pending_index_rebuilds int)
language sql stable
security definer
set search_path = ''
as $$
  select t.typname::text, a.atttypmod,
         (select count(*)::int from private.embedding_storage_rebuilds)
  from pg_catalog.pg_attribute a join pg_catalog.pg_type t on t.oid = a.atttypid
  where a.attrelid = 'public.documentation_embeddings'::regclass and a.attname = 'embedding'
$$;
revoke all on function public.embedding_storage() from public, anon, authenticated;
grant execute on function public.embedding_storage() to service_role;

create procedure public.set_embedding_storage(p_dimensions int default null, p_type text default null)
language plpgsql
as $$
declare
  cur_type text;
  cur_dims int;
  new_type text;
  new_dims int;
  max_dims int;
  col_type text;
  r record;
  n bigint;
begin
  select t.typname, a.atttypmod into cur_type, cur_dims
  from pg_catalog.pg_attribute a join pg_catalog.pg_type t on t.oid = a.atttypid
  where a.attrelid = 'public.documentation_embeddings'::regclass and a.attname = 'embedding';
  new_type := coalesce(pg_catalog.lower(p_type), cur_type);
  new_dims := coalesce(p_dimensions, cur_dims);
  if new_type not in ('vector', 'halfvec') then
    raise exception 'embedding type must be vector or halfvec, not %', p_type using errcode = '22023';
  end if;
  -- pgvector's HNSW limits: 2,000 dimensions for vector, 4,000 for halfvec.
  max_dims := case new_type when 'vector' then 2000 else 4000 end;
  if new_dims < 1 or new_dims > max_dims then
    raise exception 'an HNSW index on % takes 1 to % dimensions, not %', new_type, max_dims, new_dims
      using errcode = '22023';
  end if;
  col_type := format('extensions.%s(%s)', new_type, new_dims);

  if (new_type, new_dims) is distinct from (cur_type, cur_dims) then
    -- One change at a time. A segment build or maintenance run in progress finishes first, and none
    -- starts until this commits (their advisory locks), so no build reads segment 0's
    -- operator class in between.
    perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('public.set_embedding_storage'));
    perform pg_catalog.pg_advisory_xact_lock(1306521729);
    perform pg_catalog.pg_advisory_xact_lock(1306521730);
    lock table public.documentation_embeddings, public.query_embedding_cache in access exclusive mode;

    -- Every partition's HNSW index, remembered (name, distance, options), then dropped.
    insert into private.embedding_storage_rebuilds (partition, index_name, opclass_suffix, with_clause)
    select format('%I.%I', pn.nspname, pc.relname), ic.relname, pg_catalog.substring(opc.opcname::text, '(_[a-z0-9]+_ops)$'),
           coalesce(' with (' || pg_catalog.array_to_string(ic.reloptions, ', ') || ')', '')
    from pg_catalog.pg_inherits h
    join pg_catalog.pg_class pc on pc.oid = h.inhrelid
    join pg_catalog.pg_namespace pn on pn.oid = pc.relnamespace
    join pg_catalog.pg_index i on i.indrelid = h.inhrelid
    join pg_catalog.pg_class ic on ic.oid = i.indexrelid
    join pg_catalog.pg_am am on am.oid = ic.relam
    join pg_catalog.pg_opclass opc on opc.oid = i.indclass[0]
    where h.inhparent = 'public.documentation_embeddings'::regclass and am.amname = 'hnsw'
    on conflict (partition) do nothing;
    for r in select i.indexrelid::regclass as idx
             from pg_catalog.pg_inherits h
             join pg_catalog.pg_index i on i.indrelid = h.inhrelid
             join pg_catalog.pg_class ic on ic.oid = i.indexrelid
             join pg_catalog.pg_am am on am.oid = ic.relam
             where h.inhparent = 'public.documentation_embeddings'::regclass and am.amname = 'hnsw' loop
      execute format('drop index %s', r.idx);
    end loop;

    if new_dims <> cur_dims then
      -- Vectors of the old size are of no use: no chunk, cached query or "already embedded" fingerprint
      -- may survive, or the worker would reuse a vector that no longer fits.
      truncate public.documentation_embeddings, public.query_embedding_cache;
      update public.embedding_sync_versions v set content_hash = null, metadata_hash = null
      where v.content_hash is not null or v.metadata_hash is not null;
    end if;
    execute format('alter table public.documentation_embeddings alter column embedding type %1$s using embedding::%1$s', col_type);
    execute format('alter table public.query_embedding_cache alter column embedding type %1$s using embedding::%1$s', col_type);

    -- Segment 0 is indexed again in this transaction.
    perform pg_catalog.set_config('maintenance_work_mem',
      (select s.bulk_segment_build_mem_mb from public.embedding_sync_settings s) || 'MB', true);
    for r in select b.* from private.embedding_storage_rebuilds b
             where pg_catalog.to_regclass(b.partition) = 'private.documentation_embeddings_s0'::regclass loop
      execute format('create index %I on %s using hnsw (embedding extensions.%s)%s',
                     r.index_name, r.partition, new_type || r.opclass_suffix, r.with_clause);
      delete from private.embedding_storage_rebuilds b where b.partition = r.partition;
    end loop;

    if new_dims <> cur_dims then
      select coalesce(sum(x.enqueued), 0) into n from public.resync_embedding_sources(null, true) x;
      raise notice 'embedding storage: % -> %; % rows queued to be embedded again at % dimensions',
        format('%s(%s)', cur_type, cur_dims), format('%s(%s)', new_type, new_dims), n, new_dims;
    else
      raise notice 'embedding storage: % -> %; vectors converted in place, nothing to embed again',
        format('%s(%s)', cur_type, cur_dims), format('%s(%s)', new_type, new_dims);
    end if;
    commit;
  end if;

  -- The other partitions, one transaction each (also what a killed run left to do).
  loop
    select b.* into r from private.embedding_storage_rebuilds b order by b.queued_at, b.partition
    limit 1 for update skip locked;
    exit when not found;
    -- A segment dropped meanwhile (left empty) has nothing to rebuild.
    if pg_catalog.to_regclass(r.partition) is not null then
      perform pg_catalog.set_config('maintenance_work_mem',
        (select s.bulk_segment_build_mem_mb from public.embedding_sync_settings s) || 'MB', true);
      execute format('create index if not exists %I on %s using hnsw (embedding extensions.%s)%s',
                     r.index_name, r.partition, new_type || r.opclass_suffix, r.with_clause);
    end if;
    delete from private.embedding_storage_rebuilds b where b.partition = r.partition;
    commit;
  end loop;
end $$;

revoke all on procedure public.set_embedding_storage(int, text) from public, anon, authenticated, service_role;
