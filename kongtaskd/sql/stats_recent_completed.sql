-- kongtaskd/stats.py recent_completed: history records newest first, keyset-paginated on
-- (finished_at, id) below %(before_at)s/%(before_id)s (null: from the newest), of one task
-- or all; through _kongtaskd_completed_jobs_finished, LIMITed.
select history.id, history.task_identifier, history.queue_name, history.key,
  history.attempts, history.created_at, history.started_at, history.finished_at,
  history.run_seconds, history.pool_id, beats.hostname
from {{schema}}._kongtaskd_completed_jobs as history
left join {{schema}}._kongtaskd_heartbeats as beats on beats.pool_id = history.pool_id
where (%(before_at)s::timestamptz is null
    or (history.finished_at, history.id) < (%(before_at)s::timestamptz, %(before_id)s::bigint))
  and (%(task)s::text is null or history.task_identifier = %(task)s::text)
order by history.finished_at desc, history.id desc
limit %(limit)s
