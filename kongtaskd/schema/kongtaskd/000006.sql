-- kongtaskd migration 6: steering. Fleet-wide concurrency caps and rate limits per task,
-- and pauses of tasks and named queues, all enforced in kongtaskd_claim (migration 3), the
-- one claim that the daemon (settle.sql), run_jobs and kongtaskd_get_job all call.
--
-- Caps are written by every daemon at start and on reload for each task it runs ("no cap"
-- is a row with both limits null: removing a cap lifts it); the last writer wins.
-- A task's running jobs are counted, not booked: every job of the task whose locked_at is
-- set (held by any kongtaskd pool or graphile-worker worker) takes a slot, so a slot comes
-- back whenever a lock goes away (success, failure, either fleet's sweeps) with nothing to
-- keep in step. The count reads _kongtaskd_jobs_locked below, which holds only locked jobs.
-- task_id is _private_tasks.id, without a foreign key: one would stop TRUNCATE of
-- graphile-worker's table, and ids are never reused, so a row left by a task that cleanup
-- deleted is harmless (no job can carry its id).
create table {{schema}}._kongtaskd_task_caps (
  task_id integer primary key,
  -- At most this many jobs of the task locked at once, fleet-wide (null: no cap).
  concurrency integer check (concurrency > 0),
  -- Token bucket: at most rate_limit starts per rate_seconds, burst rate_limit.
  rate_limit integer check (rate_limit > 0),
  rate_seconds integer check (rate_seconds > 0),
  tokens float8 not null default 0,
  tokens_at timestamptz not null default now(),
  written_by text not null,
  written_at timestamptz not null default now(),
  check ((rate_limit is null) = (rate_seconds is null))
);

-- Paused tasks (by identifier: a task may have no row in _private_tasks yet) and named
-- queues (by queue_name). Rows persist until resumed.
create table {{schema}}._kongtaskd_pauses (
  kind text not null check (kind in ('task', 'queue')),
  name text not null,
  paused_at timestamptz not null default now(),
  paused_by text not null,
  primary key (kind, name)
);

-- As graphile-worker's private tables and kongtaskd's heartbeats: RLS on, no policies (only
-- the owner, who runs the daemons, reads and writes them).
alter table {{schema}}._kongtaskd_task_caps enable row level security;
alter table {{schema}}._kongtaskd_pauses enable row level security;

-- The jobs someone holds, by task: what a cap counts. Small (the fleet's running jobs), and
-- an entry is only made while a job is locked.
create index _kongtaskd_jobs_locked
  on {{schema}}._private_jobs (task_id)
  where locked_at is not null;

-- The locked_by a paused queue's row carries: no pool has it (pool ids are longer and
-- never contain a space), so neither fleet's sweeps of dead pools unlock it, and its
-- locked_at of 'infinity' is never stale.
create function {{schema}}.kongtaskd_pause_marker() returns text
language sql immutable as $$ select 'kongtaskd pause'::text $$;

create or replace function {{schema}}.kongtaskd_claim(
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
declare
  -- Tasks this claim may take (task_ids without the paused ones; null = every task).
  v_task_ids integer[] := task_ids;
  v_paused_queues text[];
  -- Capped tasks among them, and how many jobs of each this claim may take.
  v_capped integer[];
  v_allow_ids integer[];
  v_allow integer[];
  v_wait timestamptz;
  v_steered boolean;
begin
  -- A lock without a recognisable owner could never be released by anyone.
  if pool_id is null or length(pool_id) < 10 then
    raise exception 'invalid pool id %: expected at least 10 characters', quote_nullable(pool_id)
      using errcode = '22023';
  end if;
  if max_jobs is null or max_jobs <= 0 then
    return;
  end if;

  -- The common case pays one small read: no pause anywhere and no cap on the tasks asked
  -- for. Then the claim is migration 3's, word for word (the steered query below costs
  -- about 0.2 ms more per call even when every cap is empty).
  select exists (select from {{schema}}._kongtaskd_pauses), array(
      select c.task_id from {{schema}}._kongtaskd_task_caps as c
      where (c.concurrency is not null or c.rate_limit is not null)
        and (task_ids is null or c.task_id = any(task_ids)))
    into v_steered, v_capped;
  if not v_steered and cardinality(v_capped) = 0 then
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
    return;
  end if;

  -- Pauses (kongtaskd pause): a paused task or named queue is claimed by nobody. Read
  -- in a statement of its own, so with a snapshot taken after the pause committed.
  if v_steered then
    if exists (select from {{schema}}._kongtaskd_pauses as p where p.kind = 'task') then
      v_task_ids := array(
        select t.id from {{schema}}._private_tasks as t
        where (task_ids is null or t.id = any(task_ids))
          and t.identifier not in (
            select p.name from {{schema}}._kongtaskd_pauses as p where p.kind = 'task')
      );
    end if;
    v_paused_queues := array(
      select p.name from {{schema}}._kongtaskd_pauses as p where p.kind = 'queue');
    -- A paused queue's row is held with the pause marker as soon as it is free (its last
    -- job finished, or add_job created it after the pause), so graphile-worker skips it too.
    update {{schema}}._private_job_queues as queues
    set locked_by = {{schema}}.kongtaskd_pause_marker(), locked_at = 'infinity'
    where queues.queue_name = any(v_paused_queues) and queues.locked_at is null;
  end if;

  -- Caps (tasks: concurrency / rate). Serialise on the task's caps row: lock it first, in a
  -- statement of its own, then count the task's running jobs in the next one, whose
  -- snapshot is taken after the lock was granted: every claim of this task that held the
  -- lock before us has committed and is counted. A row another claimer holds right now is
  -- skipped (SKIP LOCKED): that task is left to that claimer this time, never waited for.
  v_capped := array(
    select c.task_id from {{schema}}._kongtaskd_task_caps as c
    where (c.concurrency is not null or c.rate_limit is not null)
      and (v_task_ids is null or c.task_id = any(v_task_ids))
  );
  if cardinality(v_capped) > 0 then
    v_allow_ids := array(
      select c.task_id from {{schema}}._kongtaskd_task_caps as c
      where c.task_id = any(v_capped)
      order by c.task_id
      for update skip locked
    );
    select array_agg(allowed.task_id), array_agg(allowed.allow),
      min(allowed.next_token_at) filter (where allowed.rate_bound)
    into v_allow_ids, v_allow, v_wait
    from (
      select c.task_id,
        greatest(0, least(
          max_jobs,
          coalesce(c.concurrency - (
            select count(*) from {{schema}}._private_jobs as jobs
            where jobs.task_id = c.task_id and jobs.locked_at is not null), max_jobs),
          coalesce(floor(bucket.tokens)::integer, max_jobs)
        )) as allow,
        bucket.tokens < 1 as rate_bound,
        now() + (1 - bucket.tokens) * c.rate_seconds / c.rate_limit * interval '1 second'
          as next_token_at
      from {{schema}}._kongtaskd_task_caps as c
      cross join lateral (
        select least(c.rate_limit::float8,
          c.tokens + extract(epoch from now() - c.tokens_at) * c.rate_limit / c.rate_seconds)
          as tokens
      ) as bucket
      where c.task_id = any(v_allow_ids)
    ) as allowed;
    -- Capped tasks whose row someone else holds get no allowance: they are not claimed.
    v_task_ids := array(
      select t from unnest(coalesce(v_task_ids, array(
        select t.id from {{schema}}._private_tasks as t))) as t
      where t <> all(v_capped)
        or t in (select a.id from unnest(v_allow_ids, v_allow) as a(id, n) where a.n > 0)
    );
  end if;

  return query
  with recursive
  -- Named queues a claim may take a job from: available, and not being taken by a
  -- concurrent claim right now (SKIP LOCKED). Their row locks last until commit.
  open_queues as (
    select queues.id
    from {{schema}}._private_job_queues as queues
    where queues.is_available = true
      and (v_paused_queues is null or queues.queue_name <> all(v_paused_queues))
    for update skip locked
  ),
  -- Per capped task, how many jobs this claim may take (absent: max_jobs).
  allowances as (
    select a.id as task_id, a.n as allow
    from unnest(coalesce(v_allow_ids, '{}'), coalesce(v_allow, '{}')) as a(id, n)
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
          and (v_task_ids is null or next.task_id = any(v_task_ids))
          and jobs.run_at >= next.run_at
          and jobs.run_at <= now()
          and (jobs.job_queue_id is null or jobs.job_queue_id in (select id from open_queues))
          and (forbidden_flags is null or (jobs.flags ?| forbidden_flags) is not true)
        order by jobs.run_at
        limit coalesce(
          (select allowances.allow from allowances where allowances.task_id = next.task_id),
          max_jobs)
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
    select locked.id, locked.task_id, locked.job_queue_id, locked.priority, locked.run_at
    from shares
    cross join lateral (
      select jobs.id, jobs.task_id, jobs.job_queue_id, jobs.priority, jobs.run_at
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
  -- A capped task seen at several priorities may have collected more than its allowance:
  -- only the best `allow` of its jobs are kept.
  within as (
    select capped.id, capped.job_queue_id, capped.priority, capped.run_at
    from (
      select candidates.*, row_number() over (
          partition by candidates.task_id
          order by candidates.priority, candidates.run_at, candidates.id
        ) as place_in_task
      from candidates
    ) as capped
    where capped.place_in_task <= coalesce(
      (select allowances.allow from allowances where allowances.task_id = capped.task_id),
      max_jobs)
  ),
  picked as (
    select ranked.id, ranked.job_queue_id
    from (
      select within.*,
        row_number() over (
          partition by within.job_queue_id
          order by within.priority, within.run_at, within.id
        ) as place_in_queue
      from within
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
  ),
  -- Rate-limited tasks spend one token per job claimed (the bucket refills lazily, from
  -- tokens_at). Only rows this claim locked above are touched.
  spent as (
    update {{schema}}._kongtaskd_task_caps as c
    set tokens = least(c.rate_limit::float8,
          c.tokens + extract(epoch from now() - c.tokens_at) * c.rate_limit / c.rate_seconds)
        - taken.n,
      tokens_at = now()
    from (select claimed.task_id, count(*) as n from claimed group by claimed.task_id) as taken
    where c.task_id = taken.task_id and c.rate_limit is not null
      and c.task_id = any(coalesce(v_allow_ids, '{}'))
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
    and (select count(*) from within) > (select count(*) from claimed)
  union all
  -- 'wait': a rate-limited task ran out of tokens; run_at says when the next one comes, so
  -- the caller can claim again then instead of at its next poll.
  select 'wait'::text, null::bigint, null::integer, null::smallint, v_wait,
    null::smallint, null::smallint
  where v_wait is not null;
end;
$$;

