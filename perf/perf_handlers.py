"""The benchmark's kongtaskd handlers (the daemon's ``python_path`` points at ``perf/``).

They mirror ``perf/graphile/tasks/*.cjs`` so both systems run the same work.
"""

from __future__ import annotations

import time
from typing import Any


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
