-- `kongtaskd cleanup --queues` (graphile-worker's GC_JOB_QUEUES): delete named queues that
-- no job refers to and nobody holds. add_job creates them again on demand.
with deleted as (
  delete from {{schema}}._private_job_queues as queues
  where queues.locked_at is null
    and not exists (
      select 1 from {{schema}}._private_jobs as jobs where jobs.job_queue_id = queues.id
    )
  returning queues.queue_name
)
select queue_name from deleted order by queue_name
