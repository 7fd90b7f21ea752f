"""Which database object an enqueue call was given, and how to run one statement on it.

``add_job`` and friends take whatever connection the application already holds, so that
the job joins the application's own transaction: psycopg2 and psycopg 3 connections and
cursors, SQLAlchemy connections and sessions, Django connections, asyncpg connections. The
statement and its argument list are the same for all of them (``sql/add_job.sql`` with
``%(name)s`` placeholders); a driver only changes

* the paramstyle: psycopg2, psycopg 3, Django and SQLAlchemy over either take the text as
  it is with a dict; asyncpg (directly or under SQLAlchemy) takes ``$n`` and a list, made
  here by :func:`to_numeric`;
* how the rows come back, which is normalised to one ``dict`` per row. JSON never crosses
  a driver's own codecs: the statements take the payload as ``text`` and return ``json``
  columns as ``text`` (an asyncpg app that registered a json codec, or a psycopg 3 app with
  its own loaders, gets the same rows as everyone else), and :mod:`kongtaskd.enqueue`
  decodes them once.

Detection is by class name and top-level package over ``type(obj).__mro__``, never by
``isinstance`` against a driver's classes: importing psycopg, SQLAlchemy, asyncpg or Django
just to ask would cost every user the import time of drivers they do not use
(tests/unit/test_imports.py guards that). psycopg2 is kongtaskd's own dependency and is
checked directly.

Nothing here commits, rolls back or opens a transaction on a caller's object; a DSN string
is the only case where a connection is opened (and committed and closed) here.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from psycopg2.extensions import connection as Psycopg2Connection
from psycopg2.extensions import cursor as Psycopg2Cursor

__all__ = [
    "ACCEPTED_ASYNC",
    "ACCEPTED_SYNC",
    "AsyncFetch",
    "Fetch",
    "async_kind",
    "async_target",
    "quote_identifier",
    "sync_kind",
    "sync_target",
    "to_numeric",
]

#: Runs one statement (``%(name)s`` placeholders) with its parameters; returns its rows.
Fetch = Callable[[str, Mapping[str, Any]], list[dict[str, Any]]]
AsyncFetch = Callable[[str, Mapping[str, Any]], Awaitable[list[dict[str, Any]]]]

#: What the TypeError for an unsupported object lists (sync and async API).
ACCEPTED_SYNC = (
    "a psycopg2 or psycopg 3 connection or cursor, a SQLAlchemy Connection or Session, "
    "a Django connection, or a DSN string"
)
ACCEPTED_ASYNC = (
    "a psycopg 3 AsyncConnection or AsyncCursor, an asyncpg Connection (or one acquired "
    "from a pool), or a SQLAlchemy AsyncConnection or AsyncSession"
)

# (top-level package, class name) pairs, matched against the object's MRO.
_PSYCOPG_SYNC = {("psycopg", "Connection"), ("psycopg", "Cursor")}
_PSYCOPG_ASYNC = {("psycopg", "AsyncConnection"), ("psycopg", "AsyncCursor")}
_ASYNCPG = {("asyncpg", "Connection"), ("asyncpg", "PoolConnectionProxy")}
_SA_CONNECTION = ("sqlalchemy", "Connection")
_SA_SESSION = ("sqlalchemy", "Session")
_SA_SCOPED = ("sqlalchemy", "scoped_session")
_SA_ASYNC_CONNECTION = ("sqlalchemy", "AsyncConnection")
_SA_ASYNC_SESSION = ("sqlalchemy", "AsyncSession")
_SA_ASYNC_SCOPED = ("sqlalchemy", "async_scoped_session")
_DJANGO = {("django", "BaseDatabaseWrapper"), ("django", "ConnectionProxy")}

# Objects people pass by mistake, with what to pass instead.
_HINTS = {
    ("sqlalchemy", "Engine"): "an Engine has no transaction: pass engine.begin()'s Connection "
    "or a Session",
    ("sqlalchemy", "AsyncEngine"): "an AsyncEngine has no transaction: pass engine.begin()'s "
    "AsyncConnection or an AsyncSession",
    ("asyncpg", "Pool"): "a pool has no transaction: pass a connection from pool.acquire()",
    ("psycopg_pool", "ConnectionPool"): "a pool has no transaction: pass a connection from "
    "pool.connection()",
    ("psycopg_pool", "AsyncConnectionPool"): "a pool has no transaction: pass a connection "
    "from pool.connection()",
}


def _kinds(obj: object) -> set[tuple[str, str]]:
    return {(cls.__module__.partition(".")[0], cls.__name__) for cls in type(obj).__mro__}


def quote_identifier(name: str) -> str:
    """``name`` as a double-quoted SQL identifier (what libpq's PQescapeIdentifier makes).

    Needs no connection, so it serves every driver; identifiers have no backslash escapes,
    so doubling the quote character is the whole rule.
    """
    return '"' + name.replace('"', '""') + '"'


_PLACEHOLDER = re.compile(r"%\((\w+)\)s|%%")


def to_numeric(text: str, params: Mapping[str, Any]) -> tuple[str, list[Any]]:
    """A ``%(name)s`` statement as asyncpg's ``$n`` text and argument list.

    Each name gets one number however often it occurs; ``%%`` (psycopg's escaped percent
    sign, e.g. inside a quoted schema name) becomes ``%``. A name missing from ``params`` is
    a bug in a statement file, so it raises ``KeyError``.
    """
    numbers: dict[str, int] = {}
    values: list[Any] = []

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name is None:
            return "%"
        if name not in numbers:
            values.append(params[name])
            numbers[name] = len(values)
        return f"${numbers[name]}"

    return _PLACEHOLDER.sub(replace, text), values


def _rows(names: Sequence[str], fetched: Sequence[Any]) -> list[dict[str, Any]]:
    # A caller's cursor may come with a dict/namedtuple row factory; both shapes work.
    return [
        dict(row) if isinstance(row, Mapping) else dict(zip(names, row, strict=True))
        for row in fetched
    ]


def _names(description: Any) -> list[str]:
    return [column[0] for column in description or ()]


def _unsupported(obj: object, accepted: str, other_api: str | None) -> TypeError:
    kinds = _kinds(obj)
    hint = next((text for kind, text in _HINTS.items() if kind in kinds), None)
    if other_api is not None:
        hint = other_api
    message = f"conn_or_dsn must be {accepted}, got {type(obj).__module__}.{type(obj).__name__}"
    return TypeError(f"{message} ({hint})" if hint else message)


# --- sync ---------------------------------------------------------------------------------


def _is_async(obj: object) -> bool:
    kinds = _kinds(obj)
    return bool(
        kinds & (_PSYCOPG_ASYNC | _ASYNCPG)
        or {_SA_ASYNC_CONNECTION, _SA_ASYNC_SESSION, _SA_ASYNC_SCOPED} & kinds
    )


def _psycopg2_fetch(conn: Psycopg2Connection) -> Fetch:
    def fetch(text: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        # A fresh cursor on the caller's connection: same transaction, and a cursor the
        # caller passed keeps its own result set.
        with conn.cursor() as cur:
            cur.execute(text, params)
            return _rows(_names(cur.description), cur.fetchall() if cur.description else [])

    return fetch


def _psycopg_fetch(conn: Any) -> Fetch:
    from psycopg.rows import tuple_row  # the app uses psycopg 3: importing it is free

    def fetch(text: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        with conn.cursor(row_factory=tuple_row) as cur:
            cur.execute(text, params)
            return _rows(_names(cur.description), cur.fetchall() if cur.description else [])

    return fetch


def _sqlalchemy_paramstyle(dialect: Any) -> str:
    if dialect.name != "postgresql":
        raise TypeError(f"conn_or_dsn is a SQLAlchemy connection to {dialect.name}, not PostgreSQL")
    style = str(dialect.paramstyle)
    if style not in ("pyformat", "numeric_dollar"):
        raise TypeError(
            f"conn_or_dsn uses SQLAlchemy's {dialect.driver} driver, which kongtaskd does not "
            "support (psycopg2, psycopg and asyncpg are)"
        )
    return style


def _sqlalchemy_fetch(conn: Any) -> Fetch:
    style = _sqlalchemy_paramstyle(conn.dialect)

    def fetch(text: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        # exec_driver_sql goes through SQLAlchemy's own transaction (autobegin), so the
        # statement is part of what conn.commit() / session.commit() commits.
        if style == "numeric_dollar":
            numeric, values = to_numeric(text, params)
            result = conn.exec_driver_sql(numeric, tuple(values))
        else:
            result = conn.exec_driver_sql(text, dict(params))
        if not result.returns_rows:
            return []
        return _rows(list(result.keys()), result.all())

    return fetch


def _django_fetch(conn: Any) -> Fetch:
    if getattr(conn, "vendor", None) != "postgresql":
        raise TypeError(
            f"conn_or_dsn is the Django database {getattr(conn, 'alias', '?')!r}, whose "
            f"vendor is {getattr(conn, 'vendor', '?')}, not postgresql"
        )

    def fetch(text: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        # Django's cursor: its connection handling, its atomic() blocks, its error wrapping.
        with conn.cursor() as cur:
            cur.execute(text, dict(params))
            return _rows(_names(cur.description), cur.fetchall() if cur.description else [])

    return fetch


def _django_alias(using: str) -> Any:
    from django.db import connections  # only reached when the caller named a Django alias

    return connections[using]


@contextmanager
def sync_target(conn_or_dsn: object, using: str | None = None) -> Iterator[Fetch]:
    """A :data:`Fetch` on the caller's transaction, or on a DSN's own committed connection.

    Raises ``TypeError`` naming what is accepted when ``conn_or_dsn`` is none of those.
    """
    if using is not None:
        if conn_or_dsn is not None:
            raise TypeError("pass either conn_or_dsn or using=, not both (conn_or_dsn=None)")
        if not isinstance(using, str):
            raise TypeError(f"using must be a Django database alias, got {type(using).__name__}")
        yield _django_fetch(_django_alias(using))
        return
    if isinstance(conn_or_dsn, str):
        from kongtaskd.dsn import connect

        conn = connect(conn_or_dsn)
        try:
            # ``with conn`` commits when the block succeeds and rolls back when it raises.
            with conn:
                yield _psycopg2_fetch(conn)
        finally:
            conn.close()
        return
    yield _sync_fetch(conn_or_dsn)


def sync_kind(obj: object) -> str:
    """Which sync driver ``obj`` belongs to, without touching it; ``TypeError`` if none."""
    if isinstance(obj, Psycopg2Connection):
        return "psycopg2"
    if isinstance(obj, Psycopg2Cursor):
        return "psycopg2-cursor"
    kinds = _kinds(obj)
    if ("psycopg", "Connection") in kinds:
        return "psycopg"
    if kinds & _PSYCOPG_SYNC:
        return "psycopg-cursor"
    if _SA_CONNECTION in kinds:
        return "sqlalchemy"
    if _SA_SESSION in kinds:
        return "sqlalchemy-session"
    if _SA_SCOPED in kinds:
        return "sqlalchemy-scoped"
    if kinds & _DJANGO:
        return "django"
    other = "it is async: use await kongtaskd.add_job_async(...)" if _is_async(obj) else None
    raise _unsupported(obj, ACCEPTED_SYNC, other)


def _sync_fetch(obj: Any) -> Fetch:
    kind = sync_kind(obj)
    if kind == "psycopg2":
        return _psycopg2_fetch(obj)
    if kind == "psycopg2-cursor":
        return _psycopg2_fetch(obj.connection)
    if kind == "psycopg":
        return _psycopg_fetch(obj)
    if kind == "psycopg-cursor":
        return _psycopg_fetch(obj.connection)
    if kind == "sqlalchemy":
        return _sqlalchemy_fetch(obj)
    if kind == "sqlalchemy-session":
        # The session's connection for its default bind, in its current transaction
        # (begun here if none is: autobegin, as any session.execute would).
        return _sqlalchemy_fetch(obj.connection())
    if kind == "sqlalchemy-scoped":
        return _sqlalchemy_fetch(obj().connection())
    return _django_fetch(obj)


# --- async --------------------------------------------------------------------------------


def _psycopg_async_fetch(conn: Any) -> AsyncFetch:
    from psycopg.rows import tuple_row

    async def fetch(text: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        async with conn.cursor(row_factory=tuple_row) as cur:
            await cur.execute(text, params)
            rows = await cur.fetchall() if cur.description else []
            return _rows(_names(cur.description), rows)

    return fetch


def _asyncpg_fetch(conn: Any) -> AsyncFetch:
    async def fetch(text: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        numeric, values = to_numeric(text, params)
        records = await conn.fetch(numeric, *values)
        return [dict(record.items()) for record in records]

    return fetch


def _sqlalchemy_async_fetch(conn: Any) -> AsyncFetch:
    style = _sqlalchemy_paramstyle(conn.dialect)

    async def fetch(text: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        if style == "numeric_dollar":
            numeric, values = to_numeric(text, params)
            result = await conn.exec_driver_sql(numeric, tuple(values))
        else:
            result = await conn.exec_driver_sql(text, dict(params))
        if not result.returns_rows:
            return []
        return _rows(list(result.keys()), result.all())

    return fetch


def async_kind(obj: object) -> str:
    """Which async driver ``obj`` belongs to, without touching it; ``TypeError`` if none."""
    kinds = _kinds(obj)
    if ("psycopg", "AsyncConnection") in kinds:
        return "psycopg"
    if ("psycopg", "AsyncCursor") in kinds:
        return "psycopg-cursor"
    if kinds & _ASYNCPG:
        return "asyncpg"
    if _SA_ASYNC_CONNECTION in kinds:
        return "sqlalchemy"
    if _SA_ASYNC_SESSION in kinds:
        return "sqlalchemy-session"
    if _SA_ASYNC_SCOPED in kinds:
        return "sqlalchemy-scoped"
    sync = isinstance(obj, (str, Psycopg2Connection, Psycopg2Cursor)) or bool(
        kinds & (_PSYCOPG_SYNC | _DJANGO | {_SA_CONNECTION, _SA_SESSION, _SA_SCOPED})
    )
    other = "it is synchronous: use kongtaskd.add_job(...)" if sync else None
    raise _unsupported(obj, ACCEPTED_ASYNC, other)


@asynccontextmanager
async def async_target(conn: Any) -> AsyncIterator[AsyncFetch]:
    """An :data:`AsyncFetch` on the caller's transaction; ``TypeError`` for anything else."""
    kind = async_kind(conn)
    if kind == "psycopg":
        yield _psycopg_async_fetch(conn)
    elif kind == "psycopg-cursor":
        yield _psycopg_async_fetch(conn.connection)
    elif kind == "asyncpg":
        yield _asyncpg_fetch(conn)
    elif kind == "sqlalchemy":
        yield _sqlalchemy_async_fetch(conn)
    elif kind == "sqlalchemy-session":
        # The session's connection in its current transaction (autobegun if none is).
        yield _sqlalchemy_async_fetch(await conn.connection())
    else:
        yield _sqlalchemy_async_fetch(await conn().connection())
