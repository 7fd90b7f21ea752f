-- `kongtaskd jobs cancel` and kongtaskd.cancel_job() (kongtaskd/cancel.py): ONE statement,
-- safe beside running workers (the rows are locked here, as every worker locks them).
--
-- Parameters: %(ids)s bigint[] the jobs, %(who)s text who cancels (user@host or the API
-- caller's name), %(stale_after)s seconds after which a pool's heartbeat counts as dead.
--
-- Every job found that is not already permanently failed gets attempts = max_attempts
-- (never retried) and last_error = 'cancelled by <who> at <time>' (the database's clock);
-- run_at stays. A job somebody holds also gets a _kongtaskd_cancels row (kongtaskd
-- migration 7: its trigger keeps the job failed with this message whoever lets go of it)
-- and its holder a NOTIFY on 'kongtaskd:cancel' (payload: the holder's id), so a live
-- kongtaskd daemon interrupts the handler. One row per job found: what it was, what changed.
with message as (
  select 'cancelled by ' || %(who)s::text || ' at '
    || to_char(now() at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS') || ' UTC' as text
),
target as materialized (
  select jobs.id, jobs.locked_by, jobs.locked_at, jobs.attempts, jobs.max_attempts,
    exists (
      select 1 from {{schema}}._kongtaskd_heartbeats as beats
      where beats.pool_id = jobs.locked_by
        and beats.last_beat_at >= now() - %(stale_after)s::float8 * interval '1 second'
    ) as live
  from {{schema}}._private_jobs as jobs
  where jobs.id = any(%(ids)s::bigint[])
  for update of jobs
),
changed as (
  update {{schema}}._private_jobs as jobs
  set attempts = greatest(jobs.attempts, jobs.max_attempts),
      last_error = (select message.text from message),
      updated_at = now()
  from target
  where jobs.id = target.id
    and (target.locked_by is not null or target.attempts < target.max_attempts)
  returning jobs.id
),
recorded as (
  insert into {{schema}}._kongtaskd_cancels as cancels (job_id, message, locked_by)
  select target.id, (select message.text from message), target.locked_by
  from target
  where target.locked_by is not null
  on conflict (job_id) do update
    set message = excluded.message, locked_by = excluded.locked_by, requested_at = now()
  returning cancels.job_id
),
notified as (
  select pg_notify('kongtaskd:cancel', holders.locked_by)
  from (select distinct target.locked_by from target where target.locked_by is not null)
    as holders
),
forgotten as (
  -- Records of jobs deleted before their holder let go of them (the handler succeeded
  -- first): nothing is left to cancel.
  delete from {{schema}}._kongtaskd_cancels as cancels
  where not exists (
    select 1 from {{schema}}._private_jobs as jobs where jobs.id = cancels.job_id
  )
)
select target.id, target.locked_by, target.locked_at, target.live,
  target.id in (select changed.id from changed) as changed,
  (select message.text from message) as message,
  (select count(*) from recorded) as recorded,
  (select count(*) from notified) as notified
from target
order by target.id
