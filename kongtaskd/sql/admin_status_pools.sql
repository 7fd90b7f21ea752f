-- `kongtaskd status`: every kongtaskd pool with a heartbeat row, how long it has been up,
-- how long since it last beat, whether that is longer than `stale_after` seconds (the
-- pool is presumed dead and the next live daemon's sweep will fail and release its jobs),
-- how many jobs it holds, and what its last reload did. Times come from the database clock, as the sweep's do.
select
  beats.pool_id,
  beats.hostname,
  beats.pid,
  beats.version,
  beats.concurrency,
  beats.busy,
  beats.jobs_done,
  beats.started_at,
  beats.last_beat_at,
  extract(epoch from now() - beats.started_at)::float8 as uptime_seconds,
  extract(epoch from now() - beats.last_beat_at)::float8 as seconds_since_beat,
  beats.last_beat_at < now() - %(stale_after)s * interval '1 second' as stale,
  (
    select count(*) from {{schema}}._private_jobs as jobs where jobs.locked_by = beats.pool_id
  ) as locked_jobs,
  -- Read through to_jsonb so that a schema not yet at kongtaskd migration 4 (these columns
  -- missing) still shows its daemons, with nothing to say about reloads.
  (to_jsonb(beats) ->> 'last_reload_at')::timestamptz as last_reload_at,
  to_jsonb(beats) ->> 'last_reload_error' as last_reload_error,
  to_jsonb(beats) ->> 'degraded' as degraded
from {{schema}}._kongtaskd_heartbeats as beats
order by beats.hostname, beats.started_at, beats.pool_id
