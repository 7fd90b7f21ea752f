-- This pool is alive: insert or refresh its heartbeat row. Returns whether the row had to
-- be inserted (true at the first beat, and when another daemon's sweep presumed us dead).
-- $1 pool id, $2 hostname, $3 pid, $4 version, $5 concurrency, $6 busy children,
-- $7 jobs done so far, $8 when the last reload finished (null: none yet), $9 its error
-- (null: it succeeded), $10 why the pool is degraded (null: it is not), $11 details: the
-- children, configuration summary and crontab next runs (kongtaskd migration 5; see
-- kongtaskd/heartbeat.py and docs/statistics.md).
insert into {{schema}}._kongtaskd_heartbeats as beats
  (pool_id, hostname, pid, version, concurrency, busy, jobs_done, started_at, last_beat_at,
   last_reload_at, last_reload_error, degraded, details)
values ($1, $2, $3, $4, $5, $6, $7, now(), now(), $8, $9, $10, $11)
on conflict (pool_id) do update
set concurrency = excluded.concurrency,
    busy = excluded.busy,
    jobs_done = excluded.jobs_done,
    last_beat_at = now(),
    last_reload_at = excluded.last_reload_at,
    last_reload_error = excluded.last_reload_error,
    degraded = excluded.degraded,
    details = excluded.details
returning (xmax = 0) as inserted
