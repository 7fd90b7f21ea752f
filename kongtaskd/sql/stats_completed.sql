-- kongtaskd/stats.py completed: the history records of one job id, newest first (a job id
-- completes once; more than one record only if ids were reused, e.g. a restored backup).
-- hostname: from the pool's heartbeat row, so null once that pool has exited.
select history.id, history.task_identifier, history.queue_name, history.key,
  history.attempts, history.created_at, history.started_at, history.finished_at,
  history.run_seconds, history.pool_id, beats.hostname
from {{schema}}._kongtaskd_completed_jobs as history
left join {{schema}}._kongtaskd_heartbeats as beats on beats.pool_id = history.pool_id
where history.id = %(job_id)s
order by history.finished_at desc
limit %(limit)s
