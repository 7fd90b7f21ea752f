-- kongtaskd migration 4: what the pool's last reload did, and whether it is degraded.
--
-- A reload (SIGHUP) whose handler code does not import is refused: the daemon goes on with
-- the children it has. `kongtaskd status` must show that, so the heartbeat row carries it:
-- last_reload_at (when the last reload finished, either way), last_reload_error (null when
-- it succeeded: the one-line import error otherwise) and degraded (null when healthy: why
-- the daemon cannot fork replacement children, e.g. its template process died and the code
-- on disk no longer imports). All nullable: rows of older daemons just leave them empty.
alter table {{schema}}._kongtaskd_heartbeats
  add column last_reload_at timestamptz,
  add column last_reload_error text,
  add column degraded text;
