-- Statements of the migration ledger protocol (kongtaskd/schema/ledger.py).
-- Each starts at a "-- name:" line. {{schema}} is replaced by the quoted schema name;
-- values are always bound as parameters.

-- name: read_graphile_ledger
-- One round trip, as graphile-worker does it: fails with 42P01 when there is no ledger yet
-- and with 42703 when the ledger predates the "breaking" column (graphile-worker before
-- 0.16 and its bridge releases).
select
  current_setting('server_version_num')::integer as server_version_num,
  (select max(id) from {{schema}}.migrations) as latest,
  (select max(id) from {{schema}}.migrations where breaking is true) as latest_breaking;

-- name: create_schema
-- The bootstrap is graphile-worker's, so either program may create the ledger. It is split
-- into three statements (one transaction) to tell which right a permission error is about.
create schema if not exists {{schema}};

-- name: create_graphile_ledger
create table if not exists {{schema}}.migrations (
  id int primary key,
  ts timestamptz default now() not null
);

-- name: add_breaking_column
alter table {{schema}}.migrations add column if not exists breaking boolean not null default false;

-- name: mark_breaking
-- Ledgers written before the column existed get their flags filled in.
update {{schema}}.migrations set breaking = true where id = any(%(ids)s::int[]);

-- name: ledger_in_use
-- An uncommitted insert keeps its RowExclusiveLock on the ledger until commit: seen from
-- another session, a migration in progress. (pg_locks needs no special rights.)
select exists (
  select 1
  from pg_locks l
  join pg_class c on c.oid = l.relation
  join pg_namespace n on n.oid = c.relnamespace
  where l.locktype = 'relation' and l.granted and l.mode = 'RowExclusiveLock'
    and n.nspname = %(schema)s and c.relname = 'migrations'
    and l.pid <> pg_backend_pid()
) as in_use;

-- name: newer_graphile_migrations
select id, breaking from {{schema}}.migrations where id > %(latest)s order by id;

-- name: insert_graphile_migration
-- Runs first in each migration's transaction: if another migrator holds or has committed
-- this id, we block on it and then fail with a unique violation, which means "done".
insert into {{schema}}.migrations (id, breaking) values (%(id)s, %(breaking)s);

-- name: notify_migrate
-- Running graphile-worker pools shut down when they see a breaking one.
select pg_notify('worker:migrate', %(payload)s);

-- name: read_kongtaskd_ledger
select max(id) as latest from {{schema}}._kongtaskd_migrations;

-- name: bootstrap_kongtaskd_ledger
create table if not exists {{schema}}._kongtaskd_migrations (
  id int primary key,
  ts timestamptz not null default now()
);

-- name: insert_kongtaskd_migration
insert into {{schema}}._kongtaskd_migrations (id) values (%(id)s);

-- name: set_lock_timeout
-- First in every migrator transaction: a short lock_timeout keeps a migration that waits
-- for a lock from holding up the application behind it in the lock queue (ledger.py
-- retries the transaction). A setting, not a value: bound as text like '1000ms'.
select set_config('lock_timeout', %(timeout)s, true);

-- name: lock_wait
-- Run on a second connection: what the migrating backend waits for, and who holds it up.
-- No rows when it waits for no lock. pg_blocking_pids also lists sessions queued ahead
-- of it; state and query_start are null for other roles' sessions without pg_read_all_stats.
select
  w.locktype,
  w.mode,
  w.relation::regclass::text as relation,
  b.pid,
  a.application_name,
  a.state,
  a.xact_start,
  a.query_start
from (
  select locktype, mode, relation
  from pg_locks
  where pid = %(pid)s and not granted
  limit 1
) as w
cross join lateral unnest(pg_blocking_pids(%(pid)s)) as b(pid)
left join pg_stat_activity a on a.pid = b.pid
order by b.pid;
