-- A child reads the jobs it was handed: jobs $1, only those pool $2 still holds (a sweeper
-- may have taken one back meanwhile). One round trip for a whole batch.
select
  jobs.id, tasks.identifier as task_identifier, queues.queue_name, jobs.payload,
  jobs.priority, jobs.run_at, jobs.attempts, jobs.max_attempts, jobs.last_error,
  jobs.created_at, jobs.updated_at, jobs.key, jobs.locked_at, jobs.locked_by,
  jobs.revision, jobs.flags
from {{schema}}._private_jobs as jobs
join {{schema}}._private_tasks as tasks on tasks.id = jobs.task_id
left join {{schema}}._private_job_queues as queues on queues.id = jobs.job_queue_id
where jobs.id = any($1::bigint[]) and jobs.locked_by = $2
