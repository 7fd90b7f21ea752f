-- Jobs of one task that are still in the table (the measured ones; backlog jobs of other
-- tasks or scheduled for later are not counted). Cheap on the benchmark's table sizes.
select count(*)
from graphile_worker._private_jobs as jobs
join graphile_worker._private_tasks as tasks on tasks.id = jobs.task_id
where tasks.identifier = %(task)s and jobs.run_at <= now()
