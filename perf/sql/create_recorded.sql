-- Where `record` jobs write their id (no index: an insert per job is the handler's cost,
-- and duplicates must be kept to be counted).
create table perf_ran (job_id bigint not null)
