-- kongtaskd.remove_job(): graphile-worker's remove_job() deletes an unlocked job with this
-- key, or stops a running one from being retried (and frees its key). It returns a null
-- row (all columns null) when no job has the key; the WHERE drops it, so "no job" is
-- simply an empty result. The job existed before this statement, so its task and queue
-- rows are visible and both names resolve here.
with job as materialized (
  select * from {{schema}}.remove_job(%(job_key)s::text)
)
select
  job.id, tasks.identifier as task_identifier, queues.queue_name, job.payload::text as payload,
  job.priority, job.run_at, job.attempts, job.max_attempts, job.last_error,
  job.created_at, job.updated_at, job.key, job.locked_at, job.locked_by,
  job.revision, job.flags::text as flags, job.task_id, job.job_queue_id
from job
left join {{schema}}._private_tasks as tasks on tasks.id = job.task_id
left join {{schema}}._private_job_queues as queues on queues.id = job.job_queue_id
where job.id is not null
