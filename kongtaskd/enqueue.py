"""The public enqueue API: ``add_job``, ``add_jobs``, ``remove_job`` and their ``_async`` twins.

Every call goes through graphile-worker's own SQL functions (``<schema>.add_job`` and
friends), never through our own INSERT: job-key semantics, task and queue registration
and the ``jobs:insert`` NOTIFY then live in one place, the database, and behave the same
for Python, Node and plain SQL producers.

Transactions follow the caller. Given a connection (psycopg2, psycopg 3, SQLAlchemy,
Django, asyncpg: see :mod:`kongtaskd.drivers`), the job is added inside the caller's
current transaction and nothing is committed or rolled back here: the job exists exactly
when the caller's own writes do (the transactional-outbox pattern). Given a DSN string, a
connection is opened, the job committed, and the connection closed.

Arguments are checked before any database work, and a bad one raises ``ValueError`` or
``TypeError`` naming it. The checks mirror the database's own limits (graphile-worker's
CHECK constraints and smallint columns), so a mistake surfaces at the call site with the
argument's name instead of as a constraint violation that aborts the caller's transaction.
The checks, the statement and its arguments are the same for every driver, so the rows,
the NOTIFY and the error messages are too. A database error is the driver's own exception
(``psycopg2.Error``, ``psycopg.Error``, ``asyncpg.PostgresError``, Django's wrapper):
the caller's transaction handling already knows it.

The payload is serialised once, here (:func:`encode_payload`), never by a driver's JSON
adapter: besides JSON's own types it takes ``datetime``/``date`` (ISO 8601 text),
``Decimal`` (its exact digits as a string) and ``UUID`` (its canonical string), and refuses
anything else (sets, bytes, arbitrary objects, NaN/Infinity, non-string keys other than
JSON's int/float/bool/None) naming where in the payload it is.

With OpenTelemetry imported by the app and a span active, an object (or null) payload gets
the span's W3C ``traceparent`` under the reserved key ``_kongtaskd`` (see
:mod:`kongtaskd.integrations.otel`); kongtaskd's children remove it before the handler runs.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import json
import math
import sys
from collections.abc import Sequence
from typing import Any

from kongtaskd.drivers import (
    AsyncFetch,
    Fetch,
    async_kind,
    async_target,
    quote_identifier,
    sync_kind,
    sync_target,
)
from kongtaskd.errors import DatabaseError
from kongtaskd.job import Job
from kongtaskd.queries import bind, source

__all__ = [
    "JOB_KEY_MODES",
    "InvalidJobArgument",
    "InvalidJobArgumentType",
    "JobSpec",
    "add_job",
    "add_job_async",
    "add_jobs",
    "add_jobs_async",
    "check_job_arguments",
    "encode_payload",
    "remove_job",
    "remove_job_async",
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


def _json_default(value: object) -> object:
    # The documented extras; checked most common first. datetime before date: a datetime
    # is a date.
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            raise ValueError(f"Decimal {value} is not a JSON number")
        return str(value)
    import uuid  # here, not at the top: it imports platform, and most payloads never get here

    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


_JSON_SCALARS = (str, int, float, bool, type(None))


def _first_problem(value: object, path: str, seen: frozenset[int]) -> tuple[str, str, bool]:
    """Where in ``value`` JSON fails and why: (path, reason, is a type error).

    Only walked after ``json.dumps`` failed, so a good payload costs one dumps call.
    """
    if isinstance(value, float) and not math.isfinite(value):
        return path, f"{value} is not a JSON number", False
    if isinstance(value, _JSON_SCALARS):
        return "", "", False
    if isinstance(value, dict | list | tuple):
        if id(value) in seen:
            return path, "it contains itself", False
        inner = seen | {id(value)}
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            if isinstance(value, dict) and not isinstance(key, _JSON_SCALARS):
                return path, f"key {key!r} is a {type(key).__name__}, not a string", True
            found = _first_problem(item, f"{path}[{key!r}]", inner)
            if found[0]:
                return found
        return "", "", False
    try:
        _json_default(value)
    except TypeError as error:
        return path, str(error), True
    except ValueError as error:
        return path, str(error), False
    return "", "", False


def encode_payload(value: object, name: str = "payload") -> str:
    """``value`` as JSON text, the one serialisation every driver sends.

    ``datetime``/``date`` become ISO 8601 strings (an aware datetime keeps its offset),
    ``Decimal`` its exact digits as a string, ``UUID`` its canonical form. Anything else
    JSON cannot hold raises :class:`InvalidJobArgumentType` (a type: set, bytes, object) or
    :class:`InvalidJobArgument` (a value: NaN, a cycle) naming its path, e.g.
    ``payload['items'][2]``.
    """
    try:
        # allow_nan=False: NaN/Infinity are not JSON and PostgreSQL's json type rejects them.
        return json.dumps(value, allow_nan=False, default=_json_default)
    except (TypeError, ValueError, RecursionError):
        pass
    try:
        where, reason, is_type = _first_problem(value, name, frozenset())
    except RecursionError:
        where, reason, is_type = name, "it is nested too deeply", False
    if not where:  # the walk and json disagree: report what json said
        where, reason, is_type = name, "it cannot be encoded as JSON", False
    error = InvalidJobArgumentType if is_type else InvalidJobArgument
    raise error(where, f"is not JSON-serialisable: {reason}") from None


def _check_payload(name: str, value: object) -> str | None:
    if value is None:
        return None
    return encode_payload(value, name)


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


def _traced(payload: Any) -> Any:
    """The payload with the current span's trace context (``kongtaskd.integrations.otel``),
    only if the app has imported OpenTelemetry: otherwise not even its import is paid."""
    if "opentelemetry.trace" not in sys.modules:
        return payload
    from kongtaskd.integrations.otel import with_trace_context

    return with_trace_context(payload)


def _check_spec(prefix: str, spec: JobSpec) -> _CheckedSpec:
    identifier = _check_str(
        f"{prefix}identifier", spec.identifier, MAX_IDENTIFIER_LENGTH, optional=False
    )
    assert identifier is not None
    return _CheckedSpec(
        identifier=identifier,
        payload=_check_payload(f"{prefix}payload", _traced(spec.payload)),
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


def _statement(name: str, schema: str) -> str:
    """``sql/<name>.sql`` bound to ``schema`` by the one binder, in ``%(name)s`` style.

    The name is quoted without a connection (:func:`kongtaskd.drivers.quote_identifier`,
    the same text ``sql.Identifier`` makes), since asyncpg and psycopg 3 callers hold no
    psycopg2 connection. ``with_parameters``: every driver runs it with parameters (for
    asyncpg, :func:`kongtaskd.drivers.to_numeric` turns the doubled ``%%`` back into ``%``).
    """
    return bind(source(name), quote_identifier(schema), with_parameters=True)


def _decoded(row: dict[str, Any]) -> dict[str, Any]:
    # The statements return json columns as text (see kongtaskd/drivers.py): decoded here,
    # once, the same way whatever the driver.
    for column in ("payload", "flags"):
        if isinstance(row.get(column), str):
            row[column] = json.loads(row[column])
    return row


def _missing_names(rows: list[dict[str, Any]]) -> dict[str, list[int]] | None:
    """The ``job_names`` parameters for rows whose names the same statement registered.

    A name is null when the same statement registered it (see ``sql/add_job.sql``); those
    few are looked up with one more query, in the same transaction.
    """
    task_ids = {r["task_id"] for r in rows if r["task_identifier"] is None}
    queue_ids = {r["job_queue_id"] for r in rows if r["job_queue_id"] and r["queue_name"] is None}
    if not task_ids and not queue_ids:
        return None
    return {"task_ids": sorted(task_ids), "queue_ids": sorted(queue_ids)}


def _named(rows: list[dict[str, Any]], names: list[dict[str, Any]]) -> list[Job]:
    found = {(n["kind"], n["id"]): n["name"] for n in names}
    for row in rows:
        if row["task_identifier"] is None:
            row["task_identifier"] = found.get(("task", row["task_id"]))
        if row["job_queue_id"] and row["queue_name"] is None:
            row["queue_name"] = found.get(("queue", row["job_queue_id"]))
    return [Job.from_row(_decoded(row)) for row in rows]


def _run(fetch: Fetch, name: str, schema: str, params: dict[str, Any]) -> list[Job]:
    """One statement and, when needed, its name lookup, on the caller's transaction."""
    rows = fetch(_statement(name, schema), params)
    lookup = _missing_names(rows)
    names = fetch(_statement("job_names", schema), lookup) if lookup else []
    return _named(rows, names)


async def _run_async(
    fetch: AsyncFetch, name: str, schema: str, params: dict[str, Any]
) -> list[Job]:
    """:func:`_run` for the async drivers: the same statements, the same arguments."""
    rows = await fetch(_statement(name, schema), params)
    lookup = _missing_names(rows)
    names = await fetch(_statement("job_names", schema), lookup) if lookup else []
    return _named(rows, names)


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


def _add_job_params(spec: _CheckedSpec, mode: str | None) -> dict[str, Any]:
    return {**dataclasses.asdict(spec), "job_key_mode": mode}


def _one_job(jobs: list[Job], schema: str, identifier: str) -> Job:
    if not jobs:
        # add_jobs' upsert skips a key whose job is locked after clearing it, so this
        # should not happen; say so rather than return a half-made Job.
        raise DatabaseError(f"{schema}.add_job({identifier!r}) returned no job")
    return jobs[0]


def _add_jobs_params(
    specs: Sequence[JobSpec], job_key_preserve_run_at: bool, schema: str
) -> tuple[dict[str, Any] | None, str]:
    """Checked ``add_jobs`` arguments as the statement's parameters (None: no specs)."""
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
        return None, schema
    document = json.dumps(
        [
            {
                "identifier": spec.identifier,
                # Already serialised once (encode_payload): embed it as JSON, not a string.
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
    return {"specs": document, "job_key_preserve_run_at": job_key_preserve_run_at}, schema


def _remove_job_params(job_key: str, schema: str) -> tuple[dict[str, Any], str]:
    key = _check_str("job_key", job_key, MAX_JOB_KEY_LENGTH, optional=False)
    return {"job_key": key}, _check_schema(schema)


def add_job(
    conn_or_dsn: Any,
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
    using: str | None = None,
) -> Job:
    """Add one job through ``<schema>.add_job`` and return it as stored.

    ``conn_or_dsn``: a psycopg2 or psycopg 3 connection or cursor, a SQLAlchemy
    ``Connection`` or ``Session`` (or ``scoped_session``), a Django connection, all used in
    their current transaction and never committed; or a DSN string (own connection,
    committed, closed). ``using="alias"`` (with ``conn_or_dsn=None``) takes Django's
    ``connections[alias]``.

    ``None`` means "the database's default" for every option: payload ``{}``, run now,
    25 attempts, priority 0 (lower runs first), no queue (runs in parallel), no key.
    ``job_key_mode`` is ``replace`` (default), ``preserve_run_at`` or ``unsafe_dedupe``,
    with graphile-worker's meaning; as there, a mode without a key is accepted and moot.
    """
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
    with sync_target(conn_or_dsn, using) as fetch:
        jobs = _run(fetch, "add_job", schema, _add_job_params(spec, mode))
    return _one_job(jobs, schema, spec.identifier)


def add_jobs(
    conn_or_dsn: Any,
    specs: Sequence[JobSpec],
    *,
    job_key_preserve_run_at: bool = False,
    schema: str = "graphile_worker",
    using: str | None = None,
) -> list[Job]:
    """Add several jobs in one ``<schema>.add_jobs`` call (one round trip, one NOTIFY).

    ``conn_or_dsn`` and ``using`` as for :func:`add_job`. With ``job_key_preserve_run_at``
    a spec whose key matches a job that has not started yet keeps that job's ``run_at``
    (graphile-worker's ``preserve_run_at`` mode for a batch). The jobs come back in the
    order ``add_jobs`` returns them, which is not necessarily the order of ``specs``: match
    them by ``key`` where it matters.
    """
    params, schema = _add_jobs_params(specs, job_key_preserve_run_at, schema)
    if params is None:
        _check_target_only(conn_or_dsn, using)
        return []
    with sync_target(conn_or_dsn, using) as fetch:
        return _run(fetch, "add_jobs", schema, params)


def remove_job(
    conn_or_dsn: Any,
    job_key: str,
    *,
    schema: str = "graphile_worker",
    using: str | None = None,
) -> Job | None:
    """Remove the job with ``job_key`` through ``<schema>.remove_job``.

    ``conn_or_dsn`` and ``using`` as for :func:`add_job`. An unlocked job is deleted and
    returned. A job that is running right now cannot be deleted under its worker; it is
    instead stopped from being retried and its key freed (graphile-worker's semantics), and
    returned as it now is. ``None``: no job had the key.
    """
    params, schema = _remove_job_params(job_key, schema)
    with sync_target(conn_or_dsn, using) as fetch:
        jobs = _run(fetch, "remove_job", schema, params)
    return jobs[0] if jobs else None


def _check_target_only(conn_or_dsn: Any, using: str | None) -> None:
    # An empty batch touches no database, but a wrong object is still a wrong object.
    if using is None and not isinstance(conn_or_dsn, str):
        sync_kind(conn_or_dsn)


# --- async API --------------------------------------------------------------------------


async def add_job_async(
    conn: Any,
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
    """:func:`add_job` for async code, in ``conn``'s current transaction (never committed).

    ``conn``: a psycopg 3 ``AsyncConnection`` or ``AsyncCursor``, an asyncpg
    ``Connection`` (also one from ``pool.acquire()``), a SQLAlchemy ``AsyncConnection`` or
    ``AsyncSession`` (over psycopg 3 or asyncpg). Same checks, statement and result.
    """
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
    async with async_target(conn) as fetch:
        jobs = await _run_async(fetch, "add_job", schema, _add_job_params(spec, mode))
    return _one_job(jobs, schema, spec.identifier)


async def add_jobs_async(
    conn: Any,
    specs: Sequence[JobSpec],
    *,
    job_key_preserve_run_at: bool = False,
    schema: str = "graphile_worker",
) -> list[Job]:
    """:func:`add_jobs` for async code; ``conn`` as for :func:`add_job_async`."""
    params, schema = _add_jobs_params(specs, job_key_preserve_run_at, schema)
    if params is None:
        async_kind(conn)  # an empty batch touches no database, but checks what it was given
        return []
    async with async_target(conn) as fetch:
        return await _run_async(fetch, "add_jobs", schema, params)


async def remove_job_async(
    conn: Any, job_key: str, *, schema: str = "graphile_worker"
) -> Job | None:
    """:func:`remove_job` for async code; ``conn`` as for :func:`add_job_async`."""
    params, schema = _remove_job_params(job_key, schema)
    async with async_target(conn) as fetch:
        jobs = await _run_async(fetch, "remove_job", schema, params)
    return jobs[0] if jobs else None
