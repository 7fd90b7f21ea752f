-- %(count)s named queues whose jobs are all done but whose rows are not cleaned up yet (what
-- `cleanup --queues` / graphile-worker's GC_JOB_QUEUES would delete), written straight into
-- graphile-worker's own table: add_jobs + running them would take minutes for 500,000.
insert into graphile_worker._private_job_queues (queue_name)
select 'idle-' || i from generate_series(1, %(count)s::integer) as i
