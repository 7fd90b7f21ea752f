-- kongtaskd/stats.py daemons: every heartbeat row with its published details, newest
-- start first; bounded by %(limit)s. stale: no beat for longer than %(stale_after)s seconds.
select beats.pool_id, beats.hostname, beats.pid, beats.version, beats.concurrency, beats.busy,
  beats.jobs_done, beats.started_at, beats.last_beat_at,
  beats.last_beat_at < now() - %(stale_after)s * interval '1 second' as stale,
  beats.last_reload_at, beats.last_reload_error, beats.degraded, beats.details
from {{schema}}._kongtaskd_heartbeats as beats
order by beats.started_at desc, beats.pool_id
limit %(limit)s
