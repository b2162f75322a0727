-- A provider budget shared by every invocation of the embedding worker.
--
-- OpenAI meters tokens and requests per minute per organisation. Each invocation retrying its own
-- 429s does not add up: k invocations fanned out over a backfill run into 429 storms instead of
-- using the quota steadily. So the budget lives here, one row per (provider, model), and every
-- request reserves its share before it is sent.
--
-- The bucket is a reservation (debt) bucket per dimension (tokens, requests). It refills at
-- limit/60 per second up to a small burst (burst_seconds of the rate), and a reservation is
-- subtracted at once, even below zero. A caller whose reservation left the bucket in debt waits
-- debt / rate seconds: it is then exactly when the tokens it asked for have been earned. Callers
-- therefore queue in reservation order and together never exceed the rate, whoever they are.
-- The burst stays small on purpose: the provider's own bucket holds a full minute, so keeping ours
-- near empty keeps the provider's near full, and a learned "remaining" can only lower ours.
--
-- Limits: configured ones come from the worker's environment with every reservation; learned
-- ones from the provider's x-ratelimit-* headers, and they win (the provider knows the account's
-- tier better than a setting written once). With no known limit the budget lets everything
-- through, except a pause set by a 429's Retry-After, which every worker honours.

create table public.embedding_provider_budget (
  provider text not null,
  model text not null,
  configured_tpm bigint check (configured_tpm > 0),
  configured_rpm bigint check (configured_rpm > 0),
  learned_tpm bigint check (learned_tpm > 0),
  learned_rpm bigint check (learned_rpm > 0),
  learned_at timestamptz,
  burst_seconds double precision not null default 1 check (burst_seconds > 0),
  -- What is left to spend at updated_at (negative: reserved ahead); null while no limit is known.
  token_level double precision,
  request_level double precision,
  -- A 429's Retry-After, for every worker (and the only brake while no limit is known).
  paused_until timestamptz,
  updated_at timestamptz not null default clock_timestamp(),
  primary key (provider, model)
);

alter table public.embedding_provider_budget enable row level security;
revoke all on table public.embedding_provider_budget from anon, authenticated;
grant select, insert, update, delete on table public.embedding_provider_budget to service_role;

-- The limits in force: learned ones win over configured ones.
create view public.embedding_provider_limits with (security_invoker = true) as
  select provider, model,
         coalesce(learned_tpm, configured_tpm) as tpm,
         coalesce(learned_rpm, configured_rpm) as rpm,
         case when learned_tpm is not null or learned_rpm is not null then 'learned'
              when configured_tpm is not null or configured_rpm is not null then 'configured' end as source,
         learned_at, paused_until
    from public.embedding_provider_budget;
revoke all on public.embedding_provider_limits from anon, authenticated;
grant select on public.embedding_provider_limits to service_role;

-- The bucket brought forward to p_at: refilled at the rates in force, capped at the burst; a
-- dimension that just got a limit starts full, one that has none is not tracked (null).
create function private.embedding_budget_refilled(b public.embedding_provider_budget, p_at timestamptz)
returns public.embedding_provider_budget
language plpgsql
immutable
set search_path = public, extensions
as $$
declare
  tps double precision := coalesce(b.learned_tpm, b.configured_tpm) / 60.0;
  rps double precision := coalesce(b.learned_rpm, b.configured_rpm) / 60.0;
  secs double precision := greatest(0, extract(epoch from p_at - b.updated_at));
begin
  b.token_level := least(tps * b.burst_seconds, coalesce(b.token_level + tps * secs, tps * b.burst_seconds));
  b.request_level := least(rps * b.burst_seconds, coalesce(b.request_level + rps * secs, rps * b.burst_seconds));
  b.updated_at := greatest(b.updated_at, p_at);
  return b;
end $$;

-- OpenAI's reset durations ("1s", "6m0s", "20ms", "1m30.5s", Go's time.Duration format) or plain
-- seconds, in seconds; null for anything else, so an odd header is ignored, never an error.
create function private.rate_limit_duration_seconds(p text)
returns double precision
language sql
immutable
set search_path = public, extensions
as $$
  select case
    when p ~ '^\s*\d+(\.\d+)?\s*$' then p::double precision
    when p ~ '^\s*(\d+(\.\d+)?(h|m|s|ms|us|µs|ns))+\s*$' then (
      select sum(m[1]::double precision * case m[2] when 'h' then 3600 when 'm' then 60 when 's' then 1
                                                    when 'ms' then 1e-3 when 'ns' then 1e-9 else 1e-6 end)
        from regexp_matches(p, '(\d+(?:\.\d+)?)(ms|us|µs|ns|h|m|s)', 'g') as m)
  end
$$;

-- acquire_embedding_budget: reserves p_tokens and p_requests and returns the seconds the caller
-- must wait before sending (0: send now). p_tpm/p_rpm are the caller's configured limits (null:
-- none), recorded as given. One short call under the budget row's lock.
create function public.acquire_embedding_budget(
  p_provider text, p_model text, p_tokens int, p_requests int default 1,
  p_tpm bigint default null, p_rpm bigint default null
) returns double precision
language plpgsql
security definer
set search_path = public, extensions
as $$
declare
  b embedding_provider_budget;
  at timestamptz := clock_timestamp();
  wait double precision := 0;
begin
  insert into embedding_provider_budget as t (provider, model, configured_tpm, configured_rpm)
  values (p_provider, p_model, p_tpm, p_rpm)
  on conflict (provider, model) do update
    set configured_tpm = excluded.configured_tpm, configured_rpm = excluded.configured_rpm
  returning t.* into b;
  b := private.embedding_budget_refilled(b, at);
  if b.token_level is not null then
    b.token_level := b.token_level - greatest(p_tokens, 0);
    wait := greatest(wait, -b.token_level / (coalesce(b.learned_tpm, b.configured_tpm) / 60.0));
  end if;
  if b.request_level is not null then
    b.request_level := b.request_level - greatest(p_requests, 0);
    wait := greatest(wait, -b.request_level / (coalesce(b.learned_rpm, b.configured_rpm) / 60.0));
  end if;
  wait := greatest(wait, coalesce(extract(epoch from b.paused_until - at), 0));
  update embedding_provider_budget t
     set token_level = b.token_level, request_level = b.request_level, updated_at = b.updated_at
   where t.provider = p_provider and t.model = p_model;
  return wait;
end $$;

-- refund_embedding_budget: gives back a reservation that will not be sent (the caller would have
-- waited past its deadline), so the callers behind it need not wait for it.
create function public.refund_embedding_budget(p_provider text, p_model text, p_tokens int, p_requests int default 1)
returns void
language plpgsql
security definer
set search_path = public, extensions
as $$
declare
  b embedding_provider_budget;
begin
  select * into b from embedding_provider_budget t
   where t.provider = p_provider and t.model = p_model for update;
  if not found then return; end if;
  b := private.embedding_budget_refilled(b, clock_timestamp());
  update embedding_provider_budget t set
    token_level = least(b.token_level + greatest(p_tokens, 0), coalesce(b.learned_tpm, b.configured_tpm) / 60.0 * b.burst_seconds),
    request_level = least(b.request_level + greatest(p_requests, 0), coalesce(b.learned_rpm, b.configured_rpm) / 60.0 * b.burst_seconds),
    updated_at = b.updated_at
   where t.provider = p_provider and t.model = p_model;
end $$;

-- note_embedding_rate_limits: learns from one response's headers (names lower-cased):
--   x-ratelimit-limit-{requests,tokens}      the limits per minute: learned as they are;
--   x-ratelimit-remaining-{requests,tokens}  what the provider has left: our bucket never holds
--                                            more (another client of the same key spends it too);
--   x-ratelimit-reset-{requests,tokens}      time until the provider's bucket is full again: with
--                                            remaining r it gives the limit when the limit header
--                                            is missing (r + L*t/60 = L, so L = r / (1 - t/60)).
-- p_retry_after_seconds (a 429's Retry-After) pauses every worker that long: the buckets go into
-- that much debt, so the callers resume one after the other at the rate, not all at once.
create function public.note_embedding_rate_limits(
  p_provider text, p_model text, p_headers jsonb, p_retry_after_seconds double precision default null
) returns void
language plpgsql
security definer
set search_path = public, extensions
as $$
declare
  h jsonb := case when jsonb_typeof(p_headers) = 'object' then p_headers else '{}' end;
  b embedding_provider_budget;
  at timestamptz := clock_timestamp();
  lim_tok bigint; lim_req bigint; rem_tok bigint; rem_req bigint;
  reset_tok double precision := private.rate_limit_duration_seconds(h->>'x-ratelimit-reset-tokens');
  reset_req double precision := private.rate_limit_duration_seconds(h->>'x-ratelimit-reset-requests');
begin
  if h->>'x-ratelimit-limit-tokens' ~ '^\s*\d{1,15}\s*$' then lim_tok := (h->>'x-ratelimit-limit-tokens')::bigint; end if;
  if h->>'x-ratelimit-limit-requests' ~ '^\s*\d{1,15}\s*$' then lim_req := (h->>'x-ratelimit-limit-requests')::bigint; end if;
  if h->>'x-ratelimit-remaining-tokens' ~ '^\s*\d{1,15}\s*$' then rem_tok := (h->>'x-ratelimit-remaining-tokens')::bigint; end if;
  if h->>'x-ratelimit-remaining-requests' ~ '^\s*\d{1,15}\s*$' then rem_req := (h->>'x-ratelimit-remaining-requests')::bigint; end if;
  if coalesce(lim_tok, 0) <= 0 and rem_tok > 0 and reset_tok < 60 then lim_tok := round(rem_tok / (1 - reset_tok / 60)); end if;
  if coalesce(lim_req, 0) <= 0 and rem_req > 0 and reset_req < 60 then lim_req := round(rem_req / (1 - reset_req / 60)); end if;

  insert into embedding_provider_budget as t (provider, model) values (p_provider, p_model)
  on conflict (provider, model) do update set provider = t.provider
  returning t.* into b;
  b := private.embedding_budget_refilled(b, at); -- at the limits that held until now
  if lim_tok > 0 then b.learned_tpm := lim_tok; b.learned_at := at; end if;
  if lim_req > 0 then b.learned_rpm := lim_req; b.learned_at := at; end if;
  b := private.embedding_budget_refilled(b, at); -- capped at the new burst; a new limit starts full
  -- (least() skips nulls: a dimension with no limit stays untracked.)
  if b.token_level is not null then
    b.token_level := least(b.token_level, rem_tok,
      -coalesce(b.learned_tpm, b.configured_tpm) / 60.0 * nullif(greatest(p_retry_after_seconds, 0), 0));
  end if;
  if b.request_level is not null then
    b.request_level := least(b.request_level, rem_req,
      -coalesce(b.learned_rpm, b.configured_rpm) / 60.0 * nullif(greatest(p_retry_after_seconds, 0), 0));
  end if;
  if p_retry_after_seconds > 0 then
    b.paused_until := greatest(b.paused_until, at + make_interval(secs => p_retry_after_seconds));
  end if;
  update embedding_provider_budget t
     set learned_tpm = b.learned_tpm, learned_rpm = b.learned_rpm, learned_at = b.learned_at,
         token_level = b.token_level, request_level = b.request_level,
         paused_until = b.paused_until, updated_at = b.updated_at
   where t.provider = p_provider and t.model = p_model;
end $$;

-- defer_embedding_jobs: the lease holder gives jobs back untried, to run after p_delay_seconds
-- (the provider budget is spent further ahead than this invocation can wait). Not a failure: the
-- attempt is not counted, so waiting for the budget never sends a job to the dead letter. A job
-- whose row has a newer pending job is superseded, as in fail_embedding_jobs.
create function public.defer_embedding_jobs(p_worker text, p_ids bigint[], p_delay_seconds double precision, p_reason text)
returns table (id bigint, status text, run_at timestamptz)
language plpgsql
security definer
set search_path = public, extensions
as $$
#variable_conflict use_column
begin
  return query
  with mine as (
    select q.id,
           exists (select from embedding_sync_queue p where p.source_table = q.source_table
                     and p.source_id = q.source_id and p.status = 'pending') as superseded
    from embedding_sync_queue q
    where q.id = any (p_ids) and q.status = 'processing' and q.locked_by = p_worker
    for update
  )
  update embedding_sync_queue q set
    status = case when mine.superseded then 'completed' else 'pending' end,
    run_at = case when mine.superseded then q.run_at
                  else now() + make_interval(secs => greatest(coalesce(p_delay_seconds, 0), 0)) end,
    last_error = case when mine.superseded then 'superseded by a newer change after: ' || p_reason else p_reason end,
    processed_at = case when mine.superseded then clock_timestamp() end,
    locked_by = null, locked_at = null, lease_until = null, updated_at = clock_timestamp()
  from mine where q.id = mine.id
  returning q.id, q.status, q.run_at;
end $$;

revoke all on function private.embedding_budget_refilled(public.embedding_provider_budget, timestamptz),
  private.rate_limit_duration_seconds(text) from public, anon, authenticated;
revoke all on function public.acquire_embedding_budget(text, text, int, int, bigint, bigint),
  public.refund_embedding_budget(text, text, int, int),
  public.note_embedding_rate_limits(text, text, jsonb, double precision),
  public.defer_embedding_jobs(text, bigint[], double precision, text) from public, anon, authenticated;
grant execute on function private.embedding_budget_refilled(public.embedding_provider_budget, timestamptz),
  private.rate_limit_duration_seconds(text) to service_role;
grant execute on function public.acquire_embedding_budget(text, text, int, int, bigint, bigint),
  public.refund_embedding_budget(text, text, int, int),
  public.note_embedding_rate_limits(text, text, jsonb, double precision),
  public.defer_embedding_jobs(text, bigint[], double precision, text) to service_role;
