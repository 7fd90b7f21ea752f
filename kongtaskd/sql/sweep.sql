-- Recover the jobs of kongtaskd daemons that died: every pool whose heartbeat is older
-- than $1 seconds (other than our own pool, $2) loses its heartbeat row, its jobs are
-- failed like any failure (last_error names the dead pool, graphile-worker's back-off,
-- the attempt stays counted: its handler may have run partly) and its queues unlocked.
-- Deleting the heartbeat row first makes concurrent sweepers safe: the second one waits
-- on the row lock, then finds the row gone and does nothing.
-- Pools without a heartbeat row (graphile-worker's own workers) are not touched here;
-- sweep_expired.sql applies graphile-worker's four-hour rule to them.
with dead as (
  delete from {{schema}}._kongtaskd_heartbeats as beats
  where beats.last_beat_at < now() - $1 * interval '1 second'
    and beats.pool_id <> $2
  returning beats.pool_id, beats.hostname, beats.pid, beats.last_beat_at
),
failed as (
  update {{schema}}._private_jobs as jobs
  set last_error = format(
        'kongtaskd pool %s (pid %s on %s) stopped sending heartbeats (last at %s) while '
        'it held this job; the job''s handler may have run partly',
        dead.pool_id, dead.pid, dead.hostname, dead.last_beat_at),
      run_at = greatest(now(), jobs.run_at) + exp(least(jobs.attempts, 10)) * interval '1 second',
      locked_by = null,
      locked_at = null
  from dead
  where jobs.locked_by = dead.pool_id
  returning jobs.id, dead.pool_id
),
unlocked_queues as (
  update {{schema}}._private_job_queues as queues
  set locked_by = null, locked_at = null
  from dead
  where queues.locked_by = dead.pool_id
)
select dead.pool_id, dead.hostname, dead.pid,
  array(select failed.id from failed where failed.pool_id = dead.pool_id order by 1)
from dead
