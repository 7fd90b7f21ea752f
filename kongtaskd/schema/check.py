"""Is a database ready for a daemon that was told not to migrate (``migrate: false``)?"""

from __future__ import annotations

import logging

import psycopg2
from psycopg2 import errorcodes, sql
from psycopg2.extensions import connection as Connection
from psycopg2.extensions import cursor as Cursor

from kongtaskd.errors import DatabaseError, SchemaTooNewError
from kongtaskd.schema.files import load_migrations, load_statements
from kongtaskd.schema.ledger import LATEST_GRAPHILE_MIGRATION
from kongtaskd.schema.waiting import ObserverFactory, StopCheck, Waiter

HOW_TO_FIX = "run `kongtaskd migrate` first, or set `migrate: true`"


def require_current_schema(
    conn: Connection,
    schema: str,
    *,
    logger: logging.Logger | None = None,
    lock_timeout: float | None = None,
    should_stop: StopCheck | None = None,
    observer: ObserverFactory | None = None,
) -> None:
    """Raise a one-line error unless both ledgers are exactly where this kongtaskd needs them.

    Reading the ledgers can wait for a lock (a migration elsewhere): it waits the way
    :func:`kongtaskd.schema.ledger.migrate` does, with the same keyword arguments.
    """
    quoted = sql.Identifier(schema)
    latest_own = len(load_migrations("kongtaskd"))
    query = sql.SQL(
        "select (select max(id) from {s}.migrations),"
        " (select max(id) from {s}.migrations where breaking),"
        " (select max(id) from {s}._kongtaskd_migrations)"
    ).format(s=quoted)

    def read(cur: Cursor) -> tuple[int | None, int | None, int | None]:
        cur.execute(query)
        row: tuple[int | None, int | None, int | None] = cur.fetchone()
        return row

    waiter = Waiter(
        conn,
        load_statements(),
        where=f"schema {schema!r}",
        log=logger or logging.getLogger("kongtaskd.schema"),
        lock_timeout=lock_timeout,
        should_stop=should_stop,
        observer=observer,
    )
    try:
        with waiter:
            graphile, breaking, own = waiter.transaction("checking the schema's version", read)
    except psycopg2.Error as exc:
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
