-- This pool is alive: insert or refresh its heartbeat row. Returns whether the row had to
-- be inserted (true at the first beat, and when another daemon's sweep presumed us dead).
-- $1 pool id, $2 hostname, $3 pid, $4 version, $5 concurrency, $6 busy children,
-- $7 jobs done so far.
insert into {{schema}}._kongtaskd_heartbeats as beats
  (pool_id, hostname, pid, version, concurrency, busy, jobs_done, started_at, last_beat_at)
values ($1, $2, $3, $4, $5, $6, $7, now(), now())
on conflict (pool_id) do update
set concurrency = excluded.concurrency,
    busy = excluded.busy,
    jobs_done = excluded.jobs_done,
    last_beat_at = now()
returning (xmax = 0) as inserted
