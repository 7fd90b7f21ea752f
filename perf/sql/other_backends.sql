-- The other sessions on this database (the daemons' supervisors and children), whose CPU
-- is read from /proc/PID/stat.
select pid from pg_stat_activity
where datname = current_database() and pid <> pg_backend_pid() and backend_type = 'client backend'
