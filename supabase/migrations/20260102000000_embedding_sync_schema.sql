-- Relational -> vector sync, part 1: the tables.
--
-- embedding_sources     which tables are embedded, and how (columns or content function, publish
--                       filter, chunking). Filled by register_embedding_source(), or with defaults
--                       the first time the trigger fires on a table nobody registered.
-- embedding_sync_queue  one job per change (the runbook's table and columns, plus lease/backoff).
-- embedding_sync_versions  the newest version applied per source row, deletes included: the guard
--                       that keeps a slower, older job from overwriting a newer one.
-- documentation_embeddings  one row per chunk (the runbook's table), HNSW cosine + French full text.
--
-- The vector dimension is set in ONE place: `dims` in the block below. The edge function reads it
-- back with public.embedding_dimensions() and refuses to start when EMBEDDING_DIMENSIONS differs.

create table public.embedding_sources (
  source_table text primary key,                 -- rendered like regclass::text with public first
  relid oid not null,
  pk_column text not null,
  content_columns text[],
  content_function regprocedure,
  publish_filter text,
  chunk_tokens int not null default 512 check (chunk_tokens between 16 and 8191),
  chunk_overlap_tokens int not null default 64 check (chunk_overlap_tokens >= 0),
  -- One SQL select list over `r` (the row): its id, then its content or null when unpublished.
  -- Cached at registration so the trigger runs one EXECUTE per row instead of reading the catalog.
  row_sql text not null,
  -- Jobs with a version below this were queued before a TRUNCATE and must not write anything.
  truncated_below_version bigint not null default 0,
  registered boolean not null default true,      -- false: defaults taken by a bare trigger
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  check (chunk_overlap_tokens < chunk_tokens)
);

-- Versions are global and monotonic; per source row they follow commit order because the source
-- row's lock is held while its AFTER trigger takes the next value.
create sequence public.embedding_sync_version_seq;

create table public.embedding_sync_queue (
  id bigint generated always as identity primary key,
  source_table text not null,
  source_id text not null,
  action text not null check (action in ('INSERT', 'UPDATE', 'DELETE')),
  content text,
  content_hash text,
  status text not null default 'pending' check (status in ('pending', 'processing', 'completed', 'failed')),
  retry_count int not null default 0,
  max_attempts int not null default 3,
  version bigint not null default nextval('public.embedding_sync_version_seq'),
  last_error text,
  run_at timestamptz not null default now(),
  locked_by text,
  locked_at timestamptz,
  lease_until timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  processed_at timestamptz
);

-- At most one pending job per source row: a newer change replaces its content (newest wins).
create unique index embedding_sync_queue_one_pending
  on public.embedding_sync_queue (source_table, source_id) where status = 'pending';
create index embedding_sync_queue_ready on public.embedding_sync_queue (run_at, id) where status = 'pending';
create index embedding_sync_queue_leases on public.embedding_sync_queue (lease_until) where status = 'processing';
create index embedding_sync_queue_done on public.embedding_sync_queue (processed_at) where status = 'completed';
create index embedding_sync_queue_failed on public.embedding_sync_queue (source_table) where status = 'failed';

create table public.embedding_sync_versions (
  source_table text not null,
  source_id text not null,
  version bigint not null,
  deleted boolean not null default false,
  updated_at timestamptz not null default now(),
  primary key (source_table, source_id)
);

-- Tunables read by the scheduling functions and the worker SQL (a single row).
create table public.embedding_sync_settings (
  id boolean primary key default true check (id),
  batch_size int not null default 100 check (batch_size between 1 and 500),
  max_workers int not null default 4 check (max_workers between 1 and 32),
  lease_seconds int not null default 180 check (lease_seconds >= 5),
  wake_window_ms int not null default 1000 check (wake_window_ms >= 0),
  backoff_base_seconds double precision not null default 10,
  backoff_max_seconds double precision not null default 3600
);
insert into public.embedding_sync_settings default values;

-- The last time the queue's insert trigger woke the workers (coalescing; see the schedule migration).
create table private.embedding_sync_wake (
  id boolean primary key default true check (id),
  last_wake_at timestamptz not null default '-infinity'
);
insert into private.embedding_sync_wake default values;

do $$
declare
  dims constant int := 1536;  -- THE embedding dimension (text-embedding-3-small's default)
begin
  execute format($t$
    create table public.documentation_embeddings (
      id bigint generated always as identity primary key,
      source_table text not null,
      source_id text not null,
      chunk_index int not null,
      content text not null,
      content_hash text not null,
      embedding extensions.vector(%s) not null,
      model text not null,
      token_count int not null,
      metadata jsonb not null default '{}'::jsonb,
      source_version bigint not null,
      fts tsvector generated always as (to_tsvector('french'::regconfig, content)) stored,
      created_at timestamptz not null default now(),
      updated_at timestamptz not null default now(),
      unique (source_table, source_id, chunk_index)
    )$t$, dims);
end $$;

create index documentation_embeddings_embedding_hnsw
  on public.documentation_embeddings using hnsw (embedding extensions.vector_cosine_ops);
create index documentation_embeddings_fts on public.documentation_embeddings using gin (fts);
-- "Is this text already embedded with this model?": the lookup that saves provider calls.
create index documentation_embeddings_hash on public.documentation_embeddings (content_hash, model);

create function public.embedding_dimensions() returns int
language sql stable
set search_path = ''
as $$
  select a.atttypmod from pg_catalog.pg_attribute a
  where a.attrelid = 'public.documentation_embeddings'::regclass and a.attname = 'embedding'
$$;

-- RLS everywhere; no policies: only the service role (bypassrls) and definer functions get in.
alter table public.embedding_sources enable row level security;
alter table public.embedding_sync_queue enable row level security;
alter table public.embedding_sync_versions enable row level security;
alter table public.embedding_sync_settings enable row level security;
alter table public.documentation_embeddings enable row level security;
alter table private.embedding_sync_wake enable row level security;

revoke all on public.embedding_sources, public.embedding_sync_queue, public.embedding_sync_versions,
  public.embedding_sync_settings, public.documentation_embeddings from anon, authenticated;
revoke all on sequence public.embedding_sync_version_seq, public.embedding_sync_queue_id_seq,
  public.documentation_embeddings_id_seq from anon, authenticated;
grant all on public.embedding_sources, public.embedding_sync_queue, public.embedding_sync_versions,
  public.embedding_sync_settings, public.documentation_embeddings to service_role;
grant usage on sequence public.embedding_sync_version_seq to service_role;
grant execute on function public.embedding_dimensions() to anon, authenticated, service_role;
