-- What the fleet already knows about our crontab identifiers: when each was first seen and
-- the last tick anyone scheduled for it. Backfill starts after coalesce(last_execution,
-- known_since), as graphile-worker's does.
select identifier, known_since, last_execution
from {{schema}}._private_known_crontabs
where identifier = any(%(identifiers)s::text[])
