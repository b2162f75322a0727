-- kb_sync_log: one row per `npm run kb -- push` (or restore) applied to this project, written in the
-- push's own transaction, so a rolled-back push leaves no record and a recorded push really happened.
-- The source is named by its environment label (or the operator's environment name), never its URL.
create table public.kb_sync_log (
  id bigint generated always as identity primary key,
  pushed_at timestamptz not null default now(),
  from_env text not null,
  mode text not null check (mode in ('replace', 'upsert', 'overwrite', 'restore')),
  tables text[] not null,
  rows_inserted bigint not null default 0 check (rows_inserted >= 0),
  rows_updated bigint not null default 0 check (rows_updated >= 0),
  rows_deleted bigint not null default 0 check (rows_deleted >= 0),
  -- {"<table>": {"inserted": n, "updated": n, "deleted": n}}
  per_table jsonb not null default '{}'::jsonb,
  chunks_copied boolean not null default false,
  -- The backup's file name (under the operator's .backups/), for `kb restore`; null for upsert.
  backup_file text
);
create index kb_sync_log_pushed_at on public.kb_sync_log (pushed_at desc);

-- Operators only: RLS on with no policy, nothing for anon/authenticated (hosted Supabase's default
-- privileges would grant them ALL otherwise).
alter table public.kb_sync_log enable row level security;
revoke all on table public.kb_sync_log from anon, authenticated;
revoke all on sequence public.kb_sync_log_id_seq from anon, authenticated;
grant select, insert on table public.kb_sync_log to service_role;
