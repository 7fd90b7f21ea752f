-- kongtaskd.run_jobs (kongtaskd/inline.py): the ids of the tasks it was given. Read only,
-- unlike register_tasks.sql: a task without a row has no jobs to run, and an insert made
-- inside a caller's open transaction would block every other session registering the
-- same name until that transaction ends.
select tasks.id from {{schema}}._private_tasks as tasks
where tasks.identifier = any(%(identifiers)s::text[])
