-- When the operations schema (and with it every schedule) was installed. Health judges "not yet due"
-- against it: no coherence check in the first two hours is not a warning, and a job that never ran
-- fails only once it was due twice since. An upgrade starts the clock again, which errs on the calm
-- side for at most two intervals. Tests and operators may set it.
alter table public.ops_settings add column installed_at timestamptz not null default now();
