-- A daemon's caps for every task it runs, written at start and on reload (kongtaskd
-- migration 6). "No cap" is written too (both limits null), so removing a cap from the
-- config lifts it. The last writer wins; the rows returned are the tasks whose caps this
-- write changed from another daemon's (or an older config's) values, for the log.
--
-- Parameters (arrays of one entry per task, same order)
--   $1 text[]     task identifiers (registered in _private_tasks beforehand)
--   $2 integer[]  concurrency, null = no cap
--   $3 integer[]  rate: starts per window, null = no rate limit
--   $4 integer[]  rate: the window in seconds, null with $3
--   $5 text       this daemon's pool id
--
-- A bucket whose rate did not change keeps its tokens; a new or changed one starts full.
with wanted as (
  select tasks.id as task_id, w.identifier, w.concurrency, w.rate_limit, w.rate_seconds
  from unnest($1::text[], $2::integer[], $3::integer[], $4::integer[])
    as w(identifier, concurrency, rate_limit, rate_seconds)
  join {{schema}}._private_tasks as tasks on tasks.identifier = w.identifier
),
before as (
  select caps.task_id, caps.concurrency, caps.rate_limit, caps.rate_seconds, caps.written_by
  from {{schema}}._kongtaskd_task_caps as caps
  where caps.task_id in (select wanted.task_id from wanted)
),
written as (
  insert into {{schema}}._kongtaskd_task_caps as caps
    (task_id, concurrency, rate_limit, rate_seconds, tokens, tokens_at, written_by)
  select wanted.task_id, wanted.concurrency, wanted.rate_limit, wanted.rate_seconds,
    coalesce(wanted.rate_limit, 0), now(), $5
  from wanted
  on conflict (task_id) do update
  set concurrency = excluded.concurrency,
    rate_limit = excluded.rate_limit,
    rate_seconds = excluded.rate_seconds,
    tokens = case when (caps.rate_limit, caps.rate_seconds)
        is not distinct from (excluded.rate_limit, excluded.rate_seconds)
      then caps.tokens else excluded.tokens end,
    tokens_at = case when (caps.rate_limit, caps.rate_seconds)
        is not distinct from (excluded.rate_limit, excluded.rate_seconds)
      then caps.tokens_at else excluded.tokens_at end,
    written_by = excluded.written_by,
    written_at = now()
)
select wanted.identifier, before.concurrency, before.rate_limit, before.rate_seconds,
  before.written_by
from wanted
join before on before.task_id = wanted.task_id
where (before.concurrency, before.rate_limit, before.rate_seconds)
  is distinct from (wanted.concurrency, wanted.rate_limit, wanted.rate_seconds)
