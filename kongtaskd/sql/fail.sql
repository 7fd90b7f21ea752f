-- Record failures: for each (id $1[i], message $2[i]) that pool $3 still holds, store the
-- error, push run_at back by graphile-worker's back-off (exp(least(attempts, 10)) seconds
-- from now or from a future run_at, whichever is later), and unlock the job and its queue.
-- A job whose attempts reached max_attempts stays in the table as permanently failed
-- (is_available is false from then on). updated_at is left alone, as graphile-worker does.
with failures as (
  select failure.id, failure.message
  from unnest($1::bigint[], $2::text[]) as failure(id, message)
),
failed as (
  update :SCHEMA._private_jobs as jobs
  set last_error = failures.message,
      run_at = greatest(now(), jobs.run_at) + exp(least(jobs.attempts, 10)) * interval '1 second',
      locked_by = null,
      locked_at = null
  from failures
  where jobs.id = failures.id and jobs.locked_by = $3
  returning jobs.id, jobs.job_queue_id, jobs.attempts, jobs.max_attempts, jobs.run_at
),
unlocked as (
  update :SCHEMA._private_job_queues as queues
  set locked_by = null, locked_at = null
  where queues.id in (select failed.job_queue_id from failed)
    and queues.locked_by = $3
)
select failed.id, failed.attempts, failed.max_attempts, failed.run_at from failed
