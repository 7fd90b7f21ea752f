"""The runtime SQL: every statement the supervisor and children run, loaded from ``sql/*.sql``.

Statements are read once, bound to the configured schema by the one binder,
:func:`bind` (through :func:`bind_schema`: the name quoted with
``sql.Identifier``, so any name PostgreSQL allows works and none can inject SQL), and
PREPAREd once per connection: the claim and completion statements run thousands of times a
second, and skipping their parse and plan is the cheapest speed-up there is. Values always
travel as parameters.

A connection through a pooler in transaction mode (``child_connection``) cannot keep a
prepared statement: the next transaction may run on another server connection, where it
does not exist (or another client's of the same name does). There :class:`Queries` runs the
same files unprepared (``prepared=False``): ``$n`` becomes a psycopg2 parameter cast to the
type the PREPARE would have declared (:func:`pyformat`), so both modes bind values to the
same types and callers (``settle.Settle``, the child's loads) cannot tell them apart.

Where a bound text goes decides one thing: psycopg2 reads ``%`` as a placeholder in a text
executed *with* parameters (even an empty dict), so there a ``%`` of the name is doubled;
a ``PREPARE`` runs without parameters and gets the name as it is. Every caller says which
(``with_parameters``), so no text is escaped twice or not at all.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

from psycopg2 import sql
from psycopg2.extensions import connection as Connection
from psycopg2.extensions import cursor as Cursor

from kongtaskd import settle

#: Where the schema goes in every ``.sql`` file kongtaskd ships.
PLACEHOLDER = "{{schema}}"


@dataclass(frozen=True)
class Statement:
    """One ``sql/<name>.sql`` file and the PostgreSQL types of its ``$n`` parameters."""

    name: str
    param_types: tuple[str, ...]


STATEMENTS: dict[str, Statement] = {
    s.name: s
    for s in (
        Statement(settle.NAME, settle.PARAM_TYPES),  # its typed wrapper declares them
        Statement(settle.CLAIM_NAME, settle.PARAM_TYPES),  # the same wrapper, no outcomes
        Statement("load_job", ("bigint", "text")),
        Statement("load_jobs", ("bigint[]", "text")),
        Statement("register_tasks", ("text[]",)),
        Statement(
            "heartbeat",
            (
                *("text", "text", "integer", "text", "integer", "integer", "bigint"),
                *("timestamptz", "text", "text"),  # last reload at, its error; degraded
                "jsonb",  # details: children, config summary, crontab next runs
            ),
        ),
        Statement("stats_add", ("jsonb",)),
        Statement("prune_stats", ("float8", "int")),
        Statement("prune_completed", ("float8", "int")),
        Statement("sweep", ("float8", "text")),
        Statement("sweep_expired", ("float8",)),
        Statement("forget_pool", ("text",)),
        Statement("release_unknown", ("text", "bigint[]")),
        Statement("queue_depth", ()),
        Statement("write_caps", ("text[]", "integer[]", "integer[]", "integer[]", "text")),
        Statement("notify_steer", ("text",)),
        Statement("pending_cancels", ("text",)),  # kongtaskd migration 7; cancel.py
    )
}


_NUMBERED = re.compile(r"\$(\d+)")


def pyformat(text: str, param_types: tuple[str, ...] | None = None) -> str:
    """A ``$n`` statement file as ``%(pn)s`` text for every sync driver.

    Comment lines go first: a value the driver interpolates on the client (psycopg2) must
    never land inside a ``--`` comment, where a newline in it would end the comment. With
    ``param_types``, each ``$n`` becomes ``(%(pn)s::type)``: the type PREPARE declares, so
    an empty list is a ``bigint[]`` and not an unknown literal.
    """
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("--")]
    body = "\n".join(lines)
    if "--" in body or "%" in body:
        raise ValueError("a statement file run with parameters has an inline comment or a '%'")

    def placeholder(match: re.Match[str]) -> str:
        number = int(match.group(1))
        if param_types is None:
            return f"%(p{number})s"
        return f"(%(p{number})s::{param_types[number - 1]})"

    return _NUMBERED.sub(placeholder, body)


#: A line ``{{include:NAME}}`` in a statement file is replaced by ``sql/_NAME.sql``: a
#: fragment two statements share (settle.sql and claim.sql: the claimed jobs' rows).
_INCLUDE = re.compile(r"^\{\{include:([a-z_]+)\}\}", re.MULTILINE)


@functools.cache
def source(name: str) -> str:
    """The text of ``sql/<name>.sql``, its includes expanded, read once."""
    return expand_includes(
        resources.files("kongtaskd.sql").joinpath(f"{name}.sql").read_text("utf-8")
    )


def expand_includes(text: str) -> str:
    """``text`` with each ``{{include:NAME}}`` line replaced by ``sql/_NAME.sql`` (also for
    a statement file read from elsewhere: ``perf/claim_bench.py --sql``)."""
    return _INCLUDE.sub(lambda match: source(f"_{match.group(1)}").rstrip("\n"), text)


def bind(text: str, quoted_schema: str, *, with_parameters: bool) -> str:
    """Put the quoted schema name into ``text``.

    ``quoted_schema`` must come from ``sql.Identifier(name).as_string(conn)``. With
    ``with_parameters`` the result is run with psycopg2 parameters, which treats ``%`` as
    a placeholder, so a ``%`` in the name is doubled; without, it is left alone (psycopg2
    passes a text without parameters through untouched, so doubling would change the name).
    """
    if "$" in quoted_schema and "$$" in text:
        # A name containing "$$" would close a $$-quoted function body early; use a tag that
        # occurs neither in the name nor in the file.
        counter = 0
        while f"$kt{counter}$" in quoted_schema or f"$kt{counter}$" in text:
            counter += 1
        text = text.replace("$$", f"$kt{counter}$")
    if with_parameters:
        quoted_schema = quoted_schema.replace("%", "%%")
    return text.replace(PLACEHOLDER, quoted_schema)


def quote_schema(schema: str, conn: Connection) -> str:
    """The schema name as a quoted SQL identifier (the only way a name enters SQL text)."""
    return sql.Identifier(schema).as_string(conn)


def bind_schema(text: str, schema: str, conn: Connection, *, with_parameters: bool) -> str:
    """``text`` with the schema placeholder replaced by the quoted ``schema``.

    ``with_parameters``: the text will be executed with psycopg2 parameters (``%`` of the
    name doubled); False for a text executed without any (PREPARE, DDL).
    """
    return bind(text, quote_schema(schema, conn), with_parameters=with_parameters)


def statement(name: str, schema: str, conn: Connection) -> str:
    """``sql/<name>.sql`` bound to ``schema``, ready to execute with parameters."""
    return bind_schema(source(name), schema, conn, with_parameters=True)


class Queries:
    """The runtime statements of one connection: PREPAREd (a direct session), or run
    unprepared with typed parameters (``prepared=False``: a transaction pooler)."""

    def __init__(
        self,
        conn: Connection,
        schema: str,
        names: tuple[str, ...] | None = None,
        *,
        prepared: bool = True,
    ) -> None:
        self.conn = conn
        self.schema = schema
        self.prepared = prepared
        self._prefix = "kongtaskd_"
        self._names = names if names is not None else tuple(STATEMENTS)
        #: Unprepared mode: name -> the bound ``%(pn)s`` text, made once per connection.
        self._texts: dict[str, str] = {}
        #: The statements ready on this connection (PREPAREd, or their text bound).
        self._ready: set[str] = set()
        self.prepare()

    def prepare(self) -> None:
        """PREPARE every statement on this connection (again after a reconnect); unprepared,
        bind the texts once instead (no round trip). A statement not named up front is made
        ready when it is first used."""
        self._ready.clear()
        for name in self._names:
            self.make_ready(name)

    def make_ready(self, name: str) -> None:
        statement = STATEMENTS[name]
        if not self.prepared:
            body = pyformat(source(name), statement.param_types)
            self._texts[name] = bind_schema(body, self.schema, self.conn, with_parameters=True)
        else:
            # PREPARE runs without parameters: the name goes in as it is.
            body = bind_schema(source(name), self.schema, self.conn, with_parameters=False)
            types = f"({', '.join(statement.param_types)})" if statement.param_types else ""
            with self.conn.cursor() as cur:
                cur.execute(f"PREPARE {self._prefix}{name} {types} AS {body}")
        self._ready.add(name)

    def execute(self, cur: Cursor, name: str, *params: Any) -> None:
        if name not in self._ready:
            self.make_ready(name)
        if not self.prepared:
            values = {f"p{number}": value for number, value in enumerate(params, start=1)}
            cur.execute(self._texts[name], values)
            return
        placeholders = f"({', '.join(['%s'] * len(params))})" if params else ""
        cur.execute(f"EXECUTE {self._prefix}{name} {placeholders}", params)

    def fetchall(self, name: str, *params: Any) -> list[tuple[Any, ...]]:
        with self.conn.cursor() as cur:
            self.execute(cur, name, *params)
            return cur.fetchall()
