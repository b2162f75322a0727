-- The shared provider budget (issue 9): the reservation arithmetic, learning from rate-limit
-- headers, Retry-After pauses, refunds, and deferring jobs without counting an attempt.
-- Waits are checked within a small tolerance: clock_timestamp() moves on between calls. Each wait is
-- taken in FROM: BETWEEN would evaluate the (reserving) call twice.
begin;
select plan(28);

-- OpenAI's reset durations (Go's format) and plain seconds; anything else is ignored.
select is(private.rate_limit_duration_seconds('1s'), 1::float8, 'duration 1s');
select is(private.rate_limit_duration_seconds('6m0s'), 360::float8, 'duration 6m0s');
select ok(abs(private.rate_limit_duration_seconds('20ms') - 0.02) < 1e-9, 'duration 20ms');
select is(private.rate_limit_duration_seconds('1m30.5s'), 90.5::float8, 'duration 1m30.5s');
select is(private.rate_limit_duration_seconds('2'), 2::float8, 'plain seconds');
select is(private.rate_limit_duration_seconds('soon'), null, 'not a duration: null');

-- No known limit: no wait, and nothing tracked.
select is(acquire_embedding_budget('p', 'free', 1000), 0::float8, 'no known limit: send now');
select is((select row(token_level, request_level)::text from embedding_provider_budget where model = 'free'), '(,)',
  'no known limit: no bucket kept');

-- 6,000 tokens/min = 100/s with a 1 s burst: the first 100 go at once, the next 200 wait 2 s.
select is(acquire_embedding_budget('p', 'tok', 100, 1, 6000, null), 0::float8, 'within the burst: send now');
select ok(w between 1.95 and 2.0, 'in debt: wait debt / rate') from acquire_embedding_budget('p', 'tok', 200, 1, 6000, null) w;
select ok(w between 2.95 and 3.0,
  'the next caller queues behind the previous reservation') from acquire_embedding_budget('p', 'tok', 100, 1, 6000, null) w;
select lives_ok($$ select refund_embedding_budget('p', 'tok', 100) $$, 'refund');
select ok(w between 2.95 and 3.0,
  'a refunded reservation no longer delays the callers after it') from acquire_embedding_budget('p', 'tok', 100, 1, 6000, null) w;

-- 60 requests/min = 1/s: requests queue one second apart; tokens are not limited.
select is(acquire_embedding_budget('p', 'req', 5000, 1, null, 60), 0::float8, 'first request: send now');
select ok(w between 0.95 and 1.0, 'second request: 1 s later') from acquire_embedding_budget('p', 'req', 5000, 1, null, 60) w;
select ok(w between 1.95 and 2.0, 'third request: 2 s later') from acquire_embedding_budget('p', 'req', 5000, 1, null, 60) w;

-- Learned limits (from the headers) win over configured ones, and say when they were learned.
select note_embedding_rate_limits('p', 'learn', '{"x-ratelimit-limit-tokens": "120000", "x-ratelimit-limit-requests": "600",
  "x-ratelimit-remaining-tokens": "119000", "x-ratelimit-remaining-requests": "599",
  "x-ratelimit-reset-tokens": "500ms", "x-ratelimit-reset-requests": "100ms"}'::jsonb);
select is((select row(tpm, rpm, source)::text from embedding_provider_limits where model = 'learn'), '(120000,600,learned)',
  'limits learned from x-ratelimit-limit-*');
select isnt((select learned_at from embedding_provider_budget where model = 'learn'), null, 'learned_at set');
select is(acquire_embedding_budget('p', 'learn', 2000, 1, 6000, 60), 0::float8,
  'learned 120,000/min (a 2,000-token burst) wins over the configured 6,000/min');
select is((select row(configured_tpm, configured_rpm, tpm)::text from embedding_provider_budget join embedding_provider_limits using (provider, model)
  where model = 'learn'), '(6000,60,120000)', 'the configured limits are kept, the learned ones used');

-- Without the limit headers, remaining and reset give the limit: L = r / (1 - t/60).
select note_embedding_rate_limits('p', 'infer', '{"x-ratelimit-remaining-tokens": "4999", "x-ratelimit-reset-tokens": "12ms"}'::jsonb);
select is((select learned_tpm from embedding_provider_budget where model = 'infer'), 5000::bigint,
  'limit inferred from remaining and reset');

-- What the provider has left caps our bucket (another client of the key spends it too).
select note_embedding_rate_limits('p', 'rem', '{"x-ratelimit-limit-requests": "600", "x-ratelimit-remaining-requests": "0"}'::jsonb);
select ok(w between 0.09 and 0.1, 'remaining 0: wait for one request to refill (0.1 s at 600/min)') from acquire_embedding_budget('p', 'rem', 1) w;

-- A 429's Retry-After pauses every caller: with a known rate the bucket goes that far into debt.
select note_embedding_rate_limits('p', 'tok', '{}'::jsonb, 0); -- no pause: nothing changes
select note_embedding_rate_limits('p', 'storm', '{"x-ratelimit-limit-tokens": "6000"}'::jsonb, 2);
select ok(w between 2.95 and 3.0, 'Retry-After 2 s, then the reservation itself: 3 s') from acquire_embedding_budget('p', 'storm', 100) w;
select note_embedding_rate_limits('p', 'free', null, 2);
select ok(w between 1.9 and 2.0, 'no known limit: the pause alone holds callers') from acquire_embedding_budget('p', 'free', 100) w;

-- Odd header values are ignored, never an error.
select lives_ok($$ select note_embedding_rate_limits('p', 'odd', '{"x-ratelimit-limit-tokens": "-1", "x-ratelimit-reset-tokens": "soon",
  "x-ratelimit-remaining-tokens": "many"}'::jsonb) $$, 'odd headers do not fail');
select is((select row(learned_tpm, learned_rpm)::text from embedding_provider_budget where model = 'odd'), '(,)', 'and teach nothing');

-- Deferred jobs go back to pending after the delay, their attempt not counted.
insert into embedding_sync_queue (source_table, source_id, action, content, status, locked_by, locked_at, lease_until)
values ('budget_t', '1', 'INSERT', 'x', 'processing', 'w1', now(), now() + interval '1 minute');
select is((select row(d.status, round(extract(epoch from d.run_at - now())))::text
             from defer_embedding_jobs('w1', array(select id from embedding_sync_queue where source_table = 'budget_t'), 30, 'budget') d),
  '(pending,30)', 'deferred: pending again in 30 s');
select is((select row(retry_count, locked_by, last_error)::text from embedding_sync_queue where source_table = 'budget_t'),
  '(0,,budget)', 'no attempt counted, lease released, reason kept');

select * from finish();
rollback;
