-- kongtaskd migration 3: one claim, whoever claims.
--
-- Until now the claim was written twice: in the supervisor's statement (kongtaskd/sql/
-- settle.sql, a loose index scan over _kongtaskd_jobs_ready, migration 2) and in
-- kongtaskd_get_job (migration 1, an ordered scan that steps over every waiting job it
-- cannot take: its cost grew with the backlog). kongtaskd_claim below is now the only
-- definition: settle.sql calls it, kongtaskd_get_job is a thin wrapper over it, and later
-- rules for the claim (caps, pauses) change this one function in a later migration.
--
-- plpgsql rather than a SQL function: plpgsql keeps the query's plan for the session (a
-- SQL function is planned again on every call before PostgreSQL 18), and the function
-- fixes that plan to the generic one (below), so the supervisor runs it exactly as it ran
-- the statement in settle.sql, and so does every other caller. The function reads its own
-- snapshot (it is volatile); see settle.sql for how the supervisor's outcomes are ordered
-- around it.

-- Claim up to max_jobs runnable jobs for pool_id, following graphile-worker 0.18:
--   * only available jobs (unlocked, attempts < max_attempts) whose run_at has come, of
--     task_ids (null = every task), without any of forbidden_flags (null = no filter);
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
-- Returns one row per claimed job (kind 'claimed', in no particular order), plus one row
-- of kind 'more' (all else null) when ready jobs were left behind in a named queue.
create function {{schema}}.kongtaskd_claim(
  pool_id text,
  task_ids integer[],
  forbidden_flags text[],
  max_jobs integer
) returns table (
  kind text,
  id bigint,
  task_id integer,
  priority smallint,
  run_at timestamptz,
  attempts smallint,
  max_attempts smallint
)
language plpgsql volatile
-- One plan per session, whoever calls. With the default (auto) PostgreSQL plans the first
-- five calls for their values and then keeps doing so whenever the generic plan's estimate
-- looks worse, which for this query it does: planning it again on every call cost about
-- 0.5 ms of server CPU per get_job (claim_bench --caller get_job: 1.96 -> 1.43 ms). The
-- generic plan is the one the supervisor has always run (tests check its buffers on 15
-- and 18).
set plan_cache_mode = force_generic_plan
as $$
-- The output columns share names with the jobs table's; in the query they mean columns.
#variable_conflict use_column
begin
  -- A lock without a recognisable owner could never be released by anyone.
  if pool_id is null or length(pool_id) < 10 then
    raise exception 'invalid pool id %: expected at least 10 characters', quote_nullable(pool_id)
      using errcode = '22023';
  end if;
  if max_jobs is null or max_jobs <= 0 then
    return;
  end if;

  return query
  with recursive
  -- Named queues a claim may take a job from: available, and not being taken by a
  -- concurrent claim right now (SKIP LOCKED). Their row locks last until commit.
  open_queues as (
    select queues.id
    from {{schema}}._private_job_queues as queues
    where queues.is_available = true
    for update skip locked
  ),
  -- How the claim finds its jobs without reading the backlog. graphile-worker's
  -- jobs_main_index is ordered by (priority, run_at) with task_id only INCLUDEd: walking it,
  -- a claim steps over every available job of tasks it does not run, and, when idle, every
  -- job scheduled for later, one heap row each (58-108 ms per claim with 1M waiting).
  -- kongtaskd's partial index _kongtaskd_jobs_ready (priority, task_id, run_at), see
  -- migration 2, lets it read only what it can take, in three steps:
  --
  -- `streams`: a loose index scan over the distinct (priority, task_id) pairs that have
  --   available jobs, best priority first, one index probe per pair. For each pair of a
  --   task we run, one range scan collects the run_at of up to max_jobs ready jobs. The walk
  --   stops when it holds max_jobs and the next pair has a worse priority: the best max_jobs
  --   jobs by (priority, run_at) are then among the collected ones, whatever lies beyond.
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
          and (task_ids is null or next.task_id = any(task_ids))
          and jobs.run_at >= next.run_at
          and jobs.run_at <= now()
          and (jobs.job_queue_id is null or jobs.job_queue_id in (select id from open_queues))
          and (forbidden_flags is null or (jobs.flags ?| forbidden_flags) is not true)
        order by jobs.run_at
        limit max_jobs
      ) as run_ats
    ) as ready
    where streams.collected < max_jobs or next.priority = streams.priority
  ),
  -- `shares`: how many of the best max_jobs each pair holds (the merge across tasks of one
  --   priority is by run_at, as graphile-worker orders).
  shares as (
    select best.priority, best.task_id, best.first_run_at, count(*) as share
    from (
      select streams.priority, streams.task_id, streams.first_run_at
      from streams
      cross join lateral unnest(streams.run_ats) as due(run_at)
      order by streams.priority, due.run_at
      limit max_jobs
    ) as best
    group by best.priority, best.task_id, best.first_run_at
  ),
  -- `candidates`: per pair, lock that many jobs in run_at order, FOR UPDATE SKIP LOCKED. A
  --   row a concurrent claimer holds is skipped and the scan goes on to the next one of the
  --   same pair, so exactly max_jobs rows are locked when max_jobs are free. Under READ
  --   COMMITTED a row changed since this query's snapshot is re-checked against its newest
  --   version, so a job another claimer has just taken is not taken again. The first run_at
  --   found by the probe bounds the scan from below: index entries before it are dead to
  --   this snapshot.
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
        and (forbidden_flags is null or (jobs.flags ?| forbidden_flags) is not true)
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
    set locked_by = pool_id, locked_at = now()
    where queues.id = any(array(select picked.job_queue_id from picked))
  ),
  claimed as (
    update {{schema}}._private_jobs as jobs
    set attempts = jobs.attempts + 1, locked_by = pool_id, locked_at = now()
    where jobs.id = any(array(select picked.id from picked))
    returning jobs.id, jobs.task_id, jobs.priority, jobs.run_at, jobs.attempts,
      jobs.max_attempts
  )
  select 'claimed'::text, claimed.id, claimed.task_id, claimed.priority, claimed.run_at,
    claimed.attempts, claimed.max_attempts
  from claimed
  union all
  -- 'more': this claim took fewer jobs than it locked, because several were in one named
  -- queue; other ready jobs may wait behind them, so the caller may claim again once the
  -- queue is free. Only when it took some, so that rows someone holds for long cannot make
  -- claimers spin.
  select 'more'::text, null::bigint, null::integer, null::smallint, null::timestamptz,
    null::smallint, null::smallint
  where exists (select from claimed)
    and (select count(*) from candidates) > (select count(*) from claimed);
end;
$$;

-- kongtaskd_get_job keeps its signature and behaviour (migration 1): the next runnable job
-- for pool_id, or null. Runnable: available (unlocked, retries left), due, of one of
-- task_identifiers (null = any), in no queue or in a queue nobody holds, and carrying none
-- of forbidden_flags. Ordered by priority, then run_at. Now it is kongtaskd_claim of one,
-- so it no longer walks the backlog, and takes what the daemon would take.
create or replace function {{schema}}.kongtaskd_get_job(
  pool_id text,
  task_identifiers text[] default null,
  forbidden_flags text[] default null
) returns {{schema}}._private_jobs
language plpgsql volatile as $$
declare
  v_job_id bigint;
  v_job {{schema}}._private_jobs;
begin
  select claim.id into v_job_id
    from {{schema}}.kongtaskd_claim(
      pool_id,
      case when task_identifiers is not null then array(
        select t.id from {{schema}}._private_tasks as t
        where t.identifier = any(task_identifiers)) end,
      forbidden_flags,
      1
    ) as claim
    where claim.kind = 'claimed';
  if v_job_id is null then
    return null;
  end if;
  select * into v_job from {{schema}}._private_jobs as j where j.id = v_job_id;
  return v_job;
end;
$$;
