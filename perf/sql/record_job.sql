-- The `record` handler's one insert: the job that ran (its child commits it).
insert into perf_ran (job_id) values (%(job_id)s)
