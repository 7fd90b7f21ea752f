-- Every job row, whatever its state: a --once run must leave none of the measured ones.
select count(*) from graphile_worker._private_jobs
