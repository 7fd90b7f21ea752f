-- graphile-worker migration 18 (released in 0.16.0): notifications with a count.
-- The statement trigger's empty 'jobs:insert' notification is replaced by one sent from
-- add_job/add_jobs/remove_job carrying {"r": <random>, "count": <n>}: listeners wake up to
-- n idle workers, and the random part keeps PostgreSQL from folding identical payloads of
-- one transaction into a single notification.

drop trigger _900_after_insert on {{schema}}._private_jobs;
drop function {{schema}}.tg_jobs__after_insert();

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
    -- add_jobs sends the notification.
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
    -- Revision 0 means a new job was inserted; a deduplicated call has nothing new to run.
    if v_job.revision = 0 then
      perform pg_notify('jobs:insert', '{"r":' || random()::text || ',"count":1}');
    end if;
    return v_job;
  else
    raise exception
      'Invalid job_key_mode value, expected ''replace'', ''preserve_run_at'' or ''unsafe_dedupe''.'
      using errcode = 'GWBKM';
  end if;
end;
$$;

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

  update {{schema}}._private_jobs as j
    set key = null, attempts = j.max_attempts, updated_at = now()
    from unnest(specs) as s
    where s.job_key is not null
      and j.key = s.job_key
      and j.is_available is not true;

  -- The count is the number of specs: an upper bound, as some may update a waiting job
  -- rather than add one. Waking a worker too many is cheap; missing one is not.
  perform pg_notify('jobs:insert',
    '{"r":' || random()::text || ',"count":' || array_length(specs, 1)::text || '}');

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
    -- A negative count tells listeners a waiting job went away (nothing to wake up for).
    perform pg_notify('jobs:insert', '{"r":' || random()::text || ',"count":-1}');
    return v_job;
  end if;
  update {{schema}}._private_jobs
    set key = null, attempts = max_attempts, updated_at = now()
    where key = job_key
    returning * into v_job;
  return v_job;
end;
$$;
