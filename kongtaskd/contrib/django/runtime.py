"""Django inside the processes that run handlers (Django mode, ``django_settings`` set).

Which process calls what:

* :func:`setup` in the process that imports handler modules, after its fork from the
  supervisor and before the first handler module is imported (``django.setup()`` loads the
  app registry that models need). Idempotent.
* :func:`before_job` and :func:`after_job` around every job in the child, as Django's
  request cycle does around a request: ``close_old_connections()``, so a connection past
  its ``CONN_MAX_AGE`` (or broken, or left in an unusable state) is closed and the next
  query opens a fresh one, while a persistent one (``CONN_MAX_AGE`` > 0 or None) is reused.
* :func:`add_job` is ``ctx.add_job`` in Django mode: the job goes through Django's
  connection, so a handler's ORM writes and its follow-up jobs commit or roll back
  together (inside the handler's ``transaction.atomic``, or each at once in autocommit).

Connections inherited across a fork are discarded, never closed: closing (or letting the
driver finalise them) would send a Terminate message on the parent's socket and end the
parent's session. :func:`before_job` notices a fork since the last job (the pid changed)
and drops every inherited Django connection: its file descriptor is closed underneath the
driver object, and the object is kept referenced, so no finaliser runs (children end in
``os._exit``). The next ORM query opens the child's own connection.

The child of a Django-mode daemon calls these for every handler, plain or ``django.tasks``
(``kongtaskd.integrations.django``, with the handler in ``transaction.atomic()``); the
zygote and the child call :func:`setup` before importing any handler (docs/django.md).
"""

from __future__ import annotations

import os
from typing import Any

from kongtaskd.job import Job

#: Driver connections dropped after a fork: referenced here forever so they are never
#: finalised (a finaliser would send Terminate on the parent's socket).
_DISCARDED: list[Any] = []

#: The pid whose Django connections are its own (None: Django not set up here yet).
_OWNER_PID: int | None = None


def setup(settings_module: str | None = None) -> None:
    """``django.setup()`` in this process, once; ``settings_module`` sets
    DJANGO_SETTINGS_MODULE when it is not set (the daemon command sets both)."""
    global _OWNER_PID
    if settings_module:
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", settings_module)
    import django
    from django.apps import apps

    if not apps.ready:
        django.setup()
    if _OWNER_PID is None:
        _OWNER_PID = os.getpid()


def discard_inherited_connections() -> int:
    """Drop every Django connection this process inherited from its parent, without closing
    it; returns how many were open. Safe to call in a process that owns its connections
    only when they are not in use (it forgets them all)."""
    from django.db import connections

    dropped = 0
    for wrapper in connections.all(initialized_only=True):
        raw = wrapper.connection
        if raw is not None:
            try:
                os.close(raw.fileno())
            except (OSError, ValueError, AttributeError):
                pass  # already closed or no socket: nothing of the parent's to protect
            _DISCARDED.append(raw)
            dropped += 1
        _DISCARDED.append(wrapper)
        # A fresh wrapper for this alias on next use: no inherited transaction state.
        del connections[wrapper.alias]
    return dropped


def before_job() -> None:
    """At the start of a job: own connections only, then Django's request-start cleanup."""
    global _OWNER_PID
    from django.db import close_old_connections

    if os.getpid() != _OWNER_PID:
        discard_inherited_connections()
        _OWNER_PID = os.getpid()
    close_old_connections()


def after_job() -> None:
    """At the end of a job: Django's request-end cleanup (closes connections past
    ``CONN_MAX_AGE``, keeps persistent ones)."""
    from django.db import close_old_connections

    close_old_connections()


def add_job(
    identifier: str,
    payload: Any = None,
    *,
    using: str | None = None,
    schema: str = "graphile_worker",
    **options: Any,
) -> Job:
    """``ctx.add_job`` in Django mode: through Django's connection ``using`` (default
    "default"), in its current transaction."""
    from kongtaskd.contrib.django import db

    return db.add_job(identifier, payload, using=using, schema=schema, **options)
