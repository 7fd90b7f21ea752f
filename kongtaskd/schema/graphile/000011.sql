--! breaking-change
-- graphile-worker migration 11 (released in 0.14.0): the normalised layout.
--
-- graphile-worker's own 000011 rewrote the pre-0.14 tables in place. kongtaskd never runs
-- this file on such a database (it refuses ledgers at 1..10), only on a fresh install, so it
-- builds the state graphile-worker 0.14.0 had after its 000011 directly. "The state" is
-- taken literally, because a graphile-worker started next to kongtaskd may run the real
-- 000012..000020 on top of it:
--   * names that 0.14.0 got by colliding with its then-still-present legacy tables are
--     spelled out: jobs_pkey1, jobs_key_key1, job_queues_pkey1, sequence jobs_id_seq1;
--   * the insert trigger of that release and the three orphaned trigger functions from
--     migration 1 exist, because the real 000015 and 000018 drop them without "if exists".
-- The schema name is bound by kongtaskd.schema (never formatted from user data).

-- NOT NULL constraints carry explicit names: PostgreSQL 18 records them by name, and in
-- graphile-worker's own 000011 the legacy tables still hold the plain names, so the new
-- tables get a "1" suffix (jobs_payload_not_null1, ...). Older PostgreSQL ignores names.
create table {{schema}}.job_queues (
  id integer generated always as identity (sequence name {{schema}}.job_queues_id_seq)
    constraint job_queues_pkey1 primary key,
  queue_name text constraint job_queues_queue_name_not_null1 not null
    constraint job_queues_queue_name_key unique
    constraint job_queues_queue_name_check check (length(queue_name) <= 128),
  locked_at timestamptz,
  locked_by text,
  -- A queue is free while nobody holds it; the claim query filters on this column.
  is_available boolean not null generated always as (locked_at is null) stored
);
alter table {{schema}}.job_queues enable row level security;

create table {{schema}}.tasks (
  id integer generated always as identity (sequence name {{schema}}.tasks_id_seq)
    constraint tasks_pkey primary key,
  identifier text not null
    constraint tasks_identifier_key unique
    constraint tasks_identifier_check check (length(identifier) <= 128)
);
alter table {{schema}}.tasks enable row level security;

create table {{schema}}.jobs (
  id bigint constraint jobs_id_not_null1 not null
    generated always as identity (sequence name {{schema}}.jobs_id_seq1)
    constraint jobs_pkey1 primary key,
  -- No foreign keys on the two ids below: graphile-worker leaves them out for speed.
  job_queue_id integer,
  task_id integer not null,
  payload json constraint jobs_payload_not_null1 not null default '{}'::json,
  priority smallint constraint jobs_priority_not_null1 not null default 0,
  run_at timestamptz constraint jobs_run_at_not_null1 not null default now(),
  attempts smallint constraint jobs_attempts_not_null1 not null default 0,
  max_attempts smallint constraint jobs_max_attempts_not_null1 not null default 25
    constraint jobs_max_attempts_check check (max_attempts >= 1),
  last_error text,
  created_at timestamptz constraint jobs_created_at_not_null1 not null default now(),
  updated_at timestamptz constraint jobs_updated_at_not_null1 not null default now(),
  key text
    constraint jobs_key_key1 unique
    constraint jobs_key_check check (length(key) > 0 and length(key) <= 512),
  locked_at timestamptz,
  locked_by text,
  revision integer constraint jobs_revision_not_null1 not null default 0,
  flags jsonb,
  -- Claimable = not locked and retries left; both partial indexes below key on it.
  is_available boolean not null
    generated always as (locked_at is null and attempts < max_attempts) stored
);
alter table {{schema}}.jobs enable row level security;

-- The claim query orders by (priority, run_at) over available jobs; the INCLUDE columns
-- let it decide task and queue eligibility from the index alone.
create index jobs_main_index on {{schema}}.jobs
  using btree (priority, run_at) include (id, task_id, job_queue_id)
  where is_available = true;
create index jobs_no_queue_index on {{schema}}.jobs
  using btree (priority, run_at) include (id, task_id)
  where is_available = true and job_queue_id is null;

-- Introduced by graphile-worker's migration 8 and untouched until 000016 renames it.
create table {{schema}}.known_crontabs (
  identifier text not null constraint known_crontabs_pkey primary key,
  known_since timestamptz not null,
  last_execution timestamptz
);
alter table {{schema}}.known_crontabs enable row level security;

-- One element of a bulk add_jobs call. (000013 narrows the two integers to smallint.)
create type {{schema}}.job_spec as (
  identifier text,
  payload json,
  queue_name text,
  run_at timestamptz,
  max_attempts integer,
  job_key text,
  priority integer,
  flags text[]
);

-- Orphans of migration 1 that 0.14.0 left behind (their triggers went with the legacy
-- table). Only their existence matters: 000015 removes them. Bodies are inert on purpose.
create function {{schema}}.tg__update_timestamp() returns trigger
language plpgsql as $$
begin
  return null;
end;
$$;
create function {{schema}}.jobs__decrease_job_queue_count() returns trigger
language plpgsql as $$
begin
  return null;
end;
$$;
create function {{schema}}.jobs__increase_job_queue_count() returns trigger
language plpgsql as $$
begin
  return null;
end;
$$;

-- 0.14.0 still woke workers from a statement-level trigger with an empty payload;
-- 000018 replaces it with counted notifications sent by add_job/add_jobs themselves.
create function {{schema}}.tg_jobs__after_insert() returns trigger
language plpgsql as $$
begin
  perform pg_notify('jobs:insert', '');
  return new;
end;
$$;
create trigger _900_after_insert after insert on {{schema}}.jobs
  for each statement execute procedure {{schema}}.tg_jobs__after_insert();

create function {{schema}}.add_jobs(
  specs {{schema}}.job_spec[],
  job_key_preserve_run_at boolean default false
) returns setof {{schema}}.jobs
language plpgsql as $$
begin
  -- Task and queue rows are created on demand; concurrent callers may race, hence the
  -- "do nothing" on conflict.
  insert into {{schema}}.tasks (identifier)
    select distinct s.identifier from unnest(specs) as s
    on conflict do nothing;
  insert into {{schema}}.job_queues (queue_name)
    select distinct s.queue_name from unnest(specs) as s
    where s.queue_name is not null
    on conflict do nothing;

  -- A keyed job that is running (or has used up its attempts) describes an outdated world:
  -- detach it from its key and stop its retries, so the insert below makes a fresh job.
  update {{schema}}.jobs as j
    set key = null, attempts = j.max_attempts, updated_at = now()
    from unnest(specs) as s
    where s.job_key is not null
      and j.key = s.job_key
      and j.is_available is not true;

  return query
    insert into {{schema}}.jobs as jobs
      (job_queue_id, task_id, payload, run_at, max_attempts, key, priority, flags)
    select
      q.id,
      t.id,
      coalesce(s.payload, '{}'::json),
      coalesce(s.run_at, now()),
      coalesce(s.max_attempts, 25),
      s.job_key,
      coalesce(s.priority, 0),
      (select jsonb_object_agg(f.flag, true) from unnest(s.flags) as f(flag))
    from unnest(specs) as s
    join {{schema}}.tasks as t on t.identifier = s.identifier
    left join {{schema}}.job_queues as q on q.queue_name = s.queue_name
    on conflict (key) do update set
      job_queue_id = excluded.job_queue_id,
      task_id = excluded.task_id,
      payload = excluded.payload,
      max_attempts = excluded.max_attempts,
      run_at = case
        when job_key_preserve_run_at is true and jobs.attempts = 0 then jobs.run_at
        else excluded.run_at
      end,
      priority = excluded.priority,
      revision = jobs.revision + 1,
      flags = excluded.flags,
      -- A replaced job starts over: no attempts used, no error.
      attempts = 0,
      last_error = null,
      updated_at = now()
    where jobs.locked_at is null
    returning *;
end;
$$;

create function {{schema}}.add_job(
  identifier text,
  payload json default null::json,
  queue_name text default null::text,
  run_at timestamptz default null::timestamptz,
  max_attempts integer default null::integer,
  job_key text default null::text,
  priority integer default null::integer,
  flags text[] default null::text[],
  job_key_mode text default 'replace'::text
) returns {{schema}}.jobs
language plpgsql as $$
declare
  v_job {{schema}}.jobs;
begin
  if job_key is null or job_key_mode is null
     or job_key_mode in ('replace', 'preserve_run_at') then
    -- One code path for single and bulk inserts: delegate to add_jobs.
    select * into v_job
      from {{schema}}.add_jobs(
        array[(identifier, payload, queue_name, run_at, max_attempts, job_key, priority,
               flags)::{{schema}}.job_spec],
        job_key_mode = 'preserve_run_at')
      limit 1;
    return v_job;
  elsif job_key_mode = 'unsafe_dedupe' then
    insert into {{schema}}.tasks (identifier) values (add_job.identifier)
      on conflict do nothing;
    if add_job.queue_name is not null then
      insert into {{schema}}.job_queues (queue_name) values (add_job.queue_name)
        on conflict do nothing;
    end if;
    -- Keep whatever job already holds the key, even a running or failed one; only bump its
    -- revision so the caller gets a row back. This can lose an update, hence "unsafe".
    insert into {{schema}}.jobs as jobs
      (job_queue_id, task_id, payload, run_at, max_attempts, key, priority, flags)
    select
      q.id,
      t.id,
      coalesce(add_job.payload, '{}'::json),
      coalesce(add_job.run_at, now()),
      coalesce(add_job.max_attempts, 25),
      add_job.job_key,
      coalesce(add_job.priority, 0),
      (select jsonb_object_agg(f.flag, true) from unnest(add_job.flags) as f(flag))
    from {{schema}}.tasks as t
    left join {{schema}}.job_queues as q on q.queue_name = add_job.queue_name
    where t.identifier = add_job.identifier
    on conflict (key) do update set
      revision = jobs.revision + 1,
      updated_at = now()
    returning * into v_job;
    return v_job;
  else
    raise exception
      'Invalid job_key_mode value, expected ''replace'', ''preserve_run_at'' or ''unsafe_dedupe''.'
      using errcode = 'GWBKM';
  end if;
end;
$$;

-- The admin functions below leave alone jobs that a live worker holds; a lock older than
-- four hours belongs to a dead worker and counts as no lock.
create function {{schema}}.complete_jobs(job_ids bigint[]) returns setof {{schema}}.jobs
language sql as $$
  delete from {{schema}}.jobs
    where id = any(job_ids)
      and (locked_at is null or locked_at < now() - interval '4 hours')
    returning *;
$$;

create function {{schema}}.permanently_fail_jobs(
  job_ids bigint[],
  error_message text default null::text
) returns setof {{schema}}.jobs
language sql as $$
  update {{schema}}.jobs
    set last_error = coalesce(error_message, 'Manually marked as failed'),
        attempts = max_attempts,
        updated_at = now()
    where id = any(job_ids)
      and (locked_at is null or locked_at < now() - interval '4 hours')
    returning *;
$$;

create function {{schema}}.remove_job(job_key text) returns {{schema}}.jobs
language plpgsql strict as $$
declare
  v_job {{schema}}.jobs;
begin
  delete from {{schema}}.jobs
    where key = job_key
      and (locked_at is null or locked_at < now() - interval '4 hours')
    returning * into v_job;
  -- "not (row is null)", not "row is not null": the latter needs every column non-null.
  if not (v_job is null) then
    return v_job;
  end if;
  -- Still running: it cannot be deleted under the worker, so make sure it is not retried
  -- and free its key for a new job.
  update {{schema}}.jobs
    set key = null, attempts = max_attempts, updated_at = now()
    where key = job_key
    returning * into v_job;
  return v_job;
end;
$$;

create function {{schema}}.reschedule_jobs(
  job_ids bigint[],
  run_at timestamptz default null::timestamptz,
  priority integer default null::integer,
  attempts integer default null::integer,
  max_attempts integer default null::integer
) returns setof {{schema}}.jobs
language sql as $$
  -- Arguments share their names with columns, so they are qualified by the function name.
  update {{schema}}.jobs as j
    set run_at = coalesce(reschedule_jobs.run_at, j.run_at),
        priority = coalesce(reschedule_jobs.priority, j.priority),
        attempts = coalesce(reschedule_jobs.attempts, j.attempts),
        max_attempts = coalesce(reschedule_jobs.max_attempts, j.max_attempts),
        updated_at = now()
    where j.id = any(job_ids)
      and (j.locked_at is null or j.locked_at < now() - interval '4 hours')
    returning *;
$$;
