-- Add this daemon's statistics since its previous heartbeat to _kongtaskd_stats (kongtaskd
-- migration 5): one statement per heartbeat, never one per job. Rows are per (minute,
-- task) and shared by every daemon, so each count is added to what is there. The rows come
-- sorted by (minute, task) (kongtaskd/tally.py), so two daemons lock shared rows in the
-- same order: one may wait for the other's short statement, neither deadlocks.
-- $1 jsonb: [{minute (Unix seconds), task, succeeded, failed, retried, seconds, histogram}]
-- Returns how many rows it inserted or updated.
with added as (
  insert into {{schema}}._kongtaskd_stats as stats
    (minute, task_identifier, succeeded, failed, retried, run_seconds_sum, histogram)
  select to_timestamp(row.minute), row.task, row.succeeded, row.failed, row.retried,
    row.seconds, row.histogram
  from jsonb_to_recordset($1::jsonb) as row(
    minute double precision, task text, succeeded bigint, failed bigint, retried bigint,
    seconds double precision, histogram bigint[]
  )
  order by row.minute, row.task
  on conflict (minute, task_identifier) do update
  set succeeded = stats.succeeded + excluded.succeeded,
      failed = stats.failed + excluded.failed,
      retried = stats.retried + excluded.retried,
      run_seconds_sum = stats.run_seconds_sum + excluded.run_seconds_sum,
      -- Bucket by bucket; a row written with fewer buckets (none today) counts as zeros.
      histogram = array(
        select coalesce(mine, 0) + coalesce(theirs, 0)
        from unnest(stats.histogram, excluded.histogram) with ordinality
          as bucket(mine, theirs, place)
        order by bucket.place
      )
  returning 1
)
select count(*) from added
