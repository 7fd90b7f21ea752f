--! breaking-change
-- graphile-worker migration 16 (released in 0.16.0): the tables become private.
-- They get a "_private_" prefix (their constraint, index and sequence names stay as they
-- were) so that the public surface is the functions and, from 000017, the jobs view.
-- Every function body names the tables, so each is re-created against the new names with
-- unchanged behaviour. (Their row type follows the rename by itself.)

alter table {{schema}}.jobs rename to _private_jobs;
alter table {{schema}}.job_queues rename to _private_job_queues;
alter table {{schema}}.tasks rename to _private_tasks;
alter table {{schema}}.known_crontabs rename to _private_known_crontabs;

create or replace function {{schema}}.add_jobs(
  specs {{schema}}.job_spec[],
  job_key_preserve_run_at boolean default false
) returns setof {{schema}}._private_jobs
language plpgsql as $$
begin
  insert into {{schema}}._private_tasks (identifier)
    select distinct s.identifier from unnest(specs) as s
    on conflict do nothing;
  insert into {{schema}}._private_job_queues (queue_name)
    select distinct s.queue_name from unnest(specs) as s
    where s.queue_name is not null
    on conflict do nothing;

  -- A running or exhausted job keeps running but loses its key and its retries; the insert
  -- below then creates a new job for the new information.
  update {{schema}}._private_jobs as j
    set key = null, attempts = j.max_attempts, updated_at = now()
    from unnest(specs) as s
    where s.job_key is not null
      and j.key = s.job_key
      and j.is_available is not true;

  return query
    insert into {{schema}}._private_jobs as jobs
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
    join {{schema}}._private_tasks as t on t.identifier = s.identifier
    left join {{schema}}._private_job_queues as q on q.queue_name = s.queue_name
    on conflict (key) do update set
      job_queue_id = excluded.job_queue_id,
      task_id = excluded.task_id,
      payload = case
        when json_typeof(jobs.payload) = 'array' and json_typeof(excluded.payload) = 'array'
          then (jobs.payload::jsonb || excluded.payload::jsonb)::json
        else excluded.payload
      end,
      max_attempts = excluded.max_attempts,
      run_at = case
        when job_key_preserve_run_at is true and jobs.attempts = 0 then jobs.run_at
        else excluded.run_at
      end,
      priority = excluded.priority,
      revision = jobs.revision + 1,
      flags = excluded.flags,
      attempts = 0,
      last_error = null,
      updated_at = now()
    where jobs.locked_at is null
    returning *;
end;
$$;

create or replace function {{schema}}.add_job(
  identifier text,
  payload json default null::json,
  queue_name text default null::text,
  run_at timestamptz default null::timestamptz,
  max_attempts integer default null::integer,
  job_key text default null::text,
  priority integer default null::integer,
  flags text[] default null::text[],
  job_key_mode text default 'replace'::text
) returns {{schema}}._private_jobs
language plpgsql as $$
declare
  v_job {{schema}}._private_jobs;
begin
  if job_key is null or job_key_mode is null
     or job_key_mode in ('replace', 'preserve_run_at') then
    select * into v_job
      from {{schema}}.add_jobs(
        array[(identifier, payload, queue_name, run_at, max_attempts::smallint, job_key,
               priority::smallint, flags)::{{schema}}.job_spec],
        job_key_mode = 'preserve_run_at')
      limit 1;
    return v_job;
  elsif job_key_mode = 'unsafe_dedupe' then
    insert into {{schema}}._private_tasks (identifier) values (add_job.identifier)
      on conflict do nothing;
    if add_job.queue_name is not null then
      insert into {{schema}}._private_job_queues (queue_name) values (add_job.queue_name)
        on conflict do nothing;
    end if;
    insert into {{schema}}._private_jobs as jobs
      (job_queue_id, task_id, payload, run_at, max_attempts, key, priority, flags)
    select
      q.id,
      t.id,
      coalesce(add_job.payload, '{}'::json),
      coalesce(add_job.run_at, now()),
      coalesce(add_job.max_attempts::smallint, 25::smallint),
      add_job.job_key,
      coalesce(add_job.priority::smallint, 0::smallint),
      (select jsonb_object_agg(f.flag, true) from unnest(add_job.flags) as f(flag))
    from {{schema}}._private_tasks as t
    left join {{schema}}._private_job_queues as q on q.queue_name = add_job.queue_name
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

create or replace function {{schema}}.complete_jobs(job_ids bigint[])
returns setof {{schema}}._private_jobs
language sql as $$
  delete from {{schema}}._private_jobs
    where id = any(job_ids)
      and (locked_at is null or locked_at < now() - interval '4 hours')
    returning *;
$$;

create or replace function {{schema}}.force_unlock_workers(worker_ids text[]) returns void
language sql volatile as $$
  update {{schema}}._private_jobs set locked_at = null, locked_by = null
    where locked_by = any(worker_ids);
  update {{schema}}._private_job_queues set locked_at = null, locked_by = null
    where locked_by = any(worker_ids);
$$;

create or replace function {{schema}}.permanently_fail_jobs(
  job_ids bigint[],
  error_message text default null::text
) returns setof {{schema}}._private_jobs
language sql as $$
  update {{schema}}._private_jobs
    set last_error = coalesce(error_message, 'Manually marked as failed'),
        attempts = max_attempts,
        updated_at = now()
    where id = any(job_ids)
      and (locked_at is null or locked_at < now() - interval '4 hours')
    returning *;
$$;

create or replace function {{schema}}.remove_job(job_key text)
returns {{schema}}._private_jobs
language plpgsql strict as $$
declare
  v_job {{schema}}._private_jobs;
begin
  delete from {{schema}}._private_jobs
    where key = job_key
      and (locked_at is null or locked_at < now() - interval '4 hours')
    returning * into v_job;
  if not (v_job is null) then
    return v_job;
  end if;
  update {{schema}}._private_jobs
    set key = null, attempts = max_attempts, updated_at = now()
    where key = job_key
    returning * into v_job;
  return v_job;
end;
$$;

create or replace function {{schema}}.reschedule_jobs(
  job_ids bigint[],
  run_at timestamptz default null::timestamptz,
  priority integer default null::integer,
  attempts integer default null::integer,
  max_attempts integer default null::integer
) returns setof {{schema}}._private_jobs
language sql as $$
  update {{schema}}._private_jobs as j
    set run_at = coalesce(reschedule_jobs.run_at, j.run_at),
        priority = coalesce(reschedule_jobs.priority::smallint, j.priority),
        attempts = coalesce(reschedule_jobs.attempts::smallint, j.attempts),
        max_attempts = coalesce(reschedule_jobs.max_attempts::smallint, j.max_attempts),
        updated_at = now()
    where j.id = any(job_ids)
      and (j.locked_at is null or j.locked_at < now() - interval '4 hours')
    returning *;
$$;
