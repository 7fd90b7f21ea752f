"""The benchmark's kongtaskd handlers (the daemon's ``python_path`` points at ``perf/``).

They mirror ``perf/graphile/tasks/*.cjs`` so both systems run the same work.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

#: The one statement of ``record``, read once at import (in the zygote, before the fork).
RECORD_JOB = (Path(__file__).parent / "sql" / "record_job.sql").read_text()


def noop(payload: Any, ctx: Any) -> None:
    """The throughput job: does nothing."""


def latency(payload: dict[str, Any], ctx: Any) -> None:
    """Reads the wall clock first, then appends "<ordinal> <epoch seconds>" to payload["out"].

    A file, not a table: an insert would put a database round trip (and its commit) into
    the handler, and the same append is what the graphile-worker task does.
    """
    now = time.time()
    with open(payload["out"], "a") as out:
        out.write(f"{payload['i']} {now:.6f}\n")


def burn(payload: dict[str, Any], ctx: Any) -> None:
    """Pure-Python work until this thread has used ``payload["ms"]`` ms of CPU.

    CPU time, not wall time: a handler that burned wall time would finish on schedule even
    while it shares a core with another child, and the scaling figure would be a fiction.
    """
    until = time.thread_time() + payload.get("ms", 50) / 1000
    n = 0
    while time.thread_time() < until:
        for _ in range(1000):  # amortise the clock read; ~20 µs of arithmetic per check
            n += 1


def record(payload: Any, ctx: Any) -> None:
    """The many-daemons job: one insert of its id into perf_ran (``sql/record_job.sql``).

    On the child's own connection, committed by the child when the handler returns: one
    autocommit-like insert per job, the exactly-once check's evidence (no unique index, so
    a job run twice shows as a duplicate rather than as a failure).
    """
    with ctx.connection.cursor() as cur:
        cur.execute(RECORD_JOB, {"job_id": ctx.job.id})
