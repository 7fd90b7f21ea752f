-- graphile-worker's stale-lock rule, for locks held by pools that have no kongtaskd
-- heartbeat (graphile-worker's own workers, or kongtaskd pools already swept): a job or
-- queue locked for more than $1 seconds (four hours) is unlocked; the job keeps its
-- counted attempt and runs again no earlier than now. Live kongtaskd pools are exempt:
-- their heartbeat proves the long job is still running.
with expired_jobs as (
  update {{schema}}._private_jobs as jobs
  set locked_by = null, locked_at = null, run_at = greatest(jobs.run_at, now())
  where jobs.locked_at < now() - $1 * interval '1 second'
    and not exists (
      select 1 from {{schema}}._kongtaskd_heartbeats as beats where beats.pool_id = jobs.locked_by
    )
  returning jobs.id
),
expired_queues as (
  update {{schema}}._private_job_queues as queues
  set locked_by = null, locked_at = null
  where queues.locked_at < now() - $1 * interval '1 second'
    and not exists (
      select 1 from {{schema}}._kongtaskd_heartbeats as beats where beats.pool_id = queues.locked_by
    )
  returning queues.id
)
select (select count(*) from expired_jobs), (select count(*) from expired_queues)
