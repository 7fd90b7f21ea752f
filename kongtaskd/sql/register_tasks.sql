-- Make sure every task identifier $1 has a row in _private_tasks and return (id, identifier)
-- for all of them. Only missing names are inserted (the not-exists check before
-- ON CONFLICT), so identity values are not burnt on every start (graphile-worker#619).
with wanted as (
  select distinct name.identifier from unnest($1::text[]) as name(identifier)
),
inserted as (
  insert into {{schema}}._private_tasks (identifier)
  select wanted.identifier from wanted
  where not exists (
    select 1 from {{schema}}._private_tasks as tasks where tasks.identifier = wanted.identifier
  )
  on conflict do nothing
  returning id, identifier
)
select inserted.id, inserted.identifier from inserted
union all
select tasks.id, tasks.identifier
from {{schema}}._private_tasks as tasks
join wanted on wanted.identifier = tasks.identifier
