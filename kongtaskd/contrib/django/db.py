"""kongtaskd's statements on a Django database connection, inside Django's transaction.

Django's own cursor is used (not the raw driver connection), so the statements join
whatever ``transaction.atomic`` block is open, Django's query logging and execute wrappers
see them, and nothing here commits or rolls back. Outside an atomic block Django is in
autocommit mode and the job is committed by its own statement, as any ORM write would be.

Both of Django's PostgreSQL drivers work: psycopg2 and psycopg 3 differ only in how the
schema name is quoted (each driver's ``sql.Identifier``, then the one binder,
:func:`kongtaskd.queries.bind`); both take the statements' ``%(name)s`` parameters.

:func:`add_job` is ``kongtaskd.add_job(connections[using], ...)``: the drivers layer
(``kongtaskd.drivers``) runs it on Django's cursor, with the same checks, SQL, rows, NOTIFY
and error messages as every other producer's.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import DEFAULT_DB_ALIAS, connections

from kongtaskd.job import Job
from kongtaskd.queries import bind, source


def _wrapper(using: str | None) -> Any:
    alias = using or DEFAULT_DB_ALIAS
    wrapper = connections[alias]
    if wrapper.vendor != "postgresql":
        raise ImproperlyConfigured(
            f"settings.DATABASES[{alias!r}]: kongtaskd needs PostgreSQL, not {wrapper.vendor}"
        )
    return wrapper


def quoted_schema(schema: str, using: str | None = None) -> str:
    """``schema`` quoted as an identifier by the driver under Django's connection."""
    wrapper = _wrapper(using)
    wrapper.ensure_connection()
    raw = wrapper.connection
    module = type(raw).__module__
    if module.startswith("psycopg2"):
        from psycopg2 import sql as sql2

        return sql2.Identifier(schema).as_string(raw)
    from psycopg import sql as sql3

    return sql3.Identifier(schema).as_string(raw)


def statement(name: str, schema: str, using: str | None = None) -> str:
    """``sql/<name>.sql`` bound to ``schema``, for Django's cursor with parameters."""
    return bind(source(name), quoted_schema(schema, using), with_parameters=True)


def _decoded(value: Any) -> Any:
    # Django registers json/jsonb loaders that return text (its JSONField decodes itself).
    return json.loads(value) if isinstance(value, (str, bytes, bytearray)) else value


def fetch_jobs(cursor: Any, schema: str, using: str | None) -> list[Job]:
    """The rows of an add/lookup statement as Jobs, task and queue names filled in (the same
    second look-up as ``kongtaskd.enqueue`` for names the statement itself registered)."""
    names = [column[0] for column in cursor.description or ()]
    rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    task_ids = {r["task_id"] for r in rows if r["task_identifier"] is None}
    queue_ids = {r["job_queue_id"] for r in rows if r["job_queue_id"] and r["queue_name"] is None}
    if task_ids or queue_ids:
        cursor.execute(
            statement("job_names", schema, using),
            {"task_ids": sorted(task_ids), "queue_ids": sorted(queue_ids)},
        )
        found = {(kind, id_): name for kind, id_, name in cursor.fetchall()}
        for row in rows:
            if row["task_identifier"] is None:
                row["task_identifier"] = found.get(("task", row["task_id"]))
            if row["job_queue_id"] and row["queue_name"] is None:
                row["queue_name"] = found.get(("queue", row["job_queue_id"]))
    for row in rows:
        row["payload"] = _decoded(row["payload"])
        row["flags"] = _decoded(row["flags"])
    return [Job.from_row(row) for row in rows]


def add_job(
    identifier: str,
    payload: Any = None,
    *,
    using: str | None = None,
    schema: str = "graphile_worker",
    **options: Any,
) -> Job:
    """``kongtaskd.add_job`` on Django's connection ``using`` (default "default"), in its
    current transaction; ``options`` are ``add_job``'s (queue_name, run_at, priority, ...)."""
    from kongtaskd.enqueue import add_job as add

    return add(_wrapper(using), identifier, payload, schema=schema, **options)


def get_job(
    job_id: int, *, using: str | None = None, schema: str = "graphile_worker"
) -> Job | None:
    """The job row with ``job_id`` as it is now (None: no such job, e.g. it has finished)."""
    wrapper = _wrapper(using)
    with wrapper.cursor() as cursor:
        cursor.execute(statement("django_get_job", schema, using), {"id": job_id})
        jobs = fetch_jobs(cursor, schema, using)
    return jobs[0] if jobs else None


#: The completed-job history table (``keep_completed``, kongtaskd migration 000005).
HISTORY_TABLE = "_kongtaskd_completed_jobs"


@dataclasses.dataclass(frozen=True)
class CompletedJob:
    """The history record of a job that succeeded (no payload, no return value: the table
    keeps neither)."""

    id: int
    task_identifier: str
    queue_name: str | None
    attempts: int
    created_at: Any
    started_at: Any
    finished_at: Any
    pool_id: str


def completed_job(
    job_id: int, *, using: str | None = None, schema: str = "graphile_worker"
) -> CompletedJob | None:
    """The history record of ``job_id`` (None: no record, or no history table in ``schema``)."""
    wrapper = _wrapper(using)
    with wrapper.cursor() as cursor:
        table = f"{quoted_schema(schema, using)}.{HISTORY_TABLE}"
        cursor.execute(statement("django_has_table", schema, using), {"table": table})
        row = cursor.fetchone()
        if not (row and row[0]):
            return None
        cursor.execute(statement("django_completed_job", schema, using), {"id": job_id})
        found = cursor.fetchone()
    return CompletedJob(*found) if found else None
