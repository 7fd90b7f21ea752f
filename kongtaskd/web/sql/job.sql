-- /jobs/ID: the whole job with its task, queue and state, and the heartbeat of the pool that
-- holds it when that is a kongtaskd pool (left join: a graphile-worker pool writes none).
select jobs.id, tasks.identifier as task_identifier, queues.queue_name, jobs.payload::text,
  jobs.priority, jobs.run_at, jobs.attempts, jobs.max_attempts, jobs.last_error,
  jobs.created_at, jobs.updated_at, jobs.key, jobs.locked_at, jobs.locked_by, jobs.revision,
  jobs.flags, queues.locked_by as queue_locked_by, queues.locked_at as queue_locked_at,
  case
    when jobs.locked_at is not null then 'running'
    when jobs.attempts >= jobs.max_attempts then 'failed'
    when jobs.attempts > 0 and jobs.last_error is not null then 'retrying'
    when jobs.run_at > now() then 'scheduled'
    else 'ready'
  end as state
from {{schema}}._private_jobs as jobs
join {{schema}}._private_tasks as tasks on tasks.id = jobs.task_id
left join {{schema}}._private_job_queues as queues on queues.id = jobs.job_queue_id
where jobs.id = %(id)s::bigint
