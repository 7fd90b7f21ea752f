-- `kongtaskd cleanup --permafailed` (graphile-worker's DELETE_PERMAFAILED_JOBS): delete
-- permanently failed jobs nobody holds. graphile-worker tests attempts = max_attempts;
-- >= also catches jobs whose max_attempts was lowered below their attempts by
-- reschedule_jobs, which are just as dead (is_available is false for both).
with deleted as (
  delete from {{schema}}._private_jobs as jobs
  where jobs.attempts >= jobs.max_attempts
    and jobs.locked_at is null
  returning jobs.id
)
select count(*) from deleted
