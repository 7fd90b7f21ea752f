-- The supervisor's one round trip per loop turn: record the outcomes it collected since
-- the last turn, then claim new jobs. One statement, so one transaction and one commit.
--
-- Parameters
--   $1 bigint[]   ids of jobs whose handler returned (delete them)
--   $2 bigint[]   ids of jobs whose handler failed ...
--   $3 text[]     ... and their error texts, same order
--   $4 bigint[]   ids of jobs claimed but never started (drain): hand back, attempt refunded
--   $5 text       this daemon's pool id (locked_by)
--   $6 integer[]  task ids this daemon can run
--   $7 text[]     forbidden flags, or null
--   $8 integer    how many jobs to claim (0 = none)
--
-- Outcomes touch only rows this pool still holds (locked_by = $5), which makes a retried
-- turn idempotent and leaves alone a job that a sweeper already took away from us.
--
-- The claim follows graphile-worker 0.18 (see docs/architecture.md):
--   * only available jobs (unlocked, attempts < max_attempts) whose run_at has come, of
--     our task ids, without a forbidden flag;
--   * priority first, then run_at (graphile-worker has no id tie-break; we add one only
--     inside the per-queue ranking so ties are deterministic);
--   * a named queue runs one job at a time across the whole fleet: its queue row must be
--     available and is locked with the job, and one claim takes at most one job per queue
--     (the 0.18 fix for graphile-worker#621);
--   * FOR UPDATE SKIP LOCKED on jobs and queue rows: concurrent claimers never wait for,
--     nor take, each other's rows;
--   * attempts is incremented at claim time; locked_by is the pool id (0.17+).
-- All parts of one statement see the same snapshot: a queue unlocked by this turn's
-- outcomes is still locked for this turn's claim, and its next job is claimed next turn.
with
completed as (
  delete from {{schema}}._private_jobs as jobs
  where jobs.id = any($1::bigint[]) and jobs.locked_by = $5
  returning jobs.id, jobs.job_queue_id
),
failed as (
  -- graphile-worker's back-off: exp(least(attempts, 10)) seconds after now or after a
  -- future run_at, whichever is later. At attempts = max_attempts the row stays as a
  -- permanently failed job. updated_at is left alone, as graphile-worker's worker does.
  update {{schema}}._private_jobs as jobs
  set last_error = failure.message,
      run_at = greatest(now(), jobs.run_at) + exp(least(jobs.attempts, 10)) * interval '1 second',
      locked_by = null,
      locked_at = null
  from unnest($2::bigint[], $3::text[]) as failure(id, message)
  where jobs.id = failure.id and jobs.locked_by = $5
  returning jobs.id, jobs.job_queue_id, jobs.attempts, jobs.max_attempts, jobs.run_at
),
released as (
  update {{schema}}._private_jobs as jobs
  set attempts = greatest(0, jobs.attempts - 1), locked_by = null, locked_at = null
  where jobs.id = any($4::bigint[]) and jobs.locked_by = $5
  returning jobs.id, jobs.job_queue_id
),
unlocked_queues as (
  update {{schema}}._private_job_queues as queues
  set locked_by = null, locked_at = null
  where queues.locked_by = $5
    and queues.id in (
      select completed.job_queue_id from completed
      union all select failed.job_queue_id from failed
      union all select released.job_queue_id from released
    )
),
candidates as (
  select jobs.id, jobs.job_queue_id, jobs.priority, jobs.run_at
  from {{schema}}._private_jobs as jobs
  where jobs.is_available = true
    and jobs.run_at <= now()
    and jobs.task_id = any($6::integer[])
    and (
      jobs.job_queue_id is null
      or jobs.job_queue_id in (
        select queues.id
        from {{schema}}._private_job_queues as queues
        where queues.is_available = true
        for update skip locked
      )
    )
    and ($7::text[] is null or (jobs.flags ?| $7::text[]) is not true)
  order by jobs.priority asc, jobs.run_at asc
  limit $8
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
  update {{schema}}._private_job_queues as queues
  set locked_by = $5, locked_at = now()
  from picked
  where queues.id = picked.job_queue_id
),
claimed as (
  update {{schema}}._private_jobs as jobs
  set attempts = jobs.attempts + 1, locked_by = $5, locked_at = now()
  from picked
  where jobs.id = picked.id
  returning jobs.id, jobs.task_id, jobs.priority, jobs.run_at, jobs.attempts, jobs.max_attempts
)
-- One row per outcome written and per job claimed; `kind` says which.
select 'completed' as kind, completed.id, null::integer as task_id, null::smallint as priority,
  null::timestamptz as run_at, null::smallint as attempts, null::smallint as max_attempts
from completed
union all
select 'failed', failed.id, null, null, failed.run_at, failed.attempts, failed.max_attempts
from failed
union all
select 'released', released.id, null, null, null, null, null from released
union all
select 'claimed', claimed.id, claimed.task_id, claimed.priority, claimed.run_at,
  claimed.attempts, claimed.max_attempts
from claimed
