-- The many-daemons scenario's poll: jobs recorded by their handler, and jobs still in the
-- table (a completion is written by the supervisor's next settle, after the handler).
select (select count(*) from perf_ran), (select count(*) from graphile_worker._private_jobs)
