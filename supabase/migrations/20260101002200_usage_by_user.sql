-- Usage per user, for the service (operators, the dashboard's top users): per day, week and month,
-- each user's questions, how many got an answer saved, how many got a thumbs down, how many the
-- knowledge base could not answer (the rule of search_unanswered_questions: nothing returned, or the
-- closest chunk under search_settings' threshold), and their first and last activity in the period,
-- with the profile's email and names. "answered" and "unanswered" are not complements: the first is
-- about the assistant's reply, the second about what search found.
--
-- security_invoker: it reads conversations, feedback and users with the caller's rights; only the
-- service role is granted it (a user's own numbers are in user_questions_complete).
create view public.usage_by_user with (security_invoker = true) as
select c.user_id,
       u.email,
       u.first_name,
       u.last_name,
       p.period,
       date_trunc(p.period, c.created_at) as period_start,
       count(*)::int as questions,
       count(*) filter (where c.answered_at is not null)::int as answered,
       count(*) filter (where f.rating < 0)::int as negative_feedback,
       count(*) filter (where c.result_count = 0 or c.best_similarity is null and c.mode <> 'text'
                          or c.best_similarity < s.unanswered_similarity_threshold)::int as unanswered,
       min(c.created_at) as first_activity,
       max(greatest(c.created_at, c.answered_at, f.updated_at)) as last_activity
from public.conversations c
cross join (values ('day'), ('week'), ('month')) as p(period)
cross join public.search_settings s
left join public.feedback f on f.conversation_entry_id = c.id
left join public.users u on u.id = c.user_id
where c.user_id is not null
group by c.user_id, u.email, u.first_name, u.last_name, p.period, date_trunc(p.period, c.created_at);

revoke all on table public.usage_by_user from anon, authenticated;
grant select on table public.usage_by_user to service_role;
