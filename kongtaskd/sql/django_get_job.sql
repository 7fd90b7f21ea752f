-- kongtaskd.contrib.django: one job by id, for a django.tasks TaskResult (get_result()).
-- Runs on Django's connection, in its current transaction, so a job enqueued earlier in
-- the same transaction is found too. No row: the job is gone (it succeeded, or was removed).
select
  jobs.id, tasks.identifier as task_identifier, queues.queue_name, jobs.payload,
  jobs.priority, jobs.run_at, jobs.attempts, jobs.max_attempts, jobs.last_error,
  jobs.created_at, jobs.updated_at, jobs.key, jobs.locked_at, jobs.locked_by,
  jobs.revision, jobs.flags, jobs.task_id, jobs.job_queue_id
from {{schema}}._private_jobs as jobs
join {{schema}}._private_tasks as tasks on tasks.id = jobs.task_id
left join {{schema}}._private_job_queues as queues on queues.id = jobs.job_queue_id
where jobs.id = %(id)s::bigint
