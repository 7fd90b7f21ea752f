-- kongtaskd/stats.py per_task_minutes: the statistics rows of [since, until), of one task or
-- all (null), oldest first. A range scan of _kongtaskd_stats' primary key (minute, task),
-- bounded by the range and by %(limit)s.
select stats.minute, stats.task_identifier, stats.succeeded, stats.failed, stats.retried,
  stats.run_seconds_sum, stats.histogram
from {{schema}}._kongtaskd_stats as stats
where stats.minute >= %(since)s
  and (%(until)s::timestamptz is null or stats.minute < %(until)s::timestamptz)
  and (%(task)s::text is null or stats.task_identifier = %(task)s::text)
order by stats.minute, stats.task_identifier
limit %(limit)s
