-- A child reads the one job it was handed: job $1, only while pool $2 still holds it.
-- The same select as load_jobs.sql, for a single id: a scalar parameter lets PostgreSQL
-- keep one generic plan, where the array version is re-planned on every call (~100 us,
-- which is most of an idle daemon's job latency budget).
select
  jobs.id, tasks.identifier as task_identifier, queues.queue_name, jobs.payload,
  jobs.priority, jobs.run_at, jobs.attempts, jobs.max_attempts, jobs.last_error,
  jobs.created_at, jobs.updated_at, jobs.key, jobs.locked_at, jobs.locked_by,
  jobs.revision, jobs.flags
from {{schema}}._private_jobs as jobs
join {{schema}}._private_tasks as tasks on tasks.id = jobs.task_id
left join {{schema}}._private_job_queues as queues on queues.id = jobs.job_queue_id
where jobs.id = $1 and jobs.locked_by = $2
