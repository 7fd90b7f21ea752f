-- Of the jobs listed in `ids`, those locked by a kongtaskd pool whose heartbeat is younger than
-- `stale_after` seconds. Their handler is running right now, however long ago it started:
-- graphile-worker's admin functions treat any lock older than four hours as abandoned,
-- which is wrong for a live kongtaskd pool running a long job, so the admin verbs leave
-- these jobs alone.
select jobs.id
from {{schema}}._private_jobs as jobs
join {{schema}}._kongtaskd_heartbeats as beats on beats.pool_id = jobs.locked_by
where jobs.id = any(%(ids)s::bigint[])
  and beats.last_beat_at >= now() - %(stale_after)s * interval '1 second'
