-- kongtaskd migration 2: an index that keeps the claim's cost flat as the table grows.
--
-- graphile-worker's jobs_main_index is ordered by (priority, run_at) and only INCLUDEs
-- task_id. A claim for the tasks this daemon runs therefore steps over every available job
-- of other tasks (and, when idle, over every job scheduled for later) one heap row at a
-- time: 58-108 ms per claim with 1M jobs waiting, against 0.05 ms with 10k.
--
-- This partial index orders the available jobs by priority, then task, then run_at. The
-- claim (kongtaskd/sql/claim.sql) walks it as a loose index scan: one probe per distinct
-- (priority, task) pair that has available jobs, then a range scan of `run_at <= now()`
-- inside each pair of a task it runs. Its cost depends on how many pairs exist, not on
-- how many jobs wait.
--
-- graphile-worker never reads or writes it by name; its updates keep it current like any
-- other index. Building it takes a SHARE lock on _private_jobs, so add_job calls wait for
-- the build (0.4 s per million rows, measured); a job queue's table is usually small.
create index _kongtaskd_jobs_ready
  on {{schema}}._private_jobs (priority, task_id, run_at)
  where is_available = true;
