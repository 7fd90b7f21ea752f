"""kongtaskd: a PostgreSQL job queue daemon, schema-compatible with graphile-worker 0.18.

The public Python API::

    import kongtaskd
    kongtaskd.add_job(conn_or_dsn, "send_email", {"to": "a@b"})
    kongtaskd.add_jobs(conn_or_dsn, [kongtaskd.JobSpec("send_email", {"to": "c@d"})])
    kongtaskd.remove_job(conn_or_dsn, "job-key")
    await kongtaskd.add_job_async(async_conn, "send_email", {"to": "a@b"})

``conn_or_dsn``: a psycopg2/psycopg 3 connection or cursor, a SQLAlchemy Connection or
Session, a Django connection, or a DSN; ``async_conn``: psycopg 3 AsyncConnection, asyncpg,
SQLAlchemy AsyncConnection/AsyncSession (see kongtaskd.drivers). Importing kongtaskd
imports none of those drivers.

    @kongtaskd.task("send_email")
    def send_email(payload, ctx): ...

    kongtaskd.cancel_job(conn_or_dsn, 42)   # ends permanently failed; running: interrupted
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

from kongtaskd.enqueue import (
    JobSpec,
    add_job,
    add_job_async,
    add_jobs,
    add_jobs_async,
    remove_job,
    remove_job_async,
)
from kongtaskd.job import Job
from kongtaskd.registry import task

if TYPE_CHECKING:
    from kongtaskd.cancel import cancel_job


def __getattr__(name: str) -> Any:
    # Lazily: only programs that cancel pay for importing kongtaskd.cancel.
    if name == "cancel_job":
        from kongtaskd.cancel import cancel_job

        return cancel_job
    raise AttributeError(f"module 'kongtaskd' has no attribute {name!r}")


__all__ = [
    "Job",
    "JobSpec",
    "__version__",
    "add_job",
    "add_job_async",
    "add_jobs",
    "add_jobs_async",
    "cancel_job",
    "remove_job",
    "remove_job_async",
    "task",
]
