-- `kongtaskd status`: every kongtaskd pool with a heartbeat row, how long it has been up,
-- how long since it last beat, whether that is longer than `stale_after` seconds (the
-- pool is presumed dead and the next live daemon's sweep will fail and release its jobs),
-- and how many jobs it holds. Times come from the database clock, as the sweep's do.
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
  ) as locked_jobs
from {{schema}}._kongtaskd_heartbeats as beats
order by beats.hostname, beats.started_at, beats.pool_id
