-- One batch of a bulk action: the next `limit` matching ids above `after` (a keyset walk of
-- the primary key, never an OFFSET), up to `upto` (the highest id when the operator
-- confirmed). Each batch re-checks the filter, so a job that stopped matching since the
-- confirm page (retried by someone else, completed) is left alone.
-- The where clause is action_count.sql's, word for word, plus the lower bound.
select jobs.id
from {{schema}}._private_jobs as jobs
join {{schema}}._private_tasks as tasks on tasks.id = jobs.task_id
left join {{schema}}._private_job_queues as queues on queues.id = jobs.job_queue_id
where jobs.id <= %(upto)s::bigint
  and (%(task)s::text is null or tasks.identifier = %(task)s::text)
  and (%(queue)s::text is null or queues.queue_name = %(queue)s::text)
  and (%(key)s::text is null or jobs.key = %(key)s::text)
  and (%(error)s::text is null or jobs.last_error ilike %(error)s::text)
  and (
    %(state)s::text is null
    or case
      when jobs.locked_at is not null then 'running'
      when jobs.attempts >= jobs.max_attempts then 'failed'
      when jobs.attempts > 0 and jobs.last_error is not null then 'retrying'
      when jobs.run_at > now() then 'scheduled'
      else 'ready'
    end = %(state)s::text
  )
  and jobs.id > %(after)s::bigint
order by jobs.id
limit %(limit)s
