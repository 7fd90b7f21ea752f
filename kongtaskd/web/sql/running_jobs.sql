-- /daemons: the running (locked) jobs among the newest `window` jobs, who holds each and
-- since when. A lock is in no index, so the window bounds the search; the page says so.
with newest as (
  select jobs.id, jobs.task_id, jobs.locked_by, jobs.locked_at
  from {{schema}}._private_jobs as jobs
  order by jobs.id desc
  limit %(window)s
)
select newest.id, tasks.identifier, newest.locked_by, newest.locked_at
from newest
join {{schema}}._private_tasks as tasks on tasks.id = newest.task_id
where newest.locked_at is not null
order by newest.locked_at
limit %(limit)s
