-- kongtaskd migration 9: a named queue gives a claim its first job or none.
--
-- Migration 8 locked a job's queue per job, as its candidate scan came to the job (FOR
-- UPDATE SKIP LOCKED), and took each queue's first *locked* job. A queue's lock can be
-- lost for its first job and won for a later one within one scan:
--   * graphile-worker's get_job locks every available queue row for its statement. A scan
--     that meets the queue's first job while that statement runs passes it over; once the
--     statement ends (it took a job elsewhere), the scan meets the queue's next job, gets
--     the queue and takes that job. Job 138 ran before jobs 58-128 of its queue
--     (tests/acceptance/test_mixed_fleet.py failed most runs);
--   * another kongtaskd claim holding the queue as a candidate it does not take in the
--     end (cut by its size) does the same to this one;
--   * a transaction holding the first job's row (an application's UPDATE, an admin
--     statement) made the scan skip that row, keep the queue and take the second job.
--
-- Now each queue's one job is chosen while collecting, before anything is locked: its
-- first collected job by (priority, run_at, id), the order it runs its jobs in. The
-- candidate scan still locks queue before job and goes on past rows it cannot have (so a
-- job of no queue that a concurrent claimer holds is replaced by the next one), but a
-- queue's other jobs it locks on the way are never taken: a queue whose chosen job could
-- not be locked gives nothing this round. The next round, or the next claim, reads again.
--
-- Unchanged from migration 8: one query for the fast and steered paths, the rounds for hot
-- queues, pauses and caps.
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
-- One plan per session, whoever calls (migration 6 measured why).
set plan_cache_mode = force_generic_plan
as $$
-- The output columns share names with the jobs table's; in the query they mean columns.
#variable_conflict use_column
declare
  -- Tasks this claim may take (task_ids without the paused ones; null = every task).
  v_task_ids integer[] := task_ids;
  v_paused_queues text[];
  -- Capped tasks among them, and how many jobs of each this claim may still take.
  v_capped integer[];
  v_allow_ids integer[];
  v_allow integer[];
  v_wait timestamptz;
  v_steered boolean;
  -- Rounds: how many jobs are still wanted, rows collected per wanted job, and what the
  -- last round did.
  v_remaining integer := max_jobs;
  v_overfetch integer := 1;
  v_round integer := 0;
  v_ids bigint[];
  v_tasks integer[];
  v_priorities smallint[];
  v_run_ats timestamptz[];
  v_attempts smallint[];
  v_max_attempts smallint[];
  v_behind integer;
  -- Queues whose lock this claim could not get (a concurrent claimer holds them): passed
  -- over in later rounds, which can then give their slots to other jobs.
  v_lost_queues integer[] := '{}';
  v_lost integer[];
  v_claimed_any boolean := false;
  v_left_behind boolean := false;
begin
  -- A lock without a recognisable owner could never be released by anyone.
  if pool_id is null or length(pool_id) < 10 then
    raise exception 'invalid pool id %: expected at least 10 characters', quote_nullable(pool_id)
      using errcode = '22023';
  end if;
  if max_jobs is null or max_jobs <= 0 then
    return;
  end if;

  -- The common case pays one small read: no pause anywhere and no cap on the tasks asked for.
  select exists (select from {{schema}}._kongtaskd_pauses), array(
      select c.task_id from {{schema}}._kongtaskd_task_caps as c
      where (c.concurrency is not null or c.rate_limit is not null)
        and (task_ids is null or c.task_id = any(task_ids)))
    into v_steered, v_capped;

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
    -- job finished, or add_job created it after the pause), so graphile-worker skips it too,
    -- and so does the availability check below.
    update {{schema}}._private_job_queues as queues
    set locked_by = {{schema}}.kongtaskd_pause_marker(), locked_at = 'infinity'
    where queues.queue_name = any(v_paused_queues) and queues.locked_at is null;
  end if;

  -- Caps (tasks: concurrency / rate). Serialise on the task's caps row: lock it first, in a
  -- statement of its own, then count the task's running jobs in the next one, whose
  -- snapshot is taken after the lock was granted: every claim of this task that held the
  -- lock before us has committed and is counted. A row another claimer holds right now is
  -- skipped (SKIP LOCKED): that task is left to that claimer this time, never waited for.
  if v_steered and cardinality(v_capped) > 0 then
    v_capped := array(
      select c.task_id from {{schema}}._kongtaskd_task_caps as c
      where (c.concurrency is not null or c.rate_limit is not null)
        and (v_task_ids is null or c.task_id = any(v_task_ids))
    );
  end if;
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

  loop
    v_round := v_round + 1;
    with recursive
    -- Per capped task, how many jobs this round may take (absent: all it wants).
    allowances as (
      select a.id as task_id, a.n as allow
      from unnest(coalesce(v_allow_ids, '{}'), coalesce(v_allow, '{}')) as a(id, n)
    ),
    -- How the claim finds its jobs without reading the backlog (migration 3): kongtaskd's
    -- partial index _kongtaskd_jobs_ready (priority, task_id, run_at), migration 2.
    --
    -- `streams`: a loose index scan over the distinct (priority, task_id) pairs that have
    --   available jobs, best priority first, one index probe per pair. For each pair of a
    --   task we may take, one range scan collects the run_at and queue of up to
    --   v_remaining * v_overfetch ready jobs: due, without a forbidden flag, and either in
    --   no named queue or in one that is available (a probe of that queue's row by primary
    --   key, no lock: a scalar subquery, never a join, which the generic plan could make a
    --   hash join over every queue row).
    --   The walk stops when it holds that many and the next pair has a worse priority.
    streams(priority, task_id, first_run_at, ids, run_ats, queue_ids, collected) as (
      select -32769, 0, null::timestamptz, null::bigint[], null::timestamptz[],
        null::integer[], 0
      union all
      select next.priority::integer, next.task_id, next.run_at, ready.ids, ready.run_ats,
        ready.queue_ids, streams.collected + cardinality(ready.run_ats)
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
        -- Aggregated from the ordered, limited scan: in its order (no sort of its own).
        select coalesce(array_agg(due.id), '{}') as ids,
          coalesce(array_agg(due.run_at), '{}') as run_ats,
          coalesce(array_agg(due.job_queue_id), '{}') as queue_ids
        from (
          select jobs.id, jobs.run_at, jobs.job_queue_id
          from {{schema}}._private_jobs as jobs
          where jobs.is_available = true
            and jobs.priority = next.priority
            and jobs.task_id = next.task_id
            and (v_task_ids is null or next.task_id = any(v_task_ids))
            and jobs.run_at >= next.run_at
            and jobs.run_at <= now()
            and (forbidden_flags is null or (jobs.flags ?| forbidden_flags) is not true)
            and (jobs.job_queue_id is null or (
              jobs.job_queue_id <> all(v_lost_queues) and (
              select queues.is_available from {{schema}}._private_job_queues as queues
              where queues.id = jobs.job_queue_id)))
          order by jobs.run_at
          limit least(v_remaining, coalesce(
            (select allowances.allow from allowances where allowances.task_id = next.task_id),
            v_remaining)) * v_overfetch
        ) as due
      ) as ready
      where streams.collected < v_remaining * v_overfetch or next.priority = streams.priority
    ),
    -- Every collected job, with its place in its pair's scan. The first of each named queue
    -- by (priority, run_at, id), the order the queue runs its jobs in, is its slot: the only
    -- job of the queue this round may take (the others wait for it). Jobs in no queue are
    -- slots without a sort: the common case pays for no window.
    collected_jobs as (
      select streams.priority, streams.task_id, streams.first_run_at, due.id, due.run_at,
        due.job_queue_id, due.place
      from streams
      cross join lateral unnest(streams.ids, streams.run_ats, streams.queue_ids)
        with ordinality as due(id, run_at, job_queue_id, place)
    ),
    collected as (
      select collected_jobs.*, true as is_slot
      from collected_jobs
      where collected_jobs.job_queue_id is null
      union all
      select collected_jobs.*, row_number() over (
          partition by collected_jobs.job_queue_id
          order by collected_jobs.priority, collected_jobs.run_at, collected_jobs.id) = 1
      from collected_jobs
      where collected_jobs.job_queue_id is not null
    ),
    -- `shares`: the best v_remaining slots (the merge across tasks of one priority is by
    --   run_at, as graphile-worker orders), and per pair how far its scan must go to reach
    --   its last chosen slot. (A capped task seen at several priorities may get more than
    --   its allowance here: `picked` keeps only the best `allow` of its jobs.)
    shares as (
      select best.priority, best.task_id, best.first_run_at, max(best.place) as reach
      from (
        select collected.*
        from collected
        where collected.is_slot
        order by collected.priority, collected.run_at, collected.id
        limit v_remaining
      ) as best
      group by best.priority, best.task_id, best.first_run_at
    ),
    -- `candidates`: per pair, lock its jobs in run_at order up to that reach, FOR UPDATE
    --   SKIP LOCKED. A row a concurrent claimer holds is skipped and the scan goes on to
    --   the next one of the same pair (jobs of a queue other than its slot may be locked on
    --   the way; `slots` drops them). Under READ COMMITTED a row changed since this
    --   query's snapshot is re-checked against its newest version, so a job another
    --   claimer has just taken is not taken again.
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
          and (forbidden_flags is null or (jobs.flags ?| forbidden_flags) is not true)
          -- The job's queue is locked before the job (SKIP LOCKED: a queue someone holds
          -- passes the job over, and the scan goes on). Never the other way round: a job
          -- row this transaction locked without holding its queue would make a concurrent
          -- graphile-worker skip that queue's first job and take the next one.
          and (jobs.job_queue_id is null or (
            jobs.job_queue_id <> all(v_lost_queues) and exists (
            select from {{schema}}._private_job_queues as queues
            where queues.id = jobs.job_queue_id and queues.is_available = true
            for update skip locked)))
        order by jobs.run_at
        limit shares.reach
        for update of jobs skip locked
      ) as locked
    ),
    -- What may be taken of the locked jobs: every job of no queue, and of a named queue
    -- only its slot. A queue's other jobs the scan locked on the way (it got the queue's
    -- lock at one of them) are never taken in its place: the lock may have been won after
    -- it was lost at the slot, when whoever held the queue let it go. Such a queue gives
    -- nothing this round.
    slots as (
      select candidates.*
      from candidates
      where candidates.job_queue_id is null
        or candidates.id = any(array(
          select collected.id from collected
          where collected.is_slot and collected.job_queue_id is not null))
    ),
    -- The best v_remaining of them, each capped task within its allowance (the window by
    -- task runs only when a cap is in play: one-time filters).
    picked as (
      (
        select slots.id, slots.job_queue_id
        from slots
        where v_allow_ids is null
        order by slots.priority, slots.run_at, slots.id
        limit v_remaining
      )
      union all
      (
        select within.id, within.job_queue_id
        from (
          select slots.*, row_number() over (
              partition by slots.task_id order by slots.priority, slots.run_at, slots.id
            ) as place_in_task
          from slots
          where v_allow_ids is not null
        ) as within
        where within.place_in_task <= coalesce(
          (select allowances.allow from allowances where allowances.task_id = within.task_id),
          v_remaining)
        order by within.priority, within.run_at, within.id
        limit v_remaining
      )
    ),
    -- The picked jobs' queues, already locked by the candidate scan (locking again is a
    -- no-op for our own locks): what it adds is the pause check, for a pause that
    -- committed after the marking above. A queue not obtained gives no job (and is
    -- passed over in the next round).
    got_queues as (
      select queues.id
      from {{schema}}._private_job_queues as queues
      where queues.id = any(array(select picked.job_queue_id from picked
          where picked.job_queue_id is not null))
        and queues.is_available = true
        and (v_paused_queues is null or queues.queue_name <> all(v_paused_queues))
      for update skip locked
    ),
    -- The updates find their rows by primary key from an array, not by joining: the
    -- planner cannot know how few rows these steps have (migration 3: PostgreSQL 18 chose a
    -- hash join over a sequential scan of the whole jobs table).
    locked_queues as (
      update {{schema}}._private_job_queues as queues
      set locked_by = pool_id, locked_at = now()
      where queues.id = any(array(select got_queues.id from got_queues))
    ),
    claimed as (
      update {{schema}}._private_jobs as jobs
      set attempts = jobs.attempts + 1, locked_by = pool_id, locked_at = now()
      where jobs.id = any(array(
        select picked.id from picked
        where picked.job_queue_id is null
          or picked.job_queue_id = any(array(select got_queues.id from got_queues))))
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
      from (select claimed.task_id, count(*) as n from claimed group by claimed.task_id)
        as taken
      where v_allow_ids is not null
        and c.task_id = taken.task_id and c.rate_limit is not null
        and c.task_id = any(v_allow_ids)
    )
    -- The same CTE read six times gives its rows in the same order every time.
    select
      array(select claimed.id from claimed),
      array(select claimed.task_id from claimed),
      array(select claimed.priority from claimed),
      array(select claimed.run_at from claimed),
      array(select claimed.attempts from claimed),
      array(select claimed.max_attempts from claimed),
      -- Jobs left behind because their queue is this claim's (or its slot was not
      -- obtained): they may be ready once it is free, or in another round.
      ((select count(*) from candidates) - (select count(*) from slots))::integer
        + greatest(0, (select count(*) from slots)::integer - v_remaining),
      array(select picked.job_queue_id from picked where picked.job_queue_id is not null
        except select got_queues.id from got_queues)
    into v_ids, v_tasks, v_priorities, v_run_ats, v_attempts, v_max_attempts, v_behind,
      v_lost;

    return query
    select 'claimed'::text, c.id, c.task_id, c.priority, c.run_at, c.attempts, c.max_attempts
    from unnest(v_ids, v_tasks, v_priorities, v_run_ats, v_attempts, v_max_attempts)
      as c(id, task_id, priority, run_at, attempts, max_attempts);

    v_claimed_any := v_claimed_any or cardinality(v_ids) > 0;
    v_left_behind := v_left_behind or v_behind > 0;
    v_remaining := v_remaining - cardinality(v_ids);
    -- Another round, while something is missing, for jobs left behind in a queue this
    -- claim took (if the last round made progress), or for the slots of queues whose lock
    -- was lost (those queues passed over from now on). At most three rounds, collecting 1x,
    -- 8x and 64x the jobs missing, so rows someone else holds never make a claim spin.
    v_lost_queues := v_lost_queues || v_lost;
    exit when v_remaining <= 0 or v_round >= 3
      or not ((v_behind > 0 and cardinality(v_ids) > 0) or cardinality(v_lost) > 0);
    -- Only jobs left behind call for a wider collection; lost queues are passed over.
    if v_behind > 0 then
      v_overfetch := v_overfetch * 8;
    end if;
    if v_allow_ids is not null then
      v_allow := array(
        select a.n - (select count(*) from unnest(v_tasks) as t where t = a.id)::integer
        from unnest(v_allow_ids, v_allow) with ordinality as a(id, n, place)
        order by a.place);
    end if;
  end loop;

  -- 'more': this claim left ready jobs behind because several were in one named queue;
  -- the caller may claim again once the queue is free. Only when it took some, so that
  -- rows someone holds for long cannot make claimers spin.
  if v_claimed_any and v_left_behind then
    return query select 'more'::text, null::bigint, null::integer, null::smallint,
      null::timestamptz, null::smallint, null::smallint;
  end if;
  -- 'wait': a rate-limited task ran out of tokens; run_at says when the next one comes, so
  -- the caller can claim again then instead of at its next poll.
  if v_wait is not null then
    return query select 'wait'::text, null::bigint, null::integer, null::smallint, v_wait,
      null::smallint, null::smallint;
  end if;
end;
$$;
