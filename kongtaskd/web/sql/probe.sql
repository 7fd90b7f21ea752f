-- What this database holds, asked once per refresh: the clock, and which kongtaskd objects
-- exist. A schema only graphile-worker migrated has no heartbeat table and no claim index;
-- the statistics and history tables come with kongtaskd migration 000005 (read through
-- kongtaskd.stats); migration 000004 adds the reload columns to the heartbeat table. Pages adapt to what is there.
select
  now() as now,
  to_regclass(%(heartbeats)s) is not null as heartbeats,
  to_regclass(%(ready_index)s) is not null as ready_index,
  to_regclass(%(stats)s) is not null as stats,
  to_regclass(%(history)s) is not null as history,
  exists (
    select 1 from pg_catalog.pg_attribute
    where attrelid = to_regclass(%(heartbeats)s) and attname = 'last_reload_at'
      and not attisdropped
  ) as reload_columns
