-- /jobs: one page of jobs, bounded whatever the table's size. The page looks at a window of
-- at most `window` jobs: the newest ones with id <= `top` (null: the newest of all), read
-- backwards along the primary key. Within it the filters apply (task, queue, state, error
-- as an ILIKE pattern: null = any; task and queue names are turned into their ids once),
-- the rows are sorted by `sort` (id, run_at, priority, attempts; `descending`) with id as
-- the tie-break, and the keyset (after_value, after_id) continues a sort where the
-- previous page stopped: never an OFFSET. `limit` rows come back (the caller asks one
-- more than it shows, to know there is a next page), each with the number of matches in
-- the window and the window's size and lowest id, so the page can say "12 match among the
-- newest 20,000 jobs" and link to the next window. Names are joined to the page's rows only.
with newest as (
  select jobs.id, jobs.task_id, jobs.job_queue_id, jobs.priority, jobs.run_at, jobs.attempts,
    jobs.max_attempts, jobs.last_error, jobs.created_at, jobs.key, jobs.locked_at,
    jobs.locked_by
  from {{schema}}._private_jobs as jobs
  where %(top)s::bigint is null or jobs.id <= %(top)s::bigint
  order by jobs.id desc
  limit %(window)s
),
bounds as (select count(*) as window_rows, min(newest.id) as window_low from newest),
matching as (
  select newest.*,
    case
      when newest.locked_at is not null then 'running'
      when newest.attempts >= newest.max_attempts then 'failed'
      when newest.attempts > 0 and newest.last_error is not null then 'retrying'
      when newest.run_at > now() then 'scheduled'
      else 'ready'
    end as state,
    case %(sort)s::text
      when 'run_at' then extract(epoch from newest.run_at)::float8
      when 'priority' then newest.priority::float8
      when 'attempts' then newest.attempts::float8
      else newest.id::float8
    end as sort_value
  from newest
  where (
      %(task)s::text is null
      or newest.task_id = (
        select tasks.id from {{schema}}._private_tasks as tasks
        where tasks.identifier = %(task)s::text
      )
    )
    and (
      %(queue)s::text is null
      or newest.job_queue_id = (
        select queues.id from {{schema}}._private_job_queues as queues
        where queues.queue_name = %(queue)s::text
      )
    )
    and (%(error)s::text is null or newest.last_error ilike %(error)s::text)
),
filtered as (
  select matching.*, count(*) over () as matches
  from matching
  where %(state)s::text is null or matching.state = %(state)s::text
),
page as (
  select filtered.*
  from filtered
  where %(after_id)s::bigint is null
    or (
      %(descending)s
      and (filtered.sort_value, filtered.id) < (%(after_value)s::float8, %(after_id)s::bigint)
    )
    or (
      not %(descending)s
      and (filtered.sort_value, filtered.id) > (%(after_value)s::float8, %(after_id)s::bigint)
    )
  order by
    case when %(descending)s then filtered.sort_value end desc,
    case when %(descending)s then filtered.id end desc,
    case when not %(descending)s then filtered.sort_value end,
    case when not %(descending)s then filtered.id end
  limit %(limit)s
)
select page.id, tasks.identifier as task_identifier, queues.queue_name, page.state,
  page.priority, page.run_at, page.attempts, page.max_attempts,
  left(page.last_error, 300) as last_error, page.created_at, page.key,
  page.locked_by, page.sort_value, page.matches,
  bounds.window_rows, bounds.window_low
from bounds
left join page on true
left join {{schema}}._private_tasks as tasks on tasks.id = page.task_id
left join {{schema}}._private_job_queues as queues on queues.id = page.job_queue_id
order by
  case when %(descending)s then page.sort_value end desc,
  case when %(descending)s then page.id end desc,
  case when not %(descending)s then page.sort_value end,
  case when not %(descending)s then page.id end
