-- Record successes: delete jobs $1 that pool $2 still holds and unlock their queues.
-- The locked_by check makes this idempotent and safe after a takeover: a job that a
-- sweeper already failed and another pool re-claimed is not deleted under its new owner.
-- Returns the ids that were deleted; the caller logs the ones that were not.
with deleted as (
  delete from :SCHEMA._private_jobs as jobs
  where jobs.id = any($1::bigint[]) and jobs.locked_by = $2
  returning jobs.id, jobs.job_queue_id
),
unlocked as (
  update :SCHEMA._private_job_queues as queues
  set locked_by = null, locked_at = null
  where queues.id in (select deleted.job_queue_id from deleted)
    and queues.locked_by = $2
)
select deleted.id from deleted
