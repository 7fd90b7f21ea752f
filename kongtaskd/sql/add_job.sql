-- kongtaskd.add_job(): graphile-worker's own add_job() does the work (job_key modes, queue
-- and task registration, NOTIFY), so a job added here is indistinguishable from one added
-- by Node or by SQL. MATERIALIZED guarantees the volatile function runs exactly once.
--
-- The joins resolve task and queue names in the same round trip when those rows existed
-- before this statement. A task or queue row that add_job() itself just inserted is not
-- visible to this statement's snapshot, so its name comes back null; the caller then looks
-- it up (job_names.sql), which happens only the first time a name is used.
--
-- JSON goes in and comes out as text (payload ::text::json, payload/flags ::text) so that
-- no driver's own json codec touches it: every driver sends and gets the same bytes, and
-- kongtaskd serialises and decodes them once (kongtaskd/drivers.py, enqueue.py).
with job as materialized (
  select *
  from {{schema}}.add_job(
    identifier => %(identifier)s::text,
    payload => %(payload)s::text::json,
    queue_name => %(queue_name)s::text,
    run_at => %(run_at)s::timestamptz,
    max_attempts => %(max_attempts)s::integer,
    job_key => %(job_key)s::text,
    priority => %(priority)s::integer,
    flags => %(flags)s::text[],
    job_key_mode => coalesce(%(job_key_mode)s::text, 'replace')
  )
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
