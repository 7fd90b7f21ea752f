-- /jobs/ID: the heartbeat of the kongtaskd pool holding a job (host, pid, version, age).
select beats.hostname, beats.pid, beats.version, beats.busy, beats.concurrency,
  extract(epoch from now() - beats.last_beat_at)::float8 as seconds_since_beat,
  beats.last_beat_at < now() - %(stale_after)s * interval '1 second' as stale
from {{schema}}._kongtaskd_heartbeats as beats
where beats.pool_id = %(pool_id)s::text
