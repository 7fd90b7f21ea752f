-- kongtaskd.contrib.django: the completed-job history record of one job (keep_completed),
-- for get_result() of a job that has left the jobs table. Run only after to_regclass found
-- the table (daemons without keep_completed, and older schemas, have none). The newest
-- record wins: the table has no primary key (settle must never fail on an insert).
select history.id, history.task_identifier, history.queue_name, history.attempts,
  history.created_at, history.started_at, history.finished_at, history.pool_id
from {{schema}}._kongtaskd_completed_jobs as history
where history.id = %(id)s::bigint
order by history.finished_at desc
limit 1
