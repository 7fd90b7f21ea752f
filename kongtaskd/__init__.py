"""kongtaskd: a PostgreSQL job queue daemon, schema-compatible with graphile-worker 0.18.

The public Python API::

    import kongtaskd
    kongtaskd.add_job(conn_or_dsn, "send_email", {"to": "a@b"})
    kongtaskd.add_jobs(conn_or_dsn, [kongtaskd.JobSpec("send_email", {"to": "c@d"})])
    kongtaskd.remove_job(conn_or_dsn, "job-key")

    @kongtaskd.task("send_email")
    def send_email(payload, ctx): ...
"""

from __future__ import annotations

__version__ = "0.1.0"

from kongtaskd.enqueue import JobSpec, add_job, add_jobs, remove_job
from kongtaskd.job import Job
from kongtaskd.registry import task

__all__ = ["Job", "JobSpec", "__version__", "add_job", "add_jobs", "remove_job", "task"]
