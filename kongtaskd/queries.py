"""The runtime SQL: every statement the supervisor and children run, loaded from ``sql/*.sql``.

Statements are read once, bound to the configured schema with ``sql.Identifier`` (so any
name PostgreSQL allows works and none can inject SQL), and PREPAREd once per connection:
the claim and completion statements run thousands of times a second, and skipping their
parse and plan is the cheapest speed-up there is. Values always travel as parameters.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources
from typing import Any

from psycopg2 import sql
from psycopg2.extensions import connection as Connection
from psycopg2.extensions import cursor as Cursor

from kongtaskd import settle

SCHEMA_PLACEHOLDER = "{{schema}}"


@dataclass(frozen=True)
class Statement:
    """One ``sql/<name>.sql`` file and the PostgreSQL types of its ``$n`` parameters."""

    name: str
    param_types: tuple[str, ...]


STATEMENTS: dict[str, Statement] = {
    s.name: s
    for s in (
        Statement(settle.NAME, settle.PARAM_TYPES),  # its typed wrapper declares them
        Statement("load_job", ("bigint", "text")),
        Statement("load_jobs", ("bigint[]", "text")),
        Statement("register_tasks", ("text[]",)),
        Statement(
            "heartbeat",
            (
                *("text", "text", "integer", "text", "integer", "integer", "bigint"),
                *("timestamptz", "text", "text"),  # last reload at, its error; degraded
            ),
        ),
        Statement("sweep", ("float8", "text")),
        Statement("sweep_expired", ("float8",)),
        Statement("forget_pool", ("text",)),
        Statement("release_unknown", ("text", "bigint[]")),
        Statement("queue_depth", ()),
    )
}


@functools.cache
def source(name: str) -> str:
    """The text of ``sql/<name>.sql``, read once."""
    return resources.files("kongtaskd.sql").joinpath(f"{name}.sql").read_text("utf-8")


def bind_schema(text: str, schema: str, conn: Connection) -> str:
    """Replace the schema placeholder with the properly quoted identifier."""
    quoted = sql.Identifier(schema).as_string(conn)
    return text.replace(SCHEMA_PLACEHOLDER, quoted)


def statement(name: str, schema: str, conn: Connection) -> str:
    """``sql/<name>.sql`` bound to ``schema``, ready to execute with parameters."""
    return bind_schema(source(name), schema, conn)


class Queries:
    """The prepared runtime statements of one connection."""

    def __init__(self, conn: Connection, schema: str, names: tuple[str, ...] | None = None) -> None:
        self.conn = conn
        self.schema = schema
        self._prefix = "kongtaskd_"
        self._names = names if names is not None else tuple(STATEMENTS)
        self.prepare()

    def prepare(self) -> None:
        """PREPARE every statement on this connection (again after a reconnect)."""
        with self.conn.cursor() as cur:
            for name in self._names:
                statement = STATEMENTS[name]
                body = bind_schema(source(name), self.schema, self.conn)
                types = f"({', '.join(statement.param_types)})" if statement.param_types else ""
                cur.execute(f"PREPARE {self._prefix}{name} {types} AS {body}")

    def execute(self, cur: Cursor, name: str, *params: Any) -> None:
        placeholders = f"({', '.join(['%s'] * len(params))})" if params else ""
        cur.execute(f"EXECUTE {self._prefix}{name} {placeholders}", params)

    def fetchall(self, name: str, *params: Any) -> list[tuple[Any, ...]]:
        with self.conn.cursor() as cur:
            self.execute(cur, name, *params)
            return cur.fetchall()
