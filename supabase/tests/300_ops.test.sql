-- Operations SQL: the environment label, the shared thresholds, metrics and alerts. What anon and
-- authenticated may touch (nothing), RLS, the schedules, and the alert rules' open/resolve cycle.
begin;
select plan(22);

-- Nothing for anon/authenticated; RLS on every new table.
select ok((select bool_and(c.relrowsecurity) from pg_class c
            where c.oid in ('public.ops_settings'::regclass, 'public.ops_metrics'::regclass, 'public.ops_alerts'::regclass)),
          'RLS is enabled on ops_settings, ops_metrics, ops_alerts');
select ok(not has_table_privilege('anon', 'public.ops_settings', 'select,update'), 'anon cannot read or change ops_settings');
select ok(not has_table_privilege('authenticated', 'public.ops_alerts', 'select'), 'authenticated cannot read ops_alerts');
select ok(not has_table_privilege('authenticated', 'public.ops_metrics', 'select'), 'authenticated cannot read ops_metrics');
select ok(not has_sequence_privilege('anon', 'public.ops_alerts_id_seq', 'usage'), 'anon cannot use the ops_alerts sequence');
select ok(not has_function_privilege('anon', 'public.set_environment_label(text)', 'execute'), 'anon cannot set the label');
select ok(not has_function_privilege('authenticated', 'public.set_environment_label(text)', 'execute'), 'authenticated cannot set the label');
select ok(not has_function_privilege('authenticated', 'public.retry_embedding_dead_letter(bigint[])', 'execute'), 'authenticated cannot retry dead letters');
select ok(not has_function_privilege('anon', 'public.ops_current_alerts()', 'execute'), 'anon cannot list alert conditions');
select ok(has_function_privilege('service_role', 'public.environment_label()', 'execute'), 'service_role reads the label');
select ok(has_function_privilege('service_role', 'public.set_environment_label(text)', 'execute'), 'service_role sets the label');

-- The label.
select is(public.environment_label(), null, 'no label on a fresh project');
select is(public.set_environment_label('  staging '), 'staging', 'set_environment_label trims and returns the label');
select throws_ok($$select public.set_environment_label('<script>')$$, '23514', null, 'a label with markup is refused');
select is(public.set_environment_label(''), null, 'an empty label clears it');

-- Schedules.
select is((select schedule from cron.job where jobname = 'ops-metrics-sample'), '* * * * *', 'metrics are sampled every minute');
select is((select schedule from cron.job where jobname = 'ops-alerts'), '12 * * * *', 'alerts are checked hourly, after the coherence check');
select isnt((select schedule from cron.job where jobname = 'ops-metrics-cleanup'), null, 'metrics have a daily cleanup');

-- Alerts: one open alert per condition, resolved when it clears.
insert into public.embedding_sync_queue (source_table, source_id, action, status) values ('legal_documents', 'X1', 'INSERT', 'failed');
select ok((select count(*) from private.ops_check_alerts() where kind = 'dead_letters') = 1, 'a dead letter opens an alert');
select ok((select count(*) from private.ops_check_alerts() where kind = 'dead_letters') = 0, 'a second check opens nothing new');
delete from public.embedding_sync_queue where source_id = 'X1';
select lives_ok($$select private.ops_check_alerts()$$, 'the check runs once the condition cleared');
select isnt((select resolved_at from public.ops_alerts where kind = 'dead_letters'), null, 'the alert resolved itself');

select * from finish();
rollback;
