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

    kongtaskd.run("kongtaskd.yaml", tasks={"send_email": send_email})  # the daemon, here
    kongtaskd.run_jobs(conn_or_dsn, {"send_email": send_email})  # ready jobs, inline, now
    kongtaskd.pause(conn_or_dsn, tasks=["send_email"], queues=["billing"])  # fleet-wide
    kongtaskd.resume(conn_or_dsn, tasks=["send_email"])
    kongtaskd.cancel_job(conn_or_dsn, 42)   # ends permanently failed; running: interrupted

``run``, ``run_jobs``, ``RunSummary``, ``pause``, ``resume`` and ``cancel_job`` are loaded on
first use (``__getattr__``), so ``import kongtaskd`` costs no more than the enqueue API.
``pause``/``resume`` take what ``add_job`` takes and run in the caller's transaction; a
DSN commits at once (kongtaskd.steer).
"""

from __future__ import annotations

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

#: Loaded on first use: name -> module that defines it.
_LAZY = {
    "run": "kongtaskd.library",
    "run_jobs": "kongtaskd.inline",
    "RunSummary": "kongtaskd.inline",
    "pause": "kongtaskd.steer",
    "resume": "kongtaskd.steer",
    "cancel_job": "kongtaskd.cancel",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'kongtaskd' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "Job",
    "JobSpec",
    "RunSummary",
    "__version__",
    "add_job",
    "add_job_async",
    "add_jobs",
    "add_jobs_async",
    "cancel_job",
    "pause",
    "remove_job",
    "remove_job_async",
    "resume",
    "run",
    "run_jobs",
    "task",
]
