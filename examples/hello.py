"""Example handlers for conf/kongtask.yaml: the README's quick start runs these.

Each handler is ``handler(payload, ctx)``: return for success, raise for failure (the job
is retried with graphile-worker's back-off until ``max_attempts``).
"""

from __future__ import annotations

import random
from typing import Any

import kongtaskd


def hello(payload: dict[str, Any], ctx: Any) -> None:
    """Greets; the simplest possible job."""
    ctx.logger.info("hello, %s!", payload.get("name", "world"))


def flaky(payload: dict[str, Any], ctx: Any) -> None:
    """Fails about half the time, to show retries in `kongtaskd jobs list --failed`."""
    if random.random() < payload.get("failure_rate", 0.5):
        raise RuntimeError(f"flaky failed on attempt {ctx.job.attempts}")
    ctx.logger.info("flaky succeeded on attempt %d", ctx.job.attempts)


@kongtaskd.task("fan_out")
def fan_out(payload: dict[str, Any], ctx: Any) -> None:
    """Enqueues follow-up jobs in its own transaction: they exist only if this job succeeds."""
    for n in range(int(payload.get("count", 3))):
        ctx.add_job("hello", {"name": f"follow-up {n}"})
