-- The PostgreSQL settings that shape a queue benchmark, for the report.
select name, setting, unit
from pg_settings
where name in (
  'server_version', 'shared_buffers', 'work_mem', 'maintenance_work_mem',
  'effective_cache_size', 'max_connections', 'synchronous_commit', 'fsync',
  'full_page_writes', 'wal_level', 'wal_buffers', 'commit_delay', 'max_wal_size',
  'checkpoint_timeout', 'random_page_cost', 'jit', 'autovacuum', 'huge_pages'
)
order by name
