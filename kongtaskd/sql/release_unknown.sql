-- After a reconnect: hand back every job pool $1 holds that the supervisor does not know
-- about ($2 = the ids it knows: running, prefetched, awaiting their outcome). Such jobs
-- exist when a claim committed but its answer was lost with the connection; no child ever
-- saw them, so the attempt is refunded. Their queues are unlocked with them.
with released as (
  update {{schema}}._private_jobs as jobs
  set attempts = greatest(0, jobs.attempts - 1), locked_by = null, locked_at = null
  where jobs.locked_by = $1 and not (jobs.id = any($2::bigint[]))
  returning jobs.id, jobs.job_queue_id
),
unlocked_queues as (
  update {{schema}}._private_job_queues as queues
  set locked_by = null, locked_at = null
  where queues.locked_by = $1
    and queues.id in (select released.job_queue_id from released)
)
select released.id from released
