-- The task identifiers, for the /jobs filter's choices: a small table (one row per
-- identifier), read in name order, at most `limit`.
select tasks.identifier from {{schema}}._private_tasks as tasks
order by tasks.identifier
limit %(limit)s
