-- Jobs by state for the metrics gauges: ready (runnable now), scheduled (runnable later),
-- locked (running somewhere). A full count; the supervisor runs it at most every
-- METRICS_QUEUE_DEPTH_EVERY seconds.
select
  count(*) filter (where jobs.is_available and jobs.run_at <= now()) as ready,
  count(*) filter (where jobs.is_available and jobs.run_at > now()) as scheduled,
  count(*) filter (where jobs.locked_at is not null) as locked
from {{schema}}._private_jobs as jobs
