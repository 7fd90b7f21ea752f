-- kongtaskd migration 7: cancel requests for jobs a worker holds (`kongtaskd jobs cancel`,
-- kongtaskd.cancel_job; kongtaskd/cancel.py).
--
-- A job nobody holds is cancelled in one statement on its own row (attempts = max_attempts,
-- last_error = 'cancelled by ...'): no record is needed. A job somebody holds is marked the
-- same way AND gets a row here, for two reasons:
--   * the daemon holding it learns of the cancel from the NOTIFY ('kongtaskd:cancel') or,
--     if it was reconnecting when the NOTIFY went out, by reading this table when it is back
--     (and at every heartbeat); the record is in the database, not only in a message;
--   * whoever lets go of the job afterwards (the daemon writing the handler's outcome, a
--     hand-back that refunds the attempt, the sweep of a dead pool, graphile-worker's own
--     fail_job or its four-hour sweep) would otherwise make it runnable again or overwrite
--     its last_error. The trigger below runs on exactly that update, the one that unlocks
--     the row, and makes it the permanent failure with the cancel message, consuming the
--     record. A job deleted instead (its handler succeeded before the cancel reached it)
--     leaves a record behind; the next cancel statement deletes such leftovers.
create table {{schema}}._kongtaskd_cancels (
  job_id bigint primary key,
  -- 'cancelled by <who> at <time>': the job's last_error once it is let go of.
  message text not null,
  -- Who held the job when the cancel was made (a kongtaskd pool id or a graphile-worker
  -- worker id), for the record.
  locked_by text,
  requested_at timestamptz not null default now()
);
-- Like graphile-worker's tables: private to the owner, no policies.
alter table {{schema}}._kongtaskd_cancels enable row level security;

create function {{schema}}._kongtaskd_cancel_guard() returns trigger
language plpgsql volatile as $$
declare
  cancel_message text;
begin
  delete from {{schema}}._kongtaskd_cancels as cancels
  where cancels.job_id = old.id
  returning cancels.message into cancel_message;
  if cancel_message is not null then
    new.attempts := greatest(new.attempts, new.max_attempts);
    new.last_error := cancel_message;
  end if;
  return new;
end;
$$;

-- Only the unlocking update fires it (an outcome, a hand-back, a sweep): claims, and the
-- cancel's own update of a held row, keep the lock and never pay for the look-up.
create trigger _kongtaskd_cancel_guard
  before update on {{schema}}._private_jobs
  for each row
  when (old.locked_by is not null and new.locked_by is null)
  execute function {{schema}}._kongtaskd_cancel_guard();
