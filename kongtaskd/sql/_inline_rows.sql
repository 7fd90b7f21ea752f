-- Included by settle.sql and claim.sql (``{{include:inline_rows}}``, queries.source): the
-- CTE `inline_rows`, over the CTE `claim` of the including statement. Parameters, as both
-- number them: $5 pool id, $12 the payload size up to which a row comes back, $13 for how
-- many claimed jobs at most.
-- Inline rows: the row of each job claimed, as the child's load (load_job.sql) would read
-- it, in the same order, as one JSON array text that the supervisor passes on undecoded
-- (the child decodes it, payload included, and skips its own load round trip).
-- Read from this statement's snapshot, which predates the claim's update (a later command),
-- so the columns the claim sets are the claim's: attempts, locked_at = now(), locked_by =
-- $5 (like graphile-worker's get_job, it leaves updated_at alone). The snapshot's version is the one the claim updated only if this
-- transaction is its xmax: a job inserted after the snapshot is not seen at all, one
-- replaced in between (add_job with its key) is seen in its older version, whose xmax is
-- another transaction. Either way no row comes back and the child loads the job as before.
-- Queue names never change, and a job's queue row exists before the job does. The task's
-- identifier is left null: the supervisor knows it by task id and sends it along, so the
-- statement still reads no table but those it always read (_private_tasks is not one: a
-- lock on it, a migration's, must not stall the claim).
inline_rows as (
  select jobs.id,
    json_build_array(jobs.id, null::text, queues.queue_name, jobs.payload,
      jobs.priority, jobs.run_at, claim.attempts, jobs.max_attempts, jobs.last_error,
      jobs.created_at, jobs.updated_at, jobs.key, now(), $5::text, jobs.revision, jobs.flags
    )::text as job_row
  from (
    select claim.id, claim.attempts from claim
    where claim.kind = 'claimed' and $12::integer > 0
    order by claim.priority, claim.run_at, claim.id
    limit $13::integer
  ) as claim
  join {{schema}}._private_jobs as jobs on jobs.id = claim.id
  left join {{schema}}._private_job_queues as queues on queues.id = jobs.job_queue_id
  where octet_length(jobs.payload::text) <= $12::integer
    and jobs.xmax::text = mod(pg_current_xact_id_if_assigned()::text::bigint, 4294967296)::text
)
