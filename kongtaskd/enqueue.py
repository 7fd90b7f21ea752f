"""The public enqueue API: ``add_job``, ``add_jobs``, ``remove_job``.

Every call goes through graphile-worker's own SQL functions (``<schema>.add_job`` and
friends), never through our own INSERT: job-key semantics, task and queue registration
and the ``jobs:insert`` NOTIFY then live in one place, the database, and behave the same
for Python, Node and plain SQL producers.

Transactions follow the caller. Given a psycopg2 connection, the job is added inside the
caller's current transaction and nothing is committed or rolled back here: the job exists
exactly when the caller's own writes do (the transactional-outbox pattern). Given a DSN
string, a connection is opened, the job committed, and the connection closed.

Arguments are checked before any database work, and a bad one raises ``ValueError`` or
``TypeError`` naming it. The checks mirror the database's own limits (graphile-worker's
CHECK constraints and smallint columns), so a mistake surfaces at the call site with the
argument's name instead of as a constraint violation that aborts the caller's transaction.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from psycopg2.extensions import connection as Connection
from psycopg2.extensions import cursor as Cursor

from kongtaskd.dsn import connect
from kongtaskd.errors import DatabaseError
from kongtaskd.job import Job
from kongtaskd.queries import statement

__all__ = [
    "JOB_KEY_MODES",
    "InvalidJobArgument",
    "InvalidJobArgumentType",
    "JobSpec",
    "add_job",
    "add_jobs",
    "check_job_arguments",
    "remove_job",
]

#: graphile-worker's ``add_job(job_key_mode => ...)`` values.
JOB_KEY_MODES = ("replace", "preserve_run_at", "unsafe_dedupe")

# Limits of graphile-worker's schema: CHECK constraints on identifier/queue name (<= 128)
# and key (1..512), smallint priority/max_attempts, CHECK max_attempts >= 1.
MAX_IDENTIFIER_LENGTH = 128
MAX_QUEUE_NAME_LENGTH = 128
MAX_JOB_KEY_LENGTH = 512
SMALLINT_MIN, SMALLINT_MAX = -32768, 32767


class InvalidJobArgument(ValueError):
    """An argument of ``add_job``/``add_jobs``/``remove_job`` has an impossible value."""

    def __init__(self, argument: str, message: str) -> None:
        super().__init__(f"{argument} {message}")
        #: The argument's name, e.g. ``max_attempts`` or ``specs[2].priority``.
        self.argument = argument


class InvalidJobArgumentType(TypeError):
    """An argument of ``add_job``/``add_jobs``/``remove_job`` has the wrong type."""

    def __init__(self, argument: str, message: str) -> None:
        super().__init__(f"{argument} {message}")
        self.argument = argument


@dataclasses.dataclass
class JobSpec:
    """One job for :func:`add_jobs`; the fields mean what ``add_job``'s arguments mean.

    There is no per-spec ``job_key_mode``: graphile-worker's ``add_jobs`` offers only the
    batch-wide ``job_key_preserve_run_at`` switch.
    """

    identifier: str
    payload: Any = None
    queue_name: str | None = None
    run_at: dt.datetime | None = None
    max_attempts: int | None = None
    job_key: str | None = None
    priority: int | None = None
    flags: Sequence[str] | None = None


# --- validation -------------------------------------------------------------------------


def _type_name(value: object) -> str:
    return type(value).__name__


def _check_str(name: str, value: object, max_length: int, *, optional: bool) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        wanted = "a string or None" if optional else "a string"
        raise InvalidJobArgumentType(name, f"must be {wanted}, got {_type_name(value)}")
    if not value:
        raise InvalidJobArgument(name, "must not be empty")
    if len(value) > max_length:
        raise InvalidJobArgument(name, f"must be at most {max_length} characters, got {len(value)}")
    return value


def _check_int(name: str, value: object, low: int, high: int) -> int | None:
    if value is None:
        return None
    # bool is an int subclass; True as max_attempts is a bug, not a 1.
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidJobArgumentType(name, f"must be an integer or None, got {_type_name(value)}")
    if not low <= value <= high:
        raise InvalidJobArgument(name, f"must be between {low} and {high}, got {value}")
    return value


def _check_payload(name: str, value: object) -> str | None:
    if value is None:
        return None
    try:
        # allow_nan=False: NaN/Infinity are not JSON and PostgreSQL's json type rejects them.
        return json.dumps(value, allow_nan=False)
    except TypeError as error:
        raise InvalidJobArgumentType(name, f"is not JSON-serialisable: {error}") from None
    except ValueError as error:
        raise InvalidJobArgument(name, f"is not JSON-serialisable: {error}") from None
    except RecursionError:
        raise InvalidJobArgument(name, "is not JSON-serialisable: it contains itself") from None


def _check_run_at(name: str, value: object) -> dt.datetime | None:
    if value is None:
        return None
    if not isinstance(value, dt.datetime):
        raise InvalidJobArgumentType(
            name, f"must be a timezone-aware datetime or None, got {_type_name(value)}"
        )
    if value.tzinfo is None or value.utcoffset() is None:
        # A naive time would be read in the database session's TimeZone, which differs
        # between servers and roles; refusing it beats running a job hours off.
        raise InvalidJobArgument(
            name,
            f"must be timezone-aware, got naive {value.isoformat()}; "
            "pass e.g. datetime.now(timezone.utc) or a datetime with tzinfo",
        )
    return value


def _check_flags(name: str, value: object) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise InvalidJobArgumentType(
            name, f"must be a list of strings or None, got {_type_name(value)}"
        )
    for index, flag in enumerate(value):
        if not isinstance(flag, str):
            raise InvalidJobArgumentType(
                f"{name}[{index}]", f"must be a string, got {_type_name(flag)}"
            )
    return list(value)


def _check_job_key_mode(name: str, value: object) -> str | None:
    if value is None:
        return None
    if value not in JOB_KEY_MODES:
        raise InvalidJobArgument(
            name, f"must be one of {', '.join(JOB_KEY_MODES)} or None, got {value!r}"
        )
    return str(value)


def _check_target(conn_or_dsn: object) -> None:
    if not isinstance(conn_or_dsn, (Connection, str)):
        raise InvalidJobArgumentType(
            "conn_or_dsn",
            f"must be a psycopg2 connection or a DSN string, got {_type_name(conn_or_dsn)}",
        )


def _check_schema(schema: object) -> str:
    checked = _check_str("schema", schema, 63, optional=False)
    assert checked is not None
    return checked


@dataclasses.dataclass(frozen=True)
class _CheckedSpec:
    identifier: str
    payload: str | None
    queue_name: str | None
    run_at: dt.datetime | None
    max_attempts: int | None
    job_key: str | None
    priority: int | None
    flags: list[str] | None


def _check_spec(prefix: str, spec: JobSpec) -> _CheckedSpec:
    identifier = _check_str(
        f"{prefix}identifier", spec.identifier, MAX_IDENTIFIER_LENGTH, optional=False
    )
    assert identifier is not None
    return _CheckedSpec(
        identifier=identifier,
        payload=_check_payload(f"{prefix}payload", spec.payload),
        queue_name=_check_str(
            f"{prefix}queue_name", spec.queue_name, MAX_QUEUE_NAME_LENGTH, optional=True
        ),
        run_at=_check_run_at(f"{prefix}run_at", spec.run_at),
        max_attempts=_check_int(f"{prefix}max_attempts", spec.max_attempts, 1, SMALLINT_MAX),
        job_key=_check_str(f"{prefix}job_key", spec.job_key, MAX_JOB_KEY_LENGTH, optional=True),
        priority=_check_int(f"{prefix}priority", spec.priority, SMALLINT_MIN, SMALLINT_MAX),
        flags=_check_flags(f"{prefix}flags", spec.flags),
    )


# --- database ---------------------------------------------------------------------------


@contextmanager
def _cursor(conn_or_dsn: Connection | str) -> Iterator[Cursor]:
    if isinstance(conn_or_dsn, Connection):
        # The caller's transaction: no commit, no rollback, whatever happens.
        with conn_or_dsn.cursor() as cur:
            yield cur
        return
    conn = connect(conn_or_dsn)
    try:
        # ``with conn`` commits when the block succeeds and rolls back when it raises.
        with conn, conn.cursor() as cur:
            yield cur
    finally:
        conn.close()


def _jobs(cur: Cursor, schema: str) -> list[Job]:
    """The rows of an add/remove statement as Jobs, with task and queue names filled in.

    A name is null when the same statement registered it (see ``sql/add_job.sql``); those
    few are looked up with one more query, in the same transaction.
    """
    names = [column.name for column in cur.description or ()]
    rows = [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
    task_ids = {r["task_id"] for r in rows if r["task_identifier"] is None}
    queue_ids = {r["job_queue_id"] for r in rows if r["job_queue_id"] and r["queue_name"] is None}
    if task_ids or queue_ids:
        cur.execute(
            statement("job_names", schema, cur.connection),
            {"task_ids": sorted(task_ids), "queue_ids": sorted(queue_ids)},
        )
        found = {(kind, id_): name for kind, id_, name in cur.fetchall()}
        for row in rows:
            if row["task_identifier"] is None:
                row["task_identifier"] = found.get(("task", row["task_id"]))
            if row["job_queue_id"] and row["queue_name"] is None:
                row["queue_name"] = found.get(("queue", row["job_queue_id"]))
    return [Job.from_row(row) for row in rows]


# --- public API -------------------------------------------------------------------------


def check_job_arguments(
    identifier: str,
    payload: Any = None,
    *,
    queue_name: str | None = None,
    run_at: dt.datetime | None = None,
    max_attempts: int | None = None,
    job_key: str | None = None,
    job_key_mode: str | None = None,
    priority: int | None = None,
    flags: Sequence[str] | None = None,
    schema: str = "graphile_worker",
) -> tuple[_CheckedSpec, str | None, str]:
    """Check ``add_job``'s arguments without touching a database (the CLI checks first).

    Raises :class:`InvalidJobArgument` / :class:`InvalidJobArgumentType` naming the
    argument; returns the checked values for ``add_job``.
    """
    spec = _check_spec(
        "",
        JobSpec(identifier, payload, queue_name, run_at, max_attempts, job_key, priority, flags),
    )
    mode = _check_job_key_mode("job_key_mode", job_key_mode)
    return spec, mode, _check_schema(schema)


def add_job(
    conn_or_dsn: Connection | str,
    identifier: str,
    payload: Any = None,
    *,
    queue_name: str | None = None,
    run_at: dt.datetime | None = None,
    max_attempts: int | None = None,
    job_key: str | None = None,
    job_key_mode: str | None = None,
    priority: int | None = None,
    flags: Sequence[str] | None = None,
    schema: str = "graphile_worker",
) -> Job:
    """Add one job through ``<schema>.add_job`` and return it as stored.

    ``None`` means "the database's default" for every option: payload ``{}``, run now,
    25 attempts, priority 0 (lower runs first), no queue (runs in parallel), no key.
    ``job_key_mode`` is ``replace`` (default), ``preserve_run_at`` or ``unsafe_dedupe``,
    with graphile-worker's meaning; as there, a mode without a key is accepted and moot.
    """
    _check_target(conn_or_dsn)
    spec, mode, schema = check_job_arguments(
        identifier,
        payload,
        queue_name=queue_name,
        run_at=run_at,
        max_attempts=max_attempts,
        job_key=job_key,
        job_key_mode=job_key_mode,
        priority=priority,
        flags=flags,
        schema=schema,
    )
    with _cursor(conn_or_dsn) as cur:
        cur.execute(
            statement("add_job", schema, cur.connection),
            {**dataclasses.asdict(spec), "job_key_mode": mode},
        )
        jobs = _jobs(cur, schema)
    if not jobs:
        # add_jobs' upsert skips a key whose job is locked after clearing it, so this
        # should not happen; say so rather than return a half-made Job.
        raise DatabaseError(f"{schema}.add_job({identifier!r}) returned no job")
    return jobs[0]


def add_jobs(
    conn_or_dsn: Connection | str,
    specs: Sequence[JobSpec],
    *,
    job_key_preserve_run_at: bool = False,
    schema: str = "graphile_worker",
) -> list[Job]:
    """Add several jobs in one ``<schema>.add_jobs`` call (one round trip, one NOTIFY).

    With ``job_key_preserve_run_at`` a spec whose key matches a job that has not started
    yet keeps that job's ``run_at`` (graphile-worker's ``preserve_run_at`` mode for a batch).
    The jobs come back in the order ``add_jobs`` returns them, which is not necessarily the
    order of ``specs``: match them by ``key`` where it matters.
    """
    _check_target(conn_or_dsn)
    if isinstance(specs, (str, bytes)) or not isinstance(specs, Sequence):
        raise InvalidJobArgumentType(
            "specs", f"must be a sequence of JobSpec, got {_type_name(specs)}"
        )
    checked: list[_CheckedSpec] = []
    for index, spec in enumerate(specs):
        if not isinstance(spec, JobSpec):
            raise InvalidJobArgumentType(
                f"specs[{index}]", f"must be a JobSpec, got {_type_name(spec)}"
            )
        checked.append(_check_spec(f"specs[{index}].", spec))
    if not isinstance(job_key_preserve_run_at, bool):
        raise InvalidJobArgumentType(
            "job_key_preserve_run_at", f"must be a bool, got {_type_name(job_key_preserve_run_at)}"
        )
    schema = _check_schema(schema)
    if not checked:
        return []
    document = json.dumps(
        [
            {
                "identifier": spec.identifier,
                # Already serialised once for validation; embed it as JSON, not as a string.
                "payload": json.loads(spec.payload) if spec.payload is not None else None,
                "queue_name": spec.queue_name,
                "run_at": spec.run_at.isoformat() if spec.run_at is not None else None,
                "max_attempts": spec.max_attempts,
                "job_key": spec.job_key,
                "priority": spec.priority,
                "flags": spec.flags,
            }
            for spec in checked
        ]
    )
    with _cursor(conn_or_dsn) as cur:
        cur.execute(
            statement("add_jobs", schema, cur.connection),
            {"specs": document, "job_key_preserve_run_at": job_key_preserve_run_at},
        )
        return _jobs(cur, schema)


def remove_job(
    conn_or_dsn: Connection | str, job_key: str, *, schema: str = "graphile_worker"
) -> Job | None:
    """Remove the job with ``job_key`` through ``<schema>.remove_job``.

    An unlocked job is deleted and returned. A job that is running right now cannot be
    deleted under its worker; it is instead stopped from being retried and its key freed
    (graphile-worker's semantics), and returned as it now is. ``None``: no job had the key.
    """
    _check_target(conn_or_dsn)
    key = _check_str("job_key", job_key, MAX_JOB_KEY_LENGTH, optional=False)
    schema = _check_schema(schema)
    with _cursor(conn_or_dsn) as cur:
        cur.execute(statement("remove_job", schema, cur.connection), {"job_key": key})
        jobs = _jobs(cur, schema)
    return jobs[0] if jobs else None
