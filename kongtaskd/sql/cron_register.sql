-- Identifiers seen for the first time become known as of the start time, with no
-- last_execution: they are never backfilled to before that moment. DO NOTHING because
-- another daemon may register the same identifier at the same moment; its row is as good.
insert into {{schema}}._private_known_crontabs (identifier, known_since)
select identifier, %(since)s::timestamptz
from unnest(%(identifiers)s::text[]) as unknown (identifier)
on conflict (identifier) do nothing
