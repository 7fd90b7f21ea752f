-- kongtaskd.contrib.django admin: the named queues for the changelist's queue filter, from
-- graphile-worker's queues table (never a DISTINCT over the jobs), LIMITed: a schema with a
-- queue per customer has many, and any queue can still be filtered by its URL parameter.
select queues.queue_name
from {{schema}}._private_job_queues as queues
order by queues.queue_name
limit %(limit)s
