-- The pauses in force (kongtaskd status), and whether each names something known yet.
select pauses.kind, pauses.name, pauses.paused_at, pauses.paused_by,
  case pauses.kind
    when 'task' then exists (
      select from {{schema}}._private_tasks as t where t.identifier = pauses.name)
    else exists (
      select from {{schema}}._private_job_queues as q where q.queue_name = pauses.name)
  end as known
from {{schema}}._kongtaskd_pauses as pauses
order by pauses.kind desc, pauses.name
