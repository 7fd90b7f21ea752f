-- kongtaskd migration 5: the data behind the dashboard (issue 14): per-minute statistics,
-- an opt-in history of completed jobs, and what a daemon publishes about itself.
--
-- All three are kongtaskd's own (names start with _kongtaskd_, so graphile-worker never
-- touches them and schema comparisons leave them out) and count kongtaskd's work only: a
-- graphile-worker worker sharing the database writes none of them. docs/statistics.md
-- describes every column, who writes it, and how long rows are kept.

-- Per task, per minute: outcomes written by kongtaskd supervisors. One row per (minute,
-- task), shared by every daemon: each supervisor adds what it wrote since its previous
-- heartbeat (an upsert that adds, one statement per heartbeat, never one per job).
-- succeeded: completions; retried: failed attempts that will run again; failed: failed
-- attempts that used the job's last attempt (it is now permanently failed).
-- run_seconds_sum and histogram cover every attempt whose duration is known (succeeded and
-- failed handlers; not a job whose child died or was killed). histogram[i] counts attempts
-- that took at most the i-th bound of kongtaskd.tally.BUCKETS (the last one: longer).
create table {{schema}}._kongtaskd_stats (
  minute timestamptz not null,
  task_identifier text not null,
  succeeded bigint not null default 0,
  failed bigint not null default 0,
  retried bigint not null default 0,
  run_seconds_sum double precision not null default 0,
  histogram bigint[] not null,
  primary key (minute, task_identifier)
);
alter table {{schema}}._kongtaskd_stats enable row level security;

-- Completed jobs, written by the supervisor's settle statement in the same statement as the
-- delete, only by daemons with keep_completed set; pruned after keep_completed. graphile-
-- worker deletes a job on success: this is the only trace that it ran. No primary key: the
-- settle statement must never fail on a row it cannot insert.
create table {{schema}}._kongtaskd_completed_jobs (
  id bigint not null,
  task_identifier text not null,
  queue_name text,
  key text,
  attempts smallint not null,
  created_at timestamptz not null,
  started_at timestamptz,
  finished_at timestamptz not null,
  run_seconds double precision,
  pool_id text not null
);
alter table {{schema}}._kongtaskd_completed_jobs enable row level security;
-- "Did job 4711 run?" (the job page and the job search) ...
create index _kongtaskd_completed_jobs_id on {{schema}}._kongtaskd_completed_jobs (id);
-- ... and pruning, oldest first, in bounded batches; also the newest-first listing.
create index _kongtaskd_completed_jobs_finished
  on {{schema}}._kongtaskd_completed_jobs (finished_at);

-- What the Daemons and Cron pages need and the other heartbeat columns do not hold: the
-- children (index, pid, state, job id, task, since), the configuration summary (no secrets)
-- and each crontab item's next run. Written by the heartbeat, bounded in size (see
-- kongtaskd/heartbeat.py); null in rows of older daemons.
alter table {{schema}}._kongtaskd_heartbeats
  add column details jsonb;
