-- Hand jobs $1 back unrun (drain before start): unlock job and queue and refund the
-- attempt the claim took, so a drained job loses nothing. Only rows pool $2 holds.
with released as (
  update {{schema}}._private_jobs as jobs
  set attempts = greatest(0, jobs.attempts - 1), locked_by = null, locked_at = null
  where jobs.id = any($1::bigint[]) and jobs.locked_by = $2
  returning jobs.id, jobs.job_queue_id
),
unlocked as (
  update {{schema}}._private_job_queues as queues
  set locked_by = null, locked_at = null
  where queues.id in (select released.job_queue_id from released)
    and queues.locked_by = $2
)
select released.id from released
