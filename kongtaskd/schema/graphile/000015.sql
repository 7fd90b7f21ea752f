-- graphile-worker migration 15 (released in 0.16.0): tidy-up and force_unlock_workers.

-- Trigger functions orphaned since 0.14 (their triggers went with the legacy table).
drop function {{schema}}.jobs__increase_job_queue_count();
drop function {{schema}}.jobs__decrease_job_queue_count();
drop function {{schema}}.tg__update_timestamp();

-- For operators who know a worker (since 0.17: a pool) is dead: release everything it holds
-- now instead of waiting four hours for the stale-lock sweep.
create function {{schema}}.force_unlock_workers(worker_ids text[]) returns void
language sql volatile as $$
  update {{schema}}.jobs set locked_at = null, locked_by = null
    where locked_by = any(worker_ids);
  update {{schema}}.job_queues set locked_at = null, locked_by = null
    where locked_by = any(worker_ids);
$$;
