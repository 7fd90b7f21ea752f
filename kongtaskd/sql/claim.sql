-- Claim up to $4 ready jobs for pool $1, graphile-worker 0.18's claim semantics:
--   * only available jobs (unlocked, attempts < max_attempts) whose run_at has come,
--     of the task ids this daemon can run ($2), without a forbidden flag ($3, may be null);
--   * ordered by priority, then run_at (graphile-worker has no id tie-break; we add one
--     only inside the per-queue ranking so that ties are deterministic);
--   * a named queue runs one job at a time across the whole fleet: its queue row must be
--     available and is locked together with the job, and at most one job per queue is
--     taken per claim (the 0.18 fix for graphile-worker#621);
--   * FOR UPDATE SKIP LOCKED on both jobs and queues, so concurrent claimers never wait
--     for or steal each other's rows;
--   * attempts is incremented at claim time; locked_by is the pool id, as in 0.17+.
-- Returns the claimed rows' id and task_id, in no particular order (the caller sorts).
with candidates as (
  select jobs.id, jobs.job_queue_id, jobs.priority, jobs.run_at
  from :SCHEMA._private_jobs as jobs
  where jobs.is_available = true
    and jobs.run_at <= now()
    and jobs.task_id = any($2::integer[])
    and (
      jobs.job_queue_id is null
      or jobs.job_queue_id in (
        select queues.id
        from :SCHEMA._private_job_queues as queues
        where queues.is_available = true
        for update skip locked
      )
    )
    and ($3::text[] is null or (jobs.flags ?| $3::text[]) is not true)
  order by jobs.priority asc, jobs.run_at asc
  limit $4
  for update of jobs skip locked
),
picked as (
  select ranked.id, ranked.job_queue_id
  from (
    select candidates.*,
      row_number() over (
        partition by candidates.job_queue_id
        order by candidates.priority, candidates.run_at, candidates.id
      ) as place_in_queue
    from candidates
  ) as ranked
  where ranked.job_queue_id is null or ranked.place_in_queue = 1
),
locked_queues as (
  update :SCHEMA._private_job_queues as queues
  set locked_by = $1, locked_at = now()
  from picked
  where queues.id = picked.job_queue_id
)
update :SCHEMA._private_jobs as jobs
set attempts = jobs.attempts + 1, locked_by = $1, locked_at = now()
from picked
where jobs.id = picked.id
returning jobs.id, jobs.task_id, jobs.priority, jobs.run_at
