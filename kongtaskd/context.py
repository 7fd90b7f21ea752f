"""What a handler receives as its second argument."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from psycopg2.extensions import connection as Connection

from kongtaskd.job import Job


@dataclass
class JobContext:
    """``handler(payload, ctx)``: everything a handler may need besides its payload.

    ``connection`` is the child's own psycopg2 connection. The handler's statements on it
    run in one transaction that the child commits when the handler returns and rolls back
    when it raises, so ``ctx.add_job`` follow-ups are enqueued only if the handler succeeds.

    In Django mode (``django``: the daemon runs with ``django_settings``) the handler runs
    inside ``transaction.atomic()`` on Django's default database, and ``ctx.add_job`` /
    ``ctx.add_jobs`` go through Django's connection instead: the follow-up jobs commit or
    roll back together with the handler's ORM writes. ``connection`` is still the child's
    own (a second transaction, committed after Django's).
    """

    job: Job
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger]
    connection: Connection
    schema: str
    django: bool = False
    #: Asked by ``cancelled``: has a cancel for this job arrived (the child's records)?
    cancel_check: Callable[[], bool] = field(default=lambda: False, repr=False)

    @property
    def cancelled(self) -> bool:
        """True once a cancel for this job arrived (``kongtaskd jobs cancel``): with
        ``cancel_grace`` > 0 a handler can poll it and stop cleanly before JobInterrupted."""
        return self.cancel_check()

    def add_job(self, identifier: str, payload: Any = None, **options: Any) -> Job:
        """``kongtaskd.add_job`` inside the handler's transaction (Django's in Django mode)."""
        options.setdefault("schema", self.schema)
        if self.django:
            from kongtaskd.contrib.django import runtime

            return runtime.add_job(identifier, payload, **options)
        from kongtaskd.enqueue import add_job

        return add_job(self.connection, identifier, payload, **options)

    def add_jobs(self, specs: Any, **options: Any) -> list[Job]:
        """``kongtaskd.add_jobs`` inside the handler's transaction (Django's in Django mode)."""
        from kongtaskd.enqueue import add_jobs

        options.setdefault("schema", self.schema)
        if self.django:
            from django.db import connection

            return add_jobs(connection, specs, **options)
        return add_jobs(self.connection, specs, **options)
