-- The many-daemons scenario's exactly-once check: the handler `record` inserts its job id
-- into perf_ran (one row per run); every queued job must appear exactly once.
select count(*), count(distinct job_id) from perf_ran
