"""Django mode in the child: each handler runs as Django runs a request.

``runtime.before_job()`` (own connections after the fork, ``close_old_connections``), then
the handler inside ``transaction.atomic()`` on the default database, then
``runtime.after_job()`` whatever happened. The atomic block is what makes a handler's ORM
writes and its ``ctx.add_job`` follow-ups (Django's connection in Django mode) commit together
when it returns and roll back together when it raises, as the child's own connection does
for a plain handler.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any


class DjangoIntegration:
    name = "django"

    @contextlib.contextmanager
    def around(self, job: Any, trace: Mapping[str, str] | None) -> Iterator[None]:
        from django.db import transaction

        from kongtaskd.contrib.django import runtime

        runtime.before_job()
        try:
            with transaction.atomic():
                yield
        finally:
            runtime.after_job()
