-- After bulk queueing, as a busy production table would be after autovacuum: fresh
-- statistics for the planner and an up-to-date visibility map for index-only scans.
vacuum analyze graphile_worker._private_jobs, graphile_worker._private_job_queues
