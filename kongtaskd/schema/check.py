"""Is a database ready for a daemon that was told not to migrate (``migrate: false``)?"""

from __future__ import annotations

import psycopg2
from psycopg2 import errorcodes, sql
from psycopg2.extensions import connection as Connection

from kongtaskd.errors import DatabaseError, SchemaTooNewError
from kongtaskd.schema.files import load_migrations
from kongtaskd.schema.ledger import LATEST_GRAPHILE_MIGRATION

HOW_TO_FIX = "run `kongtaskd migrate` first, or set `migrate: true`"


def require_current_schema(conn: Connection, schema: str) -> None:
    """Raise a one-line error unless both ledgers are exactly where this kongtaskd needs them."""
    quoted = sql.Identifier(schema)
    latest_own = len(load_migrations("kongtaskd"))
    query = sql.SQL(
        "select (select max(id) from {s}.migrations),"
        " (select max(id) from {s}.migrations where breaking),"
        " (select max(id) from {s}._kongtaskd_migrations)"
    ).format(s=quoted)
    try:
        with conn.cursor() as cur:
            cur.execute(query)
            graphile, breaking, own = cur.fetchone()
    except psycopg2.Error as exc:
        conn.rollback()
        if exc.pgcode in (errorcodes.UNDEFINED_TABLE, errorcodes.INVALID_SCHEMA_NAME):
            raise DatabaseError(
                f"schema {schema!r} is not installed (or lacks kongtaskd's own tables): "
                f"{HOW_TO_FIX}"
            ) from None
        raise
    if (breaking or 0) > LATEST_GRAPHILE_MIGRATION:
        raise SchemaTooNewError(
            f"schema {schema!r} has breaking migration {breaking}, newer than this kongtaskd "
            f"knows ({LATEST_GRAPHILE_MIGRATION}): upgrade kongtaskd"
        )
    if (graphile or 0) < LATEST_GRAPHILE_MIGRATION or (own or 0) < latest_own:
        raise DatabaseError(
            f"schema {schema!r} is at graphile-worker migration {graphile or 0} and kongtaskd "
            f"migration {own or 0}; this kongtaskd needs {LATEST_GRAPHILE_MIGRATION} and "
            f"{latest_own}: {HOW_TO_FIX}"
        )
