-- State of the Légifrance collector, so that every invocation can stop at its time budget and the next
-- one resumes exactly where it stopped: the crawl plan with its per-category page cursor, the runs
-- (one active MASSIVE run at a time, held by a lease) and the documents that failed after retries.

create table public.legifrance_crawl_plan (
  category text primary key check (category ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
  fond text not null check (fond in ('CODE_DATE', 'CODE_ETAT', 'LODA_DATE', 'LODA_ETAT', 'JURI', 'CETAT', 'JUFI',
                                     'CONSTIT', 'JORF', 'CNIL', 'KALI', 'CIRC', 'ACCO')),
  query text not null default '',
  filters jsonb not null default '[]'::jsonb check (jsonb_typeof(filters) = 'array'),
  page_size int not null default 100 check (page_size between 1 and 100),
  enabled boolean not null default true,
  next_page int not null default 1 check (next_page >= 1),
  total_results int,
  done boolean not null default false,
  docs_collected bigint not null default 0,
  updated_at timestamptz not null default now(),
  -- Documents collected by maintenance runs (docs_collected counts the MASSIVE cursor's only).
  maintenance_docs_collected bigint not null default 0,
  last_maintenance_at timestamptz
);
comment on table public.legifrance_crawl_plan is
  'MASSIVE collection plan: category -> fond + query + filters. next_page is the persisted cursor; a page advances only once each of its documents is stored or recorded as failed.';

insert into public.legifrance_crawl_plan (category, fond, query) values
  ('codes', 'CODE_DATE', ''),
  ('jurisprudence', 'JURI', ''),
  ('jorf', 'JORF', ''),
  ('cnil', 'CNIL', ''),
  ('conventions', 'KALI', '');

create table public.legifrance_collector_runs (
  id uuid primary key default gen_random_uuid(),
  mode text not null check (mode in ('massive', 'maintenance')),
  status text not null default 'running' check (status in ('running', 'completed', 'stopped', 'failed')),
  lease_until timestamptz not null,
  invocations int not null default 1,
  docs_collected bigint not null default 0,
  docs_failed bigint not null default 0,
  -- Failing invocations in a row: the run survives a few (PISTE down, Storage unavailable), and the
  -- next invocation replays the unfinished page; a page that completes resets the count.
  consecutive_errors int not null default 0,
  last_error text,
  started_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  finished_at timestamptz
);
-- At most one active MASSIVE run: a second start while one holds its lease gets nothing to do.
create unique index legifrance_one_running_massive on public.legifrance_collector_runs (mode)
  where status = 'running' and mode = 'massive';

create table public.legifrance_failed_documents (
  category text not null,
  document_id text not null,
  fond text,
  error text not null,
  attempts int not null default 1,
  run_id uuid,
  first_failed_at timestamptz not null default now(),
  last_failed_at timestamptz not null default now(),
  resolved_at timestamptz,
  primary key (category, document_id)
);
comment on table public.legifrance_failed_documents is
  'Documents that still failed after retries (or whose id is not a valid Légifrance id). resolved_at is set when a later run stores them.';

alter table public.legifrance_crawl_plan enable row level security;
alter table public.legifrance_collector_runs enable row level security;
alter table public.legifrance_failed_documents enable row level security;
revoke all on public.legifrance_crawl_plan, public.legifrance_collector_runs, public.legifrance_failed_documents from anon, authenticated;
grant all on public.legifrance_crawl_plan, public.legifrance_collector_runs, public.legifrance_failed_documents to service_role;

-- Starts or continues a run. With p_run_id (a continuation, or a restart after a crash) the run is
-- taken over if it is still 'running', its lease renewed. Without it, a MASSIVE run is created unless
-- another one holds an unexpired lease; an expired one is closed as failed first. Returns the run id and
-- whether this call owns it (false: another run is active, do nothing).
create or replace function public.legifrance_start_run(p_mode text, p_run_id uuid default null, p_lease_seconds int default 300)
returns table (run_id uuid, acquired boolean)
language plpgsql
set search_path = public, extensions
as $$
declare v_id uuid;
begin
  if p_run_id is not null then
    update public.legifrance_collector_runs
       set lease_until = now() + make_interval(secs => p_lease_seconds), invocations = invocations + 1, updated_at = now()
     where id = p_run_id and status = 'running' and mode = p_mode
    returning id into v_id;
    return query select p_run_id, v_id is not null;
    return;
  end if;

  if p_mode = 'massive' then
    update public.legifrance_collector_runs
       set status = 'failed', last_error = 'lease expired (invocation died)', finished_at = now(), updated_at = now()
     where mode = 'massive' and status = 'running' and lease_until < now();
  end if;
  begin
    insert into public.legifrance_collector_runs (mode, lease_until)
    values (p_mode, now() + make_interval(secs => p_lease_seconds))
    returning id into v_id;
  exception when unique_violation then
    select id into v_id from public.legifrance_collector_runs where mode = 'massive' and status = 'running';
    return query select v_id, false;
    return;
  end;
  return query select v_id, true;
end $$;

-- Advances one category's cursor after a page is fully handled, and renews the run's lease. The
-- guard on next_page makes a replayed page (after a crash) advance the cursor once only.
create or replace function public.legifrance_advance_plan(
  p_run_id uuid, p_category text, p_page int, p_total int, p_collected int, p_failed int, p_lease_seconds int default 300
) returns boolean
language plpgsql
set search_path = public, extensions
as $$
declare v_ok boolean;
begin
  update public.legifrance_crawl_plan
     set next_page = p_page + 1,
         total_results = p_total,
         done = (p_page * page_size) >= p_total,
         docs_collected = docs_collected + p_collected,
         updated_at = now()
   where category = p_category and next_page = p_page
  returning true into v_ok;
  update public.legifrance_collector_runs
     set docs_collected = docs_collected + p_collected, docs_failed = docs_failed + p_failed, consecutive_errors = 0,
         lease_until = greatest(lease_until, now() + make_interval(secs => p_lease_seconds)), updated_at = now()
   where id = p_run_id;
  return coalesce(v_ok, false);
end $$;

-- Records a failed invocation of a run; returns how many failed in a row (the caller closes the run
-- as failed past its limit).
create or replace function public.legifrance_run_error(p_run_id uuid, p_error text)
returns int
language sql
set search_path = public, extensions
as $$
  update public.legifrance_collector_runs
     set consecutive_errors = consecutive_errors + 1, last_error = left(p_error, 2000), updated_at = now()
   where id = p_run_id and status = 'running'
  returning consecutive_errors;
$$;

create or replace function public.legifrance_finish_run(p_run_id uuid, p_status text, p_error text default null)
returns void
language sql
set search_path = public, extensions
as $$
  update public.legifrance_collector_runs
     set status = p_status, last_error = coalesce(p_error, last_error), finished_at = now(), updated_at = now()
   where id = p_run_id and status = 'running';
$$;

create or replace function public.legifrance_record_failure(p_run_id uuid, p_category text, p_document_id text, p_fond text, p_error text)
returns void
language sql
set search_path = public, extensions
as $$
  insert into public.legifrance_failed_documents (category, document_id, fond, error, run_id)
  values (p_category, left(p_document_id, 200), p_fond, left(p_error, 2000), p_run_id)
  on conflict (category, document_id) do update
     set error = excluded.error, attempts = legifrance_failed_documents.attempts + 1, run_id = excluded.run_id,
         last_failed_at = now(), resolved_at = null;
$$;

create or replace function public.legifrance_resolve_failures(p_category text, p_document_ids text[])
returns void
language sql
set search_path = public, extensions
as $$
  update public.legifrance_failed_documents set resolved_at = now()
   where category = p_category and document_id = any(p_document_ids) and resolved_at is null;
$$;

-- One maintenance page of one category handled: count it on the plan and on the run.
create function public.legifrance_record_maintenance_page(p_run_id uuid, p_category text, p_collected int, p_failed int)
returns void
language sql
set search_path = public, extensions
as $$
  update public.legifrance_crawl_plan
     set maintenance_docs_collected = maintenance_docs_collected + p_collected, last_maintenance_at = now()
   where category = p_category;
  update public.legifrance_collector_runs
     set docs_collected = docs_collected + p_collected, docs_failed = docs_failed + p_failed, updated_at = now()
   where id = p_run_id;
$$;
revoke all on function public.legifrance_record_maintenance_page(uuid, text, int, int) from public, anon, authenticated;
grant execute on function public.legifrance_record_maintenance_page(uuid, text, int, int) to service_role;

-- docs_collected is the total of both modes (MASSIVE and maintenance), with each part beside it.
create view public.legifrance_collector_status with (security_invoker = true) as
select p.category, p.fond, p.enabled, p.next_page, p.page_size, p.total_results, p.done,
       p.docs_collected + p.maintenance_docs_collected as docs_collected,
       (select count(*) from public.legifrance_failed_documents f where f.category = p.category and f.resolved_at is null) as failed_documents,
       p.updated_at,
       p.docs_collected as massive_docs_collected,
       p.maintenance_docs_collected,
       p.last_maintenance_at
  from public.legifrance_crawl_plan p;
revoke all on public.legifrance_collector_status from anon, authenticated;
grant select on public.legifrance_collector_status to service_role;

revoke all on function public.legifrance_start_run(text, uuid, int), public.legifrance_advance_plan(uuid, text, int, int, int, int, int),
  public.legifrance_finish_run(uuid, text, text), public.legifrance_record_failure(uuid, text, text, text, text),
  public.legifrance_resolve_failures(text, text[]), public.legifrance_run_error(uuid, text) from public, anon, authenticated;
grant execute on function public.legifrance_start_run(text, uuid, int), public.legifrance_advance_plan(uuid, text, int, int, int, int, int),
  public.legifrance_finish_run(uuid, text, text), public.legifrance_record_failure(uuid, text, text, text, text),
  public.legifrance_resolve_failures(text, text[]), public.legifrance_run_error(uuid, text) to service_role;

-- The collector's private bucket, so a fresh project can collect without a manual step. Private: the
-- raw files are read by the files worker with the service role, never by end users.
insert into storage.buckets (id, name, public)
values ('agentbasic-legifrance-raw', 'agentbasic-legifrance-raw', false)
on conflict (id) do nothing;
