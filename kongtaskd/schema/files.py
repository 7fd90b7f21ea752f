"""The migration files and ledger statements shipped in the package, and how the schema name
is put into them.

Files are named ``NNNNNN.sql`` and numbered from 1 without gaps. A graphile-worker migration
is *breaking* when its file starts with ``--! breaking`` (graphile-worker's own marker); the
set that results is checked against graphile-worker's at load time, because a wrong flag in
the ledger would make a real graphile-worker mis-judge the database.

The schema name comes from the user. It only ever enters SQL as the output of
``psycopg2.sql.Identifier(...).as_string(conn)`` in place of the ``{{schema}}`` placeholder,
and function bodies get a dollar-quote tag that the quoted name cannot contain, so no name
PostgreSQL accepts can end a string or a body early. That is done by
:func:`kongtaskd.queries.bind` (re-exported here as ``bind``), the one binder of every
statement kongtaskd runs: migrations, ledger, runtime, enqueue, admin and cron.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from importlib import resources
from typing import Literal

# The one binder lives with the runtime statements (so the daemon and applications need not
# import the migration machinery); migrations and the ledger bind through it too.
from kongtaskd.queries import PLACEHOLDER, bind

__all__ = [
    "BREAKING_GRAPHILE_MIGRATIONS",
    "PLACEHOLDER",
    "Kind",
    "Migration",
    "bind",
    "load_migrations",
    "load_statements",
]

#: graphile-worker 0.18.0 ships migrations 1..20; these are the ones marked breaking.
BREAKING_GRAPHILE_MIGRATIONS = frozenset({1, 3, 11, 13, 14, 16, 19})

_BREAKING_MARKER = "--! breaking"
_FILE_NAME = re.compile(r"^(\d{6})\.sql$")
_STATEMENT_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)

Kind = Literal["graphile", "kongtaskd"]


@dataclasses.dataclass(frozen=True)
class Migration:
    """One migration file, not yet bound to a schema."""

    kind: Kind
    number: int
    text: str
    breaking: bool

    @property
    def name(self) -> str:
        """The six-digit name graphile-worker also uses (``000012``)."""
        return f"{self.number:06d}"

    @property
    def is_noop(self) -> bool:
        """True for marker files holding only comments (PostgreSQL rejects an empty query)."""
        return not any(
            line.strip() and not line.lstrip().startswith("--") for line in self.text.splitlines()
        )


@functools.cache
def load_migrations(kind: Kind) -> tuple[Migration, ...]:
    """All migrations of one ledger, in order."""
    folder = resources.files("kongtaskd.schema").joinpath(kind)
    found: dict[int, str] = {}
    for entry in folder.iterdir():
        match = _FILE_NAME.match(entry.name)
        if match:
            found[int(match.group(1))] = entry.read_text(encoding="utf-8")
    numbers = sorted(found)
    if numbers != list(range(1, len(numbers) + 1)):
        raise RuntimeError(f"kongtaskd/schema/{kind}: migration files must be 1..N, got {numbers}")
    migrations = tuple(
        Migration(kind, n, found[n], found[n].startswith(_BREAKING_MARKER)) for n in numbers
    )
    if kind == "graphile":
        breaking = {m.number for m in migrations if m.breaking}
        if breaking != BREAKING_GRAPHILE_MIGRATIONS:
            raise RuntimeError(
                f"kongtaskd/schema/graphile: breaking markers on {sorted(breaking)}, "
                f"graphile-worker has {sorted(BREAKING_GRAPHILE_MIGRATIONS)}"
            )
    return migrations


@functools.cache
def load_statements() -> dict[str, str]:
    """The named statements of ``ledger.sql`` (``-- name: x`` starts statement ``x``)."""
    text = resources.files("kongtaskd.schema").joinpath("ledger.sql").read_text(encoding="utf-8")
    parts = _STATEMENT_NAME.split(text)
    # parts = [preamble, name1, body1, name2, body2, ...]
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}
