-- A database webhook for the files worker, like the embedding queue's: files_queue rows inserted by
-- the storage.objects trigger wake process-files-queue within a second instead of at the next
-- minute's cron dispatch, so the files worker keeps up with a running collection (a MASSIVE run
-- uploads ~17 documents a second). Coalesced the same way: a statement trigger claims the single
-- wake row only when the last wake is older than the window, with a conditional UPDATE that skips
-- the row when another transaction holds it, so uploads never wait on each other.
create table private.files_queue_wake (
  id boolean primary key default true check (id),
  last_wake_at timestamptz not null default '-infinity'
);
insert into private.files_queue_wake default values;
alter table private.files_queue_wake enable row level security;

create function private.wake_files_workers() returns trigger
language plpgsql
security definer
set search_path = public, extensions
as $$
declare
  window_ms int := (select s.wake_window_ms from public.embedding_sync_settings s);
  woke boolean;
begin
  update private.files_queue_wake w set last_wake_at = clock_timestamp()
  where w.id = (select x.id from private.files_queue_wake x
                where x.last_wake_at < clock_timestamp() - make_interval(secs => window_ms / 1000.0)
                for update skip locked)
  returning true into woke;
  if woke then
    -- The same fan-out as the minute's cron job (k from the ready backlog, at most 4 workers).
    perform private.dispatch_files_workers(4, 50);
  end if;
  return null;
end $$;
revoke all on function private.wake_files_workers() from public;

create trigger files_queue_webhook
  after insert on public.files_queue
  for each statement execute function private.wake_files_workers();

-- Was the files worker woken less than a window (plus a second) ago? A woken worker that finds the
-- queue empty keeps polling while this holds: uploads that commit inside the window of the wake that
-- covered them make no call of their own (the webhook for embeddings does the same).
create function public.files_queue_recently_woken() returns boolean
language sql stable
security definer
set search_path = ''
as $$
  select clock_timestamp() < w.last_wake_at + make_interval(secs => (s.wake_window_ms + 1000) / 1000.0)
  from private.files_queue_wake w, public.embedding_sync_settings s
$$;
revoke all on function public.files_queue_recently_woken() from public, anon, authenticated;
grant execute on function public.files_queue_recently_woken() to service_role;
