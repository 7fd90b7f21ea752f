-- Delete up to $2 statistics rows older than $1 seconds (stats_retention), oldest first, by
-- the primary key's leading column. Bounded, so a backlog never holds locks for long: the
-- heartbeat runs it again on the next loop turn while it comes back full.
-- Returns how many rows it deleted.
with doomed as (
  select stats.ctid
  from {{schema}}._kongtaskd_stats as stats
  where stats.minute < now() - $1 * interval '1 second'
  order by stats.minute
  limit $2
),
deleted as (
  delete from {{schema}}._kongtaskd_stats as stats
  where stats.ctid = any(array(select doomed.ctid from doomed))
  returning 1
)
select count(*) from deleted
