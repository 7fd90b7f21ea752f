-- /queues: one page of named queues by name, keyset-paginated (name > after, never an
-- OFFSET) over the unique index on queue_name; `held` keeps only queues someone holds.
-- Parameters: after (text, '' for the first page), prefix (null: any), held, limit.
-- A queue paused by kongtaskd (steer) is locked at 'infinity': no time, no held seconds.
select queues.id, queues.queue_name, queues.locked_by,
  case when isfinite(queues.locked_at) then queues.locked_at end as locked_at,
  case when isfinite(queues.locked_at)
    then extract(epoch from now() - queues.locked_at)::float8 end as held_seconds
from {{schema}}._private_job_queues as queues
where queues.queue_name > %(after)s::text
  and (%(prefix)s::text is null or queues.queue_name like %(prefix)s::text)
  and (not %(held)s or queues.locked_at is not null)
order by queues.queue_name
limit %(limit)s
