-- The collector's private bucket, so a fresh project can collect without a manual step. Private: the
-- raw files are read by the files worker with the service role, never by end users.
insert into storage.buckets (id, name, public)
values ('agentbasic-legifrance-raw', 'agentbasic-legifrance-raw', false)
on conflict (id) do nothing;
