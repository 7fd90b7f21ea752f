-- graphile-worker migration 12 (released in 0.14.0): batch jobs.
-- When a keyed job is replaced and both the waiting job's payload and the new payload are
-- JSON arrays, the arrays are concatenated instead of the new one winning, so callers can
-- accumulate work items into one job. Everything else in add_jobs is unchanged.

create or replace function {{schema}}.add_jobs(
  specs {{schema}}.job_spec[],
  job_key_preserve_run_at boolean default false
) returns setof {{schema}}.jobs
language plpgsql as $$
begin
  insert into {{schema}}.tasks (identifier)
    select distinct s.identifier from unnest(specs) as s
    on conflict do nothing;
  insert into {{schema}}.job_queues (queue_name)
    select distinct s.queue_name from unnest(specs) as s
    where s.queue_name is not null
    on conflict do nothing;

  -- A running or exhausted job keeps running but loses its key and its retries; the insert
  -- below then creates a new job for the new information.
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
