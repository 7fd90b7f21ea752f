-- kongtaskd pause: record pauses of tasks (by identifier) and named queues (by name), and
-- hold the free rows of the paused queues with the pause marker so graphile-worker workers
-- skip them too (a queue whose job is running is held by the claim once that job ends).
-- Returns the pauses that were new.
with added as (
  insert into {{schema}}._kongtaskd_pauses (kind, name, paused_by)
  select w.kind, w.name, %(by)s
  from unnest(%(kinds)s::text[], %(names)s::text[]) as w(kind, name)
  on conflict (kind, name) do nothing
  returning _kongtaskd_pauses.kind, _kongtaskd_pauses.name
),
held as (
  update {{schema}}._private_job_queues as queues
  set locked_by = {{schema}}.kongtaskd_pause_marker(), locked_at = 'infinity'
  where queues.queue_name in (select added.name from added where added.kind = 'queue')
    and queues.locked_at is null
  returning queues.id
)
select added.kind, added.name, (select count(*) from held), pg_notify('kongtaskd:steer', 'pause')
from added
