-- /daemons and the overview: every kongtaskd pool's heartbeat row, whole (to_jsonb, so
-- columns later migrations add, e.g. 000004's last_reload_at / last_reload_error /
-- degraded, show up without a new query), with its age by the database clock.
select to_jsonb(beats) as row,
  extract(epoch from now() - beats.started_at)::float8 as uptime_seconds,
  extract(epoch from now() - beats.last_beat_at)::float8 as seconds_since_beat,
  beats.last_beat_at < now() - %(stale_after)s * interval '1 second' as stale
from {{schema}}._kongtaskd_heartbeats as beats
order by beats.hostname, beats.started_at, beats.pool_id
limit %(limit)s
