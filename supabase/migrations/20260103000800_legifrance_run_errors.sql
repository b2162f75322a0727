-- A MASSIVE invocation that fails (PISTE down beyond the client's retries, Storage unavailable) keeps
-- its run: the error is recorded, the next invocation replays the unfinished page, and only after
-- several consecutive failing invocations is the run closed as failed. A page that completes resets
-- the count.
alter table public.legifrance_collector_runs add column consecutive_errors int not null default 0;

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
revoke all on function public.legifrance_run_error(uuid, text) from public;
grant execute on function public.legifrance_run_error(uuid, text) to service_role;

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
