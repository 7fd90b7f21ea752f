-- `kongtaskd cleanup --tasks` (graphile-worker's GC_TASK_IDENTIFIERS): delete task
-- identifiers no job refers to, except those in `keep`. Workers learn their task ids at
-- start-up and keep them; deleting the row of a task a running worker serves would give
-- jobs added later a new task id that worker never claims. So the caller keeps the tasks
-- it knows to be served (its configuration's), as graphile-worker's CLI keeps the tasks
-- of its task directory.
with deleted as (
  delete from {{schema}}._private_tasks as tasks
  where not exists (
      select 1 from {{schema}}._private_jobs as jobs where jobs.task_id = tasks.id
    )
    and tasks.identifier <> all(%(keep)s::text[])
  returning tasks.identifier
)
select identifier from deleted order by identifier
