-- This connection's backend, whose parent is the postmaster (PostgreSQL's CPU from /proc).
select pg_backend_pid()
