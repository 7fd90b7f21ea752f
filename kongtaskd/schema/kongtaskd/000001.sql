-- kongtaskd migration 1: heartbeats and SQL-level claim/complete/fail.
--
-- kongtaskd's own objects sit next to graphile-worker's, recorded in kongtaskd's own ledger
-- (_kongtaskd_migrations), and every name starts with "_kongtaskd_" or "kongtaskd_" so that
-- graphile-worker never touches them and schema comparisons can leave them out.

-- One row per live kongtaskd pool (a supervisor and its children). `kongtaskd status`
-- reads it; a pool whose last_beat_at is old is dead, so its locks may be released early
-- instead of after graphile-worker's four hours.
create table {{schema}}._kongtaskd_heartbeats (
  pool_id text primary key,
  hostname text not null,
  pid integer not null,
  version text not null,
  concurrency integer not null,
  busy integer not null default 0,
  jobs_done bigint not null default 0,
  started_at timestamptz not null default now(),
  last_beat_at timestamptz not null default now()
);
-- Like graphile-worker's tables: private to the owner, no policies.
alter table {{schema}}._kongtaskd_heartbeats enable row level security;

-- The three functions below give non-Python consumers (psql, other languages) the
-- get_job/complete_job/fail_job trio graphile-worker dropped in 0.14, with 0.18 semantics:
-- locks carry the pool id, a claim takes at most one job per named queue, and a lock is
-- only ever released by the pool that holds it.

-- Claim the next runnable job for pool_id, or return null. Runnable: available (unlocked,
-- retries left), due, of one of task_identifiers (null = any), in no queue or in a queue
-- nobody holds, and carrying none of forbidden_flags. Ordered by priority, then run_at.
create function {{schema}}.kongtaskd_get_job(
  pool_id text,
  task_identifiers text[] default null,
  forbidden_flags text[] default null
) returns {{schema}}._private_jobs
language plpgsql volatile as $$
declare
  v_job_id bigint;
  v_queue_id integer;
  v_job {{schema}}._private_jobs;
begin
  -- A lock without a recognisable owner could never be released by anyone.
  if pool_id is null or length(pool_id) < 10 then
    raise exception 'invalid pool id %: expected at least 10 characters', quote_nullable(pool_id)
      using errcode = '22023';
  end if;

  select j.id, j.job_queue_id into v_job_id, v_queue_id
    from {{schema}}._private_jobs as j
    where j.is_available = true
      and j.run_at <= now()
      and (task_identifiers is null
           or j.task_id = any(array(
             select t.id from {{schema}}._private_tasks as t
             where t.identifier = any(task_identifiers))))
      -- SKIP LOCKED on the queue rows too: a queue another claim is taking right now is
      -- simply not a candidate, instead of making us wait.
      and (j.job_queue_id is null
           or j.job_queue_id in (
             select q.id from {{schema}}._private_job_queues as q
             where q.is_available = true
             for update skip locked))
      and (forbidden_flags is null or (j.flags ?| forbidden_flags) is not true)
    order by j.priority asc, j.run_at asc
    limit 1
    for update of j skip locked;

  if v_job_id is null then
    return null;
  end if;

  -- Hold the queue until this job is completed or failed: named queues run one at a time.
  if v_queue_id is not null then
    update {{schema}}._private_job_queues as q
      set locked_by = pool_id, locked_at = now()
      where q.id = v_queue_id;
  end if;

  -- The attempt is counted at claim time, so a crash mid-job still uses one up.
  update {{schema}}._private_jobs as j
    set attempts = j.attempts + 1, locked_by = pool_id, locked_at = now()
    where j.id = v_job_id
    returning * into v_job;
  return v_job;
end;
$$;

-- Success: delete the job and release its queue if this pool holds it. Returns the deleted
-- row, or null if there was no such job.
create function {{schema}}.kongtaskd_complete_job(pool_id text, job_id bigint)
returns {{schema}}._private_jobs
language plpgsql volatile as $$
declare
  v_job {{schema}}._private_jobs;
begin
  delete from {{schema}}._private_jobs as j
    where j.id = job_id
    returning * into v_job;
  if v_job.job_queue_id is not null then
    update {{schema}}._private_job_queues as q
      set locked_by = null, locked_at = null
      where q.id = v_job.job_queue_id and q.locked_by = pool_id;
  end if;
  return v_job;
end;
$$;

-- Failure: record the error, push run_at back by exp(min(attempts, 10)) seconds
-- (graphile-worker's back-off: 2.7 s, 7.4 s, 20 s, ... capped near 6 h) and release job
-- and queue. Only the pool holding the job may fail it; otherwise nothing changes and null
-- is returned.
create function {{schema}}.kongtaskd_fail_job(pool_id text, job_id bigint, error_message text)
returns {{schema}}._private_jobs
language plpgsql volatile as $$
declare
  v_job {{schema}}._private_jobs;
begin
  update {{schema}}._private_jobs as j
    set last_error = error_message,
        run_at = greatest(now(), j.run_at) + exp(least(j.attempts, 10)) * interval '1 second',
        locked_by = null,
        locked_at = null
    where j.id = job_id and j.locked_by = pool_id
    returning * into v_job;
  if v_job.job_queue_id is not null then
    update {{schema}}._private_job_queues as q
      set locked_by = null, locked_at = null
      where q.id = v_job.job_queue_id and q.locked_by = pool_id;
  end if;
  return v_job;
end;
$$;
