-- kongtaskd.contrib.django admin: the task identifiers for the changelist's task filter,
-- from graphile-worker's small tasks table (never a DISTINCT over the jobs), LIMITed.
select tasks.identifier
from {{schema}}._private_tasks as tasks
order by tasks.identifier
limit %(limit)s
