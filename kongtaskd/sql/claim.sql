-- The supervisor's round trip when it has no outcome to write: settle.sql's claim alone,
-- with the same parameters (settle.py's one typed wrapper passes all fourteen; those of the
-- outcomes, $1-$4 and $9-$11, are empty or unused here) and the same answer's shape.
-- settle.sql's outcome steps cost about 0.4 ms of executor set-up per statement even when
-- they have nothing to do, which an idle daemon pays between a job's NOTIFY and its start
-- (perf/results/analysis.md): this statement leaves them out.
--
-- The claim is {{schema}}.kongtaskd_claim, the one every caller uses; its rows come back as
-- in settle.sql (`inline_rows`, read from this statement's snapshot, which predates the
-- claim's update).
with
-- commit_mode: as in settle.sql, a claim without outcomes may commit without waiting for
-- the WAL flush; here there are never outcomes.
commit_mode as (
  select set_config('synchronous_commit', 'off', true) as setting
  where $14::boolean
),
claim as (
  select claim.kind, claim.id, claim.task_id, claim.priority, claim.run_at, claim.attempts,
    claim.max_attempts
  from {{schema}}.kongtaskd_claim(
    $5::text, $6::integer[], $7::text[],
    case when (select count(*) from commit_mode) >= 0 then $8::integer end
  ) as claim
),
{{include:inline_rows}}
select claim.kind, claim.id, claim.task_id, claim.priority, claim.run_at, claim.attempts,
  claim.max_attempts, inline_rows.job_row
from claim
left join inline_rows on inline_rows.id = claim.id and claim.kind = 'claimed'
