"""``KongtaskdBackend``: a ``django.tasks`` backend whose tasks are kongtaskd jobs.

``TASKS = {"default": {"BACKEND": "kongtaskd.contrib.django.KongtaskdBackend",
"QUEUES": ["default", "emails"], "OPTIONS": {"database": "default", "max_attempts": 25}}}``

Enqueue is transactional: ``task.enqueue()`` adds the job on Django's connection
``OPTIONS["database"]`` in its current transaction (:mod:`kongtaskd.contrib.django.db`). Inside
``transaction.atomic`` the job exists if and only if the block commits, together with the
rows the block wrote. That is stronger than ``transaction.on_commit(lambda:
task.enqueue())``, which other backends suggest: there the job is sent after the commit, so
a crash, a lost broker connection or a failing enqueue between the commit and the send loses
the job while the data it was about says it should exist.

The mapping onto graphile-worker's job (one kongtaskd task identifier per Django queue):

* task identifier ``django.tasks:<queue_name>``. Django's ``queue_name`` is routing, so it
  becomes the identifier a daemon claims by (``manage.py kongtaskd --queue emails`` runs only
  those), never graphile-worker's ``queue_name``, which would make a queue's jobs run one at
  a time. The job's graphile-worker queue is null: Django tasks run in parallel.
* payload ``{"task": "<module.function>", "args": [...], "kwargs": {...}, "backend":
  "<alias>"}``; args and kwargs as Django normalises them to JSON.
* ``priority``: Django runs higher first (-100..100), graphile-worker lower first: the job's
  priority is the negated Django priority.
* ``run_after`` -> ``run_at`` (a naive datetime, possible with USE_TZ = False, is in Django's
  current time zone).
* ``takes_context``: the function gets a ``TaskContext`` whose ``attempt`` is the job's
  attempt number (1 on the first run).

Results: ``get_result(id)`` (the id is the job id) reads the job row. A job waiting or
retrying is READY, one a daemon holds is RUNNING, one that used up its attempts is FAILED
(with its last error as the traceback). A job that succeeded has left the table; where the
daemons keep the completed-job history (``keep_completed``, table
``_kongtaskd_completed_jobs``, checked with to_regclass) and it holds a record of the job,
the result is SUCCESSFUL with the record's times. The history stores neither the payload
nor a return value: such a result has no args, its ``return_value`` is None, and its task
is :func:`completed_task` (so ``backend.get_result(id)`` answers, while
``my_task.get_result(id)`` raises Django's ``TaskResultMismatch``). Without a record,
``TaskResultDoesNotExist`` is raised, as for an unknown id.
"""

from __future__ import annotations

import builtins
import datetime as dt
import functools
from typing import Any

from django.core import checks
from django.db import DEFAULT_DB_ALIAS, connections
from django.utils import timezone
from django.utils.module_loading import import_string

from kongtaskd.config import MAX_TASK_IDENTIFIER_LENGTH
from kongtaskd.contrib.django import conf, db
from kongtaskd.contrib.django._compat import (
    BaseTaskBackend,
    InvalidTask,
    Task,
    TaskError,
    TaskResult,
    TaskResultDoesNotExist,
    TaskResultStatus,
    normalize_json,
    task_enqueued,
)
from kongtaskd.job import Job

#: The kongtaskd task identifier of a Django queue is this prefix plus the queue's name.
IDENTIFIER_PREFIX = "django.tasks:"
#: The longest Django queue name that still fits graphile-worker's identifier limit.
MAX_QUEUE_NAME_LENGTH = MAX_TASK_IDENTIFIER_LENGTH - len(IDENTIFIER_PREFIX)
#: The handler the daemon runs for every ``django.tasks:<queue>`` identifier.
HANDLER = "kongtaskd.contrib.django.worker:run_task"

OPTIONS = ("database", "max_attempts")


class JobError(Exception):
    """Stands for a failed attempt's exception in a TaskResult's ``errors`` when its class
    is not a builtin: the job row stores ``Type: message`` and the traceback as text only,
    and the traceback names the real class."""


def completed_task(*args: Any, **kwargs: Any) -> None:
    """The task of a result read from the completed-job history, which does not record the
    function that ran: calling it is an error, not a second run."""
    raise RuntimeError(
        "this result comes from kongtaskd's completed-job history, which does not record "
        "the task function; the job has already run"
    )


def task_identifier(queue_name: str) -> str:
    """The kongtaskd task identifier of Django queue ``queue_name``."""
    return IDENTIFIER_PREFIX + queue_name


def _exception_path(last_error: str) -> str:
    name = last_error.split(":", 1)[0].strip()
    found = getattr(builtins, name, None)
    if isinstance(found, type) and issubclass(found, BaseException):
        return f"builtins.{name}"
    return f"{JobError.__module__}.{JobError.__qualname__}"


def _status(job: Job) -> Any:
    if job.locked_at is not None:
        return TaskResultStatus.RUNNING
    if job.last_error is not None and job.attempts >= job.max_attempts:
        return TaskResultStatus.FAILED
    return TaskResultStatus.READY


def result_from_job(task: Any, job: Job, alias: str) -> Any:
    """The TaskResult a job row stands for."""
    status = _status(job)
    payload = job.payload if isinstance(job.payload, dict) else {}
    errors = []
    if job.last_error:
        path = _exception_path(job.last_error)
        errors.append(TaskError(exception_class_path=path, traceback=job.last_error))
    # Which pools ran the earlier attempts is not recorded; the current one is locked_by.
    workers = ["unknown"] * job.attempts
    if job.locked_by and workers:
        workers[-1] = job.locked_by
    attempted = job.locked_at if job.locked_at is not None else job.updated_at
    return TaskResult(
        task=task,
        id=str(job.id),
        status=status,
        enqueued_at=job.created_at,
        started_at=job.locked_at,
        finished_at=job.updated_at if status == TaskResultStatus.FAILED else None,
        last_attempted_at=attempted if job.attempts else None,
        args=payload.get("args", []),
        kwargs=payload.get("kwargs", {}),
        backend=alias,
        errors=errors,
        worker_ids=workers,
    )


class KongtaskdBackend(BaseTaskBackend):  # type: ignore[misc]
    """Tasks as kongtaskd jobs, enqueued in the caller's transaction (module docstring)."""

    supports_defer = True  # run_after -> run_at
    supports_async_task = True  # coroutine functions run through Django's async_to_sync
    # While the job row exists (waiting, running, failed); a succeeded job only from the
    # completed-job history (keep_completed).
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        self.database: str = self.options.get("database", DEFAULT_DB_ALIAS)
        self.max_attempts: int | None = self.options.get("max_attempts")

    @functools.cached_property
    def schema(self) -> str:
        """The queue's schema: ``KONGTASKD["schema"]`` with the environment over it."""
        return conf.load(resolve_connection=False).schema

    def validate_task(self, task: Any) -> None:
        super().validate_task(task)
        if len(task.queue_name) > MAX_QUEUE_NAME_LENGTH:
            raise InvalidTask(
                f"queue_name {task.queue_name!r} is {len(task.queue_name)} characters long; "
                f"kongtaskd allows at most {MAX_QUEUE_NAME_LENGTH}"
            )

    def enqueue(self, task: Any, args: Any, kwargs: Any) -> Any:
        self.validate_task(task)
        args, kwargs = normalize_json(list(args)), normalize_json(dict(kwargs))
        run_at: dt.datetime | None = task.run_after
        if run_at is not None and timezone.is_naive(run_at):
            run_at = timezone.make_aware(run_at)
        job = db.add_job(
            task_identifier(task.queue_name),
            {"task": task.module_path, "args": args, "kwargs": kwargs, "backend": self.alias},
            using=self.database,
            schema=self.schema,
            priority=-task.priority,
            run_at=run_at,
            max_attempts=self.max_attempts,
        )
        result = result_from_job(task, job, self.alias)
        task_enqueued.send(type(self), task_result=result)
        return result

    def get_result(self, result_id: str) -> Any:
        try:
            job_id = int(result_id)
        except (TypeError, ValueError):
            raise TaskResultDoesNotExist(f"{result_id!r} is not a kongtaskd job id") from None
        job = db.get_job(job_id, using=self.database, schema=self.schema)
        gone = (
            f"job {job_id} is not in the queue: it succeeded (kongtaskd keeps no results) "
            "or was removed, or never existed"
        )
        if job is None:
            return self._completed_result(job_id, gone)
        if not job.task_identifier.startswith(IDENTIFIER_PREFIX):
            raise TaskResultDoesNotExist(gone)
        payload = job.payload if isinstance(job.payload, dict) else {}
        if payload.get("backend", self.alias) != self.alias:
            raise TaskResultDoesNotExist(f"job {job_id} belongs to backend {payload['backend']!r}")
        try:
            task = import_string(payload["task"])
        except (ImportError, KeyError, TypeError) as error:
            raise TaskResultDoesNotExist(f"job {job_id}: cannot import its task: {error}") from None
        if not isinstance(task, Task):
            raise TaskResultDoesNotExist(f"job {job_id}: {payload['task']!r} is not a Task")
        # The task as it was enqueued: its queue (the identifier) and priority (negated).
        task = task.using(
            queue_name=job.task_identifier[len(IDENTIFIER_PREFIX) :],
            priority=max(-100, min(100, -job.priority)),
        )
        return result_from_job(task, job, self.alias)

    def _completed_result(self, job_id: int, gone: str) -> Any:
        """The SUCCESSFUL result of a job the history (``keep_completed``) recorded, else
        ``TaskResultDoesNotExist``."""
        record = db.completed_job(job_id, using=self.database, schema=self.schema)
        if record is None or not record.task_identifier.startswith(IDENTIFIER_PREFIX):
            raise TaskResultDoesNotExist(gone)
        queue_name = record.task_identifier[len(IDENTIFIER_PREFIX) :]
        try:
            # The history keeps no payload: which function ran is not known (module docstring).
            task = Task(func=completed_task, backend=self.alias, queue_name=queue_name)
        except InvalidTask as error:
            raise TaskResultDoesNotExist(f"job {job_id} succeeded, but {error}") from None
        # Which pools ran the earlier attempts is not recorded; the last one is pool_id.
        workers = ["unknown"] * max(record.attempts - 1, 0) + [record.pool_id]
        return TaskResult(
            task=task,
            id=str(job_id),
            status=TaskResultStatus.SUCCESSFUL,
            enqueued_at=record.created_at,
            started_at=record.started_at,
            finished_at=record.finished_at,
            last_attempted_at=record.started_at,
            args=[],
            kwargs={},
            backend=self.alias,
            errors=[],
            worker_ids=workers,
        )

    # No check() override: the app's system check reports backend problems once
    # (kongtaskd.contrib.django.checks), also where Django's own task check does not run.


def backend_problems(backend: KongtaskdBackend) -> list[checks.CheckMessage]:
    """What is wrong with a kongtaskd backend's settings (system check ``kongtaskd.E002``..)."""
    where = f"settings.TASKS[{backend.alias!r}]"
    found: list[checks.CheckMessage] = []
    for key in backend.options:
        if key not in OPTIONS:
            found.append(
                checks.Error(
                    f"{where}: unknown OPTIONS key {key!r} (known: {', '.join(OPTIONS)})",
                    id="kongtaskd.E003",
                )
            )
    if backend.database not in connections:
        found.append(
            checks.Error(
                f"{where}: OPTIONS['database'] {backend.database!r} is not in settings.DATABASES",
                id="kongtaskd.E002",
            )
        )
    elif connections[backend.database].vendor != "postgresql":
        vendor = connections[backend.database].vendor
        found.append(
            checks.Error(
                f"{where}: database {backend.database!r} is {vendor}; kongtaskd needs PostgreSQL",
                id="kongtaskd.E002",
            )
        )
    attempts = backend.max_attempts
    if attempts is not None and (
        isinstance(attempts, bool) or not isinstance(attempts, int) or not 1 <= attempts <= 32767
    ):
        found.append(
            checks.Error(
                f"{where}: OPTIONS['max_attempts'] must be an integer between 1 and 32767, "
                f"got {attempts!r}",
                id="kongtaskd.E003",
            )
        )
    for queue in sorted(backend.queues):
        if len(queue) > MAX_QUEUE_NAME_LENGTH:
            found.append(
                checks.Error(
                    f"{where}: queue name {queue!r} is longer than {MAX_QUEUE_NAME_LENGTH} "
                    "characters",
                    id="kongtaskd.E003",
                )
            )
    return found
