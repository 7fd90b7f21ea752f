"""Pause and resume tasks and named queues, fleet-wide: ``kongtaskd.pause`` / ``resume``.

A pause is a row in ``_kongtaskd_pauses`` (kongtaskd migration 6): persisted, so it
survives restarts, and read by ``kongtaskd_claim`` in every claim, so no claim that starts
after the pause committed takes a job of the paused task or queue, whoever claims (daemon,
``run_jobs``, ``kongtaskd_get_job``). The same transaction sends a NOTIFY on
``kongtaskd:steer``: daemons hand back jobs they claimed but did not start yet. Running jobs
finish. A paused named queue's row is also held with a far-future ``locked_at`` and the
locked_by ``kongtaskd pause``, which graphile-worker workers skip and neither fleet's sweeps
release; ``resume`` releases only rows so held, never a queue whose job is running.

``conn``: whatever ``add_job`` takes (psycopg2/psycopg 3 connection or cursor, SQLAlchemy,
Django) runs the statement in the caller's transaction, which the caller commits (the pause
takes effect then); a DSN gets its own connection, committed at once.

Pausing a task no daemon has registered yet is allowed (it may have no daemon yet): the
result says which names are not known yet.
"""

from __future__ import annotations

import datetime
import getpass
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from kongtaskd.drivers import quote_identifier, sync_target
from kongtaskd.queries import bind, source

DEFAULT_SCHEMA = "graphile_worker"


@dataclass(frozen=True, slots=True)
class Pause:
    """One pause in force."""

    kind: str  # "task" or "queue"
    name: str
    paused_at: datetime.datetime
    paused_by: str
    #: A task of that identifier (a queue of that name) exists in the database yet.
    known: bool


@dataclass(frozen=True)
class Changed:
    """What a pause or resume call changed."""

    #: (kind, name) pauses added (pause) or removed (resume); others were already so.
    changed: list[tuple[str, str]]
    #: Queue rows held (pause) or released (resume) with the pause marker.
    queue_rows: int


def who() -> str:
    """Who paused: user@host pid, for the audit trail in ``kongtaskd status``."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()} pid {os.getpid()}"


def _names(values: Iterable[str] | str | None, what: str) -> list[str]:
    if values is None:
        return []
    items = [values] if isinstance(values, str) else list(values)
    for item in items:
        if not isinstance(item, str) or not item.strip():
            raise ValueError(f"{what} names must be non-empty strings, got {item!r}")
    return items


def _targets(tasks: Iterable[str] | str | None, queues: Iterable[str] | str | None) -> list:
    pairs = [("task", name) for name in _names(tasks, "task")]
    pairs += [("queue", name) for name in _names(queues, "queue")]
    if not pairs:
        raise ValueError("name at least one task or queue")
    return pairs


def _run(conn: Any, name: str, schema: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
    """One statement on the caller's connection, in its transaction (it commits, as for
    ``add_job``), or on a DSN's own connection, committed."""
    text = bind(source(name), quote_identifier(schema), with_parameters=True)
    with sync_target(conn) as fetch:
        return [tuple(row.values()) for row in fetch(text, params)]


def _change(conn: Any, name: str, pairs: list, schema: str, by: str | None) -> Changed:
    rows = _run(
        conn,
        name,
        schema,
        {"kinds": [k for k, _ in pairs], "names": [n for _, n in pairs], "by": by or who()},
    )
    return Changed([(kind, item) for kind, item, *_ in rows], int(rows[0][2]) if rows else 0)


def pause(
    conn: Any,
    tasks: Iterable[str] | str | None = None,
    queues: Iterable[str] | str | None = None,
    *,
    schema: str = DEFAULT_SCHEMA,
    by: str | None = None,
) -> Changed:
    """Pause tasks (identifiers) and named queues fleet-wide; effective when this commits."""
    return _change(conn, "steer_pause", _targets(tasks, queues), schema, by)


def resume(
    conn: Any,
    tasks: Iterable[str] | str | None = None,
    queues: Iterable[str] | str | None = None,
    *,
    schema: str = DEFAULT_SCHEMA,
) -> Changed:
    """Lift pauses; daemons are woken (NOTIFY) and claim the jobs at once."""
    return _change(conn, "steer_resume", _targets(tasks, queues), schema, None)


def pauses(conn: Any, *, schema: str = DEFAULT_SCHEMA) -> list[Pause]:
    """The pauses in force, tasks first."""
    return [Pause(*row) for row in _run(conn, "steer_list", schema, {})]
