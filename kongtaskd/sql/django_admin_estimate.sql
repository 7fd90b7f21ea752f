-- kongtaskd.contrib.django admin: the planner's row estimate of the jobs table (what ANALYZE
-- and autovacuum last saw), for the changelist's paginator instead of counting rows. -1 (never
-- analysed) or null (no table) is "unknown".
select cls.reltuples::bigint
from pg_catalog.pg_class as cls
where cls.oid = to_regclass(%(table)s)
