-- /cron: graphile-worker's _private_known_crontabs (one row per crontab item identifier
-- any worker ever ran, with its last execution), keyset-paginated by identifier.
select crons.identifier, crons.known_since, crons.last_execution
from {{schema}}._private_known_crontabs as crons
where crons.identifier > %(after)s::text
order by crons.identifier
limit %(limit)s
