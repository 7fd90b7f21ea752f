-- kongtaskd.run_jobs (kongtaskd/inline.py): the row of the job it just claimed, while its
-- pool still holds it. load_job.sql's columns, with the json columns as text: run_jobs runs
-- on any driver, and no driver's own JSON codec may change the payload a handler sees.
select
  jobs.id, tasks.identifier as task_identifier, queues.queue_name, jobs.payload::text as payload,
  jobs.priority, jobs.run_at, jobs.attempts, jobs.max_attempts, jobs.last_error,
  jobs.created_at, jobs.updated_at, jobs.key, jobs.locked_at, jobs.locked_by,
  jobs.revision, jobs.flags::text as flags
from {{schema}}._private_jobs as jobs
join {{schema}}._private_tasks as tasks on tasks.id = jobs.task_id
left join {{schema}}._private_job_queues as queues on queues.id = jobs.job_queue_id
where jobs.id = %(id)s::bigint and jobs.locked_by = %(pool_id)s::text
