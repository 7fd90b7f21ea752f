--! breaking-change
-- graphile-worker migration 13 (released in 0.14.0): smallint in the public signatures.
-- job_spec and the add_job/reschedule_jobs arguments for priority, attempts and
-- max_attempts follow the smallint columns. (000014 takes the function arguments back to
-- integer; job_spec stays smallint.) Changing argument types makes a new overload, so the
-- old functions are dropped first.

alter type {{schema}}.job_spec alter attribute max_attempts type smallint;
alter type {{schema}}.job_spec alter attribute priority type smallint;

drop function {{schema}}.add_job(text, json, text, timestamptz, integer, text, integer, text[], text);
create function {{schema}}.add_job(
  identifier text,
  payload json default null::json,
  queue_name text default null::text,
  run_at timestamptz default null::timestamptz,
  max_attempts smallint default null::smallint,
  job_key text default null::text,
  priority smallint default null::smallint,
  flags text[] default null::text[],
  job_key_mode text default 'replace'::text
) returns {{schema}}.jobs
language plpgsql as $$
declare
  v_job {{schema}}.jobs;
begin
  if job_key is null or job_key_mode is null
     or job_key_mode in ('replace', 'preserve_run_at') then
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

drop function {{schema}}.reschedule_jobs(bigint[], timestamptz, integer, integer, integer);
create function {{schema}}.reschedule_jobs(
  job_ids bigint[],
  run_at timestamptz default null::timestamptz,
  priority smallint default null::smallint,
  attempts smallint default null::smallint,
  max_attempts smallint default null::smallint
) returns setof {{schema}}.jobs
language sql as $$
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
