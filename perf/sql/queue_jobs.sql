-- Queue %(count)s jobs of task %(task)s in one graphile_worker.add_jobs() call, the way
-- graphile-worker's own perfTest loads its jobs (one statement, one NOTIFY).
--   %(run_at)s       null = now, else the time they become ready (the "scheduled" backlog)
--   %(priority)s     null = 0 (smaller runs first)
--   %(payload)s      every job's payload, or null for {"n": <ordinal>} (a small, realistic row)
--   %(queues)s       null = no named queue; N = round-robin over queues <prefix>0..<prefix>N-1
--   %(queue_prefix)s the queue names' prefix
--   %(start)s        ordinals already queued by earlier chunks (continues the round-robin)
select count(*)
from graphile_worker.add_jobs(
  array(
    select row(
      %(task)s::text, coalesce(%(payload)s::json, json_build_object('n', i)),
      case
        when %(queues)s::integer is not null
        then %(queue_prefix)s::text || mod(%(start)s::integer + i - 1, %(queues)s::integer)
      end,
      %(run_at)s::timestamptz, null::smallint, null::text, %(priority)s::smallint, null::text[]
    )::graphile_worker.job_spec
    from generate_series(1, %(count)s::integer) as i
  )
)
