-- legifrance_collector_status counted only the MASSIVE cursor's documents, so after maintenance runs it
-- showed docs_collected 0 for every category (issue 13, point 7). Maintenance now counts per category
-- too, and the view's docs_collected is the total of both modes, with each part beside it.

alter table public.legifrance_crawl_plan
  add column maintenance_docs_collected bigint not null default 0,
  add column last_maintenance_at timestamptz;

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

create or replace view public.legifrance_collector_status with (security_invoker = true) as
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
