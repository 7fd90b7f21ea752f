-- kongtaskd resume: drop pauses, and release the queue rows the pause marker holds. A queue
-- row held by a running job (any other locked_by) is left alone: its job unlocks it.
-- Returns the pauses that were removed.
with removed as (
  delete from {{schema}}._kongtaskd_pauses as pauses
  where (pauses.kind, pauses.name) in (
    select w.kind, w.name from unnest(%(kinds)s::text[], %(names)s::text[]) as w(kind, name))
  returning pauses.kind, pauses.name
),
released as (
  update {{schema}}._private_job_queues as queues
  set locked_by = null, locked_at = null
  where queues.queue_name in (select removed.name from removed where removed.kind = 'queue')
    and queues.locked_by = {{schema}}.kongtaskd_pause_marker()
  returning queues.id
)
select removed.kind, removed.name, (select count(*) from released),
  pg_notify('kongtaskd:steer', 'resume')
from removed
