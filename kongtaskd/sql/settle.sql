-- The supervisor's one round trip per loop turn: claim new jobs and record the outcomes it
-- collected since the last turn. One statement, so one transaction and one commit.
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
--   $9 float8[]   run seconds of the jobs in $1, same order (null: unknown)
--   $10 text[]    task identifiers of the jobs in $1, same order (the supervisor knows them)
--   $11 boolean   keep_completed: also record each completed job in _kongtaskd_completed_jobs
--   $12 integer   inline rows: a claimed job whose payload text is at most this many bytes
--                 comes back with its row (0 = never; see `inline_rows` below)...
--   $13 integer   ...for at most this many claimed jobs, best first (the supervisor asks
--                 for all: a job handed out within INLINE_ROW_MAX_AGE takes its row along)
--   $14 boolean   a claim without outcomes commits without waiting for its WAL flush
--                 (`commit_mode` below)
--
-- Outcomes touch only rows this pool still holds (locked_by = $5), which makes a retried
-- turn idempotent and leaves alone a job that a sweeper already took away from us.
--
-- The claim is {{schema}}.kongtaskd_claim($5, $6, $7, $8) (kongtaskd migration 3, replaced
-- in 6 and 8; the one definition that kongtaskd_get_job also uses): graphile-worker 0.18's
-- rules, by a loose index scan whose cost does not grow with the jobs waiting, nor with the
-- named queues (migration 8 locks only the queues of the jobs it takes).
--
-- Order: the outcome rows are locked first, then the claim runs, then the outcomes are
-- written. The function takes a snapshot of its own (it is volatile) and modifies rows at a
-- later command than this statement's, so the claim waits for `held_jobs`/`held_queues`
-- and each outcome for `claim_done` (explicit data dependencies, not accidents of execution
-- order). Hence, as before: a queue unlocked by this turn's outcomes, and a job handed back
-- by them, are still locked for this turn's claim; the queue's next job is claimed next turn
-- and the handed-back job stays free for other pools.
--
-- Why lock first: a row the function updated must never be updated again by this
-- statement (its older command would fail with "tuple to be updated was already modified
-- by an operation triggered by the current command"). The claim takes only available rows
-- and the outcomes only rows this pool holds, but a row can change hands in between: an
-- unlock (force_unlock_workers, the four-hour sweep) that commits after this statement's
-- snapshot frees one of our outcome rows, the claim takes it, and the outcome, following
-- the row to its newest version, would meet the claim's. Locked here, a row of ours cannot
-- change hands before the claim; a row that already did is left out of `held_*`, and the
-- outcomes touch only held rows (its outcome is reported as not written, as before).
with
held_jobs as (
  select jobs.id, jobs.job_queue_id
  from {{schema}}._private_jobs as jobs
  where jobs.id = any($1::bigint[] || $2::bigint[] || $4::bigint[]) and jobs.locked_by = $5
  for update of jobs
),
held_queues as (
  select queues.id
  from {{schema}}._private_job_queues as queues
  where queues.id in (select held_jobs.job_queue_id from held_jobs)
    and queues.locked_by = $5
  for update of queues
),
-- commit_mode: a statement that only claims (no outcome rides along) may commit without
-- waiting for the WAL flush (synchronous_commit = off for this transaction only: SET LOCAL
-- semantics, the session keeps its setting). On an idle daemon that flush is the biggest
-- part of the time from a job's NOTIFY to its handler's start (one fsync: 0.1 to 10 ms).
-- What it risks: a PostgreSQL crash (or a failover) within wal_writer_delay of the claim
-- forgets the claim, so the job is claimed and run again after recovery. Only then: any
-- later synchronous commit flushes the claim's WAL with its own (WAL is one sequence), be it
-- the handler's transaction or the outcome's statement, which stays synchronous. Other
-- sessions see the claim at once either way (visibility never waits for the flush).
commit_mode as (
  select set_config('synchronous_commit', 'off', true) as setting
  where $14::boolean and coalesce(cardinality($1::bigint[] || $2::bigint[] || $4::bigint[]), 0) = 0
),
claim as (
  select claim.kind, claim.id, claim.task_id, claim.priority, claim.run_at, claim.attempts,
    claim.max_attempts
  from {{schema}}.kongtaskd_claim(
    $5::text, $6::integer[], $7::text[],
    case when (select count(*) from held_jobs) + (select count(*) from held_queues)
      + (select count(*) from commit_mode) >= 0
      then $8::integer end
  ) as claim
),
claim_done as (
  select count(*) as claim_rows from claim
),
{{include:inline_rows}},
completed as (
  delete from {{schema}}._private_jobs as jobs
  where jobs.id = any($1::bigint[]) and jobs.locked_by = $5
    and jobs.id = any(array(select held_jobs.id from held_jobs))
    and (select claim_done.claim_rows from claim_done) >= 0
  returning jobs.id, jobs.job_queue_id, jobs.task_id, jobs.key, jobs.attempts, jobs.created_at
),
-- keep_completed: the history record of each job deleted above, in the same statement (no
-- extra round trip, nothing written when $11 is false). finished_at is this statement's
-- time (the outcome reached the database within the loop turn it arrived in); started_at
-- is finished_at minus the run time the child reported. The queue's name is read from this
-- statement's snapshot, before unlocked_queues changes the row (names never change). The
-- task's identifier comes from the supervisor ($10), not from _private_tasks: the statement
-- reads no table the claim did not already read, so it waits for no lock it did not
-- (a task id without an identifier, which the supervisor never sends, is kept as '#id').
history as (
  insert into {{schema}}._kongtaskd_completed_jobs (id, task_identifier, queue_name, key,
    attempts, created_at, started_at, finished_at, run_seconds, pool_id)
  select completed.id, coalesce(ran.task, '#' || completed.task_id), queues.queue_name,
    completed.key, completed.attempts, completed.created_at,
    now() - ran.seconds * interval '1 second', now(), ran.seconds, $5
  from completed
  left join {{schema}}._private_job_queues as queues on queues.id = completed.job_queue_id
  left join unnest($1::bigint[], $9::float8[], $10::text[]) as ran(id, seconds, task)
    on ran.id = completed.id
  where $11::boolean
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
    and jobs.id = any(array(select held_jobs.id from held_jobs))
    and (select claim_done.claim_rows from claim_done) >= 0
  returning jobs.id, jobs.job_queue_id, jobs.attempts, jobs.max_attempts, jobs.run_at
),
released as (
  update {{schema}}._private_jobs as jobs
  set attempts = greatest(0, jobs.attempts - 1), locked_by = null, locked_at = null
  where jobs.id = any($4::bigint[]) and jobs.locked_by = $5
    and jobs.id = any(array(select held_jobs.id from held_jobs))
    and (select claim_done.claim_rows from claim_done) >= 0
  returning jobs.id, jobs.job_queue_id
),
unlocked_queues as (
  update {{schema}}._private_job_queues as queues
  set locked_by = null, locked_at = null
  where queues.locked_by = $5
    and queues.id = any(array(select held_queues.id from held_queues))
    and queues.id in (
      select completed.job_queue_id from completed
      union all select failed.job_queue_id from failed
      union all select released.job_queue_id from released
    )
)
-- One row per outcome written and per job claimed, `kind` says which; plus 'more': the
-- claim took fewer jobs than it locked, because several were in one named queue; other
-- ready jobs may wait behind them, so the supervisor claims again next turn (the queue
-- itself stays held until the outcome of the job taken from it is written).
select 'completed' as kind, completed.id, null::integer as task_id, null::smallint as priority,
  null::timestamptz as run_at, null::smallint as attempts, null::smallint as max_attempts,
  null::text as job_row
from completed
union all
select 'failed', failed.id, null, null, failed.run_at, failed.attempts, failed.max_attempts,
  null
from failed
union all
select 'released', released.id, null, null, null, null, null, null from released
union all
select claim.kind, claim.id, claim.task_id, claim.priority, claim.run_at, claim.attempts,
  claim.max_attempts, inline_rows.job_row
from claim
left join inline_rows on inline_rows.id = claim.id and claim.kind = 'claimed'
