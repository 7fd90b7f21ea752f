-- A bulk action's confirm page: how many jobs with id <= upto match the filter right now.
-- The where clause is action_select_batch.sql's, word for word (tests/unit/test_actions_sql.py
-- checks), so the count shown is the set acted on. Parameters: task, queue, state, error
-- (an ILIKE pattern), key (null: any), upto.
select count(*)
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
