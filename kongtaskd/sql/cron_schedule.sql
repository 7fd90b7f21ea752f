-- One cron tick: graphile-worker's exactly-once gate, then add_job() for what passed it.
--
-- The upsert is the whole protocol. _private_known_crontabs holds, per crontab identifier,
-- the last tick somebody scheduled; only a statement that moves last_execution forward gets
-- its identifier back and adds the job. Daemons racing on one tick (kongtaskd or
-- graphile-worker, which runs the same upsert) queue on the row lock, and the loser re-checks
-- the WHERE against the winner's row and gets nothing back. A missing row (an identifier
-- nobody registered yet) is created here with known_since = the tick, as graphile-worker does.
-- Gate and jobs commit together: one statement.
--
-- specs: JSON array of {identifier, task, payload, queue_name, max_attempts, priority,
-- job_key, job_key_mode}, one per identifier (identifiers are unique within a crontab).
-- ts: the tick, a UTC instant; it is also every job's run_at, so a late tick's jobs sort
-- where they belong.
with specs as (
  select *
  from rows from (
    json_to_recordset(%(specs)s::json) as (
      identifier text,
      task text,
      payload json,
      queue_name text,
      max_attempts integer,
      priority integer,
      job_key text,
      job_key_mode text
    )
  ) with ordinality as spec (
    identifier, task, payload, queue_name, max_attempts, priority, job_key, job_key_mode,
    position
  )
),
passed as (
  insert into {{schema}}._private_known_crontabs as known (identifier, known_since, last_execution)
  select specs.identifier, %(ts)s::timestamptz, %(ts)s::timestamptz
  from specs
  on conflict (identifier) do update
    set last_execution = excluded.last_execution
    where known.last_execution is null or known.last_execution < excluded.last_execution
  returning known.identifier
)
select specs.identifier, job.id
from specs
join passed on passed.identifier = specs.identifier
cross join lateral {{schema}}.add_job(
  identifier => specs.task,
  payload => specs.payload,
  queue_name => specs.queue_name,
  run_at => %(ts)s::timestamptz,
  max_attempts => specs.max_attempts,
  job_key => specs.job_key,
  priority => specs.priority,
  flags => null::text[],
  job_key_mode => specs.job_key_mode
) as job
order by specs.position
