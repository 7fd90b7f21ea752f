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
--   * a claim's cost depends on how many (priority, task) pairs have available jobs, not
--     on how many jobs wait (see `streams` below);
--   * attempts is incremented at claim time; locked_by is the pool id (0.17+).
-- All parts of one statement see the same snapshot: a queue unlocked by this turn's
-- outcomes is still locked for this turn's claim, and its next job is claimed next turn.
with recursive
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
-- Named queues a claim may take a job from: available, and not being taken by a concurrent
-- claim right now (SKIP LOCKED). Their row locks last until this statement commits.
open_queues as (
  select queues.id
  from {{schema}}._private_job_queues as queues
  where queues.is_available = true
  for update skip locked
),
-- How the claim finds its jobs without reading the backlog. graphile-worker's jobs_main_index
-- is ordered by (priority, run_at) with task_id only INCLUDEd: walking it, a claim steps over
-- every available job of tasks this daemon does not run, and, when idle, every job
-- scheduled for later, one heap row each (58-108 ms per claim with 1M waiting). kongtaskd's
-- partial index _kongtaskd_jobs_ready (priority, task_id, run_at), see
-- schema/kongtaskd/000002.sql, lets it read only what it can take, in three steps:
--
-- `streams`: a loose index scan over the distinct (priority, task_id) pairs that have
--   available jobs, best priority first, one index probe per pair. For each pair of a task
--   we run, one range scan collects the run_at of up to $8 ready jobs. The walk stops when
--   it holds $8 and the next pair has a worse priority: the best $8 jobs by (priority,
--   run_at) are then among the collected ones, whatever lies beyond.
streams(priority, task_id, first_run_at, run_ats, collected) as (
  select -32769, 0, null::timestamptz, null::timestamptz[], 0
  union all
  select next.priority::integer, next.task_id, next.run_at, ready.run_ats,
    streams.collected + cardinality(ready.run_ats)
  from streams
  cross join lateral (
    select jobs.priority, jobs.task_id, jobs.run_at
    from {{schema}}._private_jobs as jobs
    where jobs.is_available = true
      and (jobs.priority, jobs.task_id) > (streams.priority, streams.task_id)
    order by jobs.priority, jobs.task_id, jobs.run_at
    limit 1
  ) as next
  cross join lateral (
    select array(
      select jobs.run_at
      from {{schema}}._private_jobs as jobs
      where jobs.is_available = true
        and jobs.priority = next.priority
        and jobs.task_id = next.task_id
        and next.task_id = any($6::integer[])
        and jobs.run_at >= next.run_at
        and jobs.run_at <= now()
        and (jobs.job_queue_id is null or jobs.job_queue_id in (select id from open_queues))
        and ($7::text[] is null or (jobs.flags ?| $7::text[]) is not true)
      order by jobs.run_at
      limit $8
    ) as run_ats
  ) as ready
  where streams.collected < $8 or next.priority = streams.priority
),
-- `shares`: how many of the best $8 each pair holds (the merge across tasks of one
--   priority is by run_at, as graphile-worker orders).
shares as (
  select best.priority, best.task_id, best.first_run_at, count(*) as share
  from (
    select streams.priority, streams.task_id, streams.first_run_at
    from streams
    cross join lateral unnest(streams.run_ats) as due(run_at)
    order by streams.priority, due.run_at
    limit $8
  ) as best
  group by best.priority, best.task_id, best.first_run_at
),
-- `candidates`: per pair, lock that many jobs in run_at order, FOR UPDATE SKIP LOCKED. A
--   row a concurrent claimer holds is skipped and the scan goes on to the next one of the
--   same pair, so exactly $8 rows are locked when $8 are free. Under READ COMMITTED a row
--   changed since this statement's snapshot is re-checked against its newest version, so
--   a job another claimer has just taken is not taken again. The first run_at found by the
--   probe bounds the scan from below: index entries before it are dead to this snapshot.
candidates as (
  select locked.id, locked.job_queue_id, locked.priority, locked.run_at
  from shares
  cross join lateral (
    select jobs.id, jobs.job_queue_id, jobs.priority, jobs.run_at
    from {{schema}}._private_jobs as jobs
    where jobs.is_available = true
      and jobs.priority = shares.priority
      and jobs.task_id = shares.task_id
      and jobs.run_at >= shares.first_run_at
      and jobs.run_at <= now()
      and (jobs.job_queue_id is null or jobs.job_queue_id in (select id from open_queues))
      and ($7::text[] is null or (jobs.flags ?| $7::text[]) is not true)
    order by jobs.run_at
    limit shares.share
    for update of jobs skip locked
  ) as locked
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
-- The two updates find their rows by primary key from an array, not by joining `picked`:
-- the planner cannot know how few rows `picked` has (the per-pair LIMITs depend on the
-- walk), and PostgreSQL 18 then chose a hash join over a sequential scan of the whole
-- jobs table for every claim.
locked_queues as (
  update {{schema}}._private_job_queues as queues
  set locked_by = $5, locked_at = now()
  where queues.id = any(array(select picked.job_queue_id from picked))
),
claimed as (
  update {{schema}}._private_jobs as jobs
  set attempts = jobs.attempts + 1, locked_by = $5, locked_at = now()
  where jobs.id = any(array(select picked.id from picked))
  returning jobs.id, jobs.task_id, jobs.priority, jobs.run_at, jobs.attempts, jobs.max_attempts
)
-- One row per outcome written and per job claimed, `kind` says which; plus 'more' (below).
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
union all
-- 'more': this claim took fewer jobs than it locked, because several were in one named
-- queue; other ready jobs may wait behind them, so the supervisor claims again next turn
-- (the queue itself stays held until the outcome of the job taken from it is written).
-- Only when it took some, so that rows someone holds for long cannot make claims spin.
select 'more', null, null, null, null, null, null
where exists (select from claimed)
  and (select count(*) from candidates) > (select count(*) from claimed)
