-- Names of tasks and queues by id, for rows whose names add_job()/add_jobs() registered
-- in the very statement that returned them (see add_job.sql). Runs in the caller's
-- transaction, where those fresh rows are visible.
select 'task' as kind, tasks.id, tasks.identifier as name
from {{schema}}._private_tasks as tasks
where tasks.id = any(%(task_ids)s::integer[])
union all
select 'queue' as kind, queues.id, queues.queue_name as name
from {{schema}}._private_job_queues as queues
where queues.id = any(%(queue_ids)s::integer[])
