-- Overview red line: named queues held for more than `stuck_seconds` (a named queue runs one
-- job at a time, so everything behind a long-held queue waits). The queue table has one
-- row per queue name, far smaller than the jobs; at most `limit` rows, oldest hold first.
select queues.queue_name, queues.locked_by, queues.locked_at,
  extract(epoch from now() - queues.locked_at)::float8 as held_seconds
from {{schema}}._private_job_queues as queues
where queues.locked_at is not null
  and queues.locked_at < now() - %(stuck_seconds)s * interval '1 second'
order by queues.locked_at
limit %(limit)s
