-- kongtaskd.add_jobs(): one call of graphile-worker's add_jobs() for the whole batch.
-- The specs travel as one JSON array parameter and become a job_spec[] in the database
-- (as graphile-worker's own bulk loader does), so a batch costs one round trip and no SQL
-- is built from the values. WITH ORDINALITY keeps the rows in the order the function
-- returned them (its join's order, not necessarily the specs'); MATERIALIZED makes sure
-- the function runs exactly once. Names of tasks and queues this very call registered
-- come back null; see add_job.sql.
with job as materialized (
  select *
  from {{schema}}.add_jobs(
    array(
      select spec
      from json_populate_recordset(cast(null as {{schema}}.job_spec), %(specs)s::text::json) as spec
    ),
    job_key_preserve_run_at => %(job_key_preserve_run_at)s::boolean
  ) with ordinality as added
)
select
  job.id, tasks.identifier as task_identifier, queues.queue_name, job.payload::text as payload,
  job.priority, job.run_at, job.attempts, job.max_attempts, job.last_error,
  job.created_at, job.updated_at, job.key, job.locked_at, job.locked_by,
  job.revision, job.flags::text as flags, job.task_id, job.job_queue_id
from job
left join {{schema}}._private_tasks as tasks on tasks.id = job.task_id
left join {{schema}}._private_job_queues as queues on queues.id = job.job_queue_id
order by job.ordinality
