"""The kongtaskd handler of every ``django.tasks:<queue>`` job: runs the Django task it names.

Imported by the process that imports handlers (after its fork from the supervisor, never
by the supervisor). Importing it sets Django up (:func:`runtime.setup`): ``manage.py
kongtaskd`` lists this handler first in the daemon's ``tasks``, which the child resolves
before any other handler or ``task_modules`` entry, so the app's own handler modules are
imported with the app registry ready.

Each run is one ``transaction.atomic`` on the backend's database: the task's ORM writes and
the tasks it enqueues commit together when it returns and roll back together when it raises
(the job is then retried as graphile-worker retries any failed job). Around it, Django's
``task_started`` / ``task_finished`` signals; around those, the child's Django mode
(``kongtaskd.integrations.django``): the request cycle's connection hygiene
(:func:`runtime.before_job` / :func:`runtime.after_job`) and the handler's atomic block on
"default" (this one is then a savepoint of it when the backend's database is "default").
"""

from __future__ import annotations

import dataclasses
from typing import Any

from kongtaskd.contrib.django import runtime

runtime.setup()

from django.db import transaction  # noqa: E402  (after django.setup(): models may load)
from django.utils import timezone  # noqa: E402
from django.utils.module_loading import import_string  # noqa: E402

from kongtaskd.contrib.django._compat import (  # noqa: E402
    Task,
    TaskContext,
    TaskResultStatus,
    task_backends,
    task_finished,
    task_started,
)
from kongtaskd.contrib.django.backend import (  # noqa: E402
    IDENTIFIER_PREFIX,
    KongtaskdBackend,
    result_from_job,
)


class BadTaskPayload(ValueError):
    """A ``django.tasks:*`` job whose payload does not name a runnable Django task."""


def _task_of(payload: Any, job_id: int) -> tuple[Any, list[Any], dict[str, Any], str]:
    if not isinstance(payload, dict) or not isinstance(payload.get("task"), str):
        raise BadTaskPayload(f"job {job_id}: payload must be an object with a 'task' path")
    path = payload["task"]
    args = payload.get("args", [])
    kwargs = payload.get("kwargs", {})
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise BadTaskPayload(f"job {job_id}: payload 'args' must be a list, 'kwargs' an object")
    try:
        task = import_string(path)
    except ImportError as error:
        raise BadTaskPayload(f"job {job_id}: cannot import task {path!r}: {error}") from None
    if not isinstance(task, Task):
        raise BadTaskPayload(f"job {job_id}: {path!r} is not a @task-decorated function")
    return task, args, kwargs, str(payload.get("backend") or task.backend)


def run_task(payload: Any, ctx: Any) -> None:
    """Run the Django task a ``django.tasks:<queue>`` job names (a kongtaskd handler).

    The child of a Django-mode daemon already runs every handler between
    ``runtime.before_job()`` and ``runtime.after_job()``, inside ``transaction.atomic()``
    on "default" (``kongtaskd.integrations.django``): calling ``close_old_connections``
    again in here, inside that atomic block, would close the connection under it.
    """
    task, args, kwargs, alias = _task_of(payload, ctx.job.id)
    backend = task_backends[alias]
    if not isinstance(backend, KongtaskdBackend):
        raise BadTaskPayload(f"job {ctx.job.id}: TASKS[{alias!r}] is not a kongtaskd backend")
    queue = ctx.job.task_identifier[len(IDENTIFIER_PREFIX) :]
    task = task.using(queue_name=queue, priority=max(-100, min(100, -ctx.job.priority)))
    started = timezone.now()
    job = dataclasses.replace(ctx.job, locked_at=ctx.job.locked_at or started)
    result = result_from_job(task, job, alias)
    object.__setattr__(result, "status", TaskResultStatus.RUNNING)
    task_started.send(type(backend), task_result=result)
    try:
        with transaction.atomic(using=backend.database):
            if task.takes_context:
                task.call(TaskContext(task_result=result), *args, **kwargs)
            else:
                task.call(*args, **kwargs)
    except BaseException:
        object.__setattr__(result, "status", TaskResultStatus.FAILED)
        object.__setattr__(result, "finished_at", timezone.now())
        task_finished.send(type(backend), task_result=result)
        raise
    object.__setattr__(result, "status", TaskResultStatus.SUCCESSFUL)
    object.__setattr__(result, "finished_at", timezone.now())
    task_finished.send(type(backend), task_result=result)
