"""Job hooks: code of the app's (``hooks: package.module``) and of kongtaskd's integrations,
called in the child around every job whose handler runs.

A user hook module may define any of::

    on_job_start(job)                      # before the handler
    on_job_success(job, seconds)           # the handler returned; its transaction committed
    on_job_failure(job, error, will_retry) # the handler raised ``error`` (the exception)

``on_job_success`` and ``on_job_failure`` run after the outcome went to the supervisor, so a
slow or hanging hook never holds a job's outcome back. A hook that raises is logged (with the
job's id) and changes nothing: the job's outcome is the handler's alone.

Integrations are internal hook objects, built when the child starts (:func:`build`):

* Django mode (``django_settings``): each handler runs in ``transaction.atomic()`` between
  ``runtime.before_job()`` and ``runtime.after_job()`` (``kongtaskd.contrib.django.runtime``);
* Sentry (:mod:`kongtaskd.integrations.sentry`), when a Sentry client is active in the child;
* OpenTelemetry (:mod:`kongtaskd.integrations.otel`), when the app imported it.

Children end in ``os._exit`` (no atexit, no finalisers): :meth:`Hooks.flush`, called by
``Child.leave`` on every exit path, flushes what the integrations buffer (Sentry's queue,
the span processors), bounded by ``tunables.HOOK_FLUSH_SECONDS``.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kongtaskd import tunables
from kongtaskd.job import Job
from kongtaskd.registry import import_module

log = logging.getLogger("kongtaskd.hooks")

#: The functions a user hook module may define.
HOOK_NAMES = ("on_job_start", "on_job_success", "on_job_failure")


def load_module(name: str) -> Any:
    """Import the ``hooks:`` module; a TaskImportError names it (and file:line) if that fails.

    A module may define no hook at all (it only initialises Sentry or OpenTelemetry), but an
    ``on_job_*`` name that is not a hook is a typo that would never be called: refused.
    """
    module = import_module(name, "hooks: ")
    for attribute in dir(module):
        if attribute.startswith("on_job_") and attribute not in HOOK_NAMES:
            from kongtaskd.errors import TaskImportError

            raise TaskImportError(
                f"hooks: module {name!r} defines {attribute}, which is not a hook "
                f"(the hooks are {', '.join(HOOK_NAMES)})"
            )
    return module


@dataclass
class Hooks:
    """The hooks of one child: called in order at the start, in reverse order at the end."""

    #: Objects with any of HOOK_NAMES, ``around(job, trace)`` and ``flush(seconds)``.
    members: Sequence[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        # Looked up once: a child without integrations pays a falsy check per job, no more.
        self.arounds = [m for m in self.members if getattr(m, "around", None) is not None]

    def __bool__(self) -> bool:
        return bool(self.members)

    def started(self, job: Job) -> None:
        for member in self.members:
            self._call(member, "on_job_start", job)

    def succeeded(self, job: Job, seconds: float) -> None:
        for member in reversed(self.members):
            self._call(member, "on_job_success", job, seconds)

    def failed(self, job: Job, error: BaseException, will_retry: bool) -> None:
        for member in reversed(self.members):
            self._call(member, "on_job_failure", job, error, will_retry)

    def around(
        self, job: Job, trace: Mapping[str, str] | None
    ) -> contextlib.AbstractContextManager[None]:
        """See :meth:`stacked`; a no-op context when no integration wraps the handler."""
        if not self.arounds:
            return contextlib.nullcontext()
        return self.stacked(job, trace)

    @contextlib.contextmanager
    def stacked(self, job: Job, trace: Mapping[str, str] | None) -> Iterator[None]:
        """The integrations' context managers around the handler call (the first outermost).

        Unlike the user hooks these see the handler's exception pass through them (a Django
        transaction rolls back, a span records it). One that fails on entry is logged and
        left out; one that raises on exit fails the job, as it should: that is a commit of
        the handler's writes that did not happen.
        """
        with contextlib.ExitStack() as stack:
            for member in self.arounds:
                enter: Callable[..., Any] = member.around
                try:
                    stack.enter_context(enter(job, trace))
                except Exception:
                    log.exception("hook %s failed before job %d", _name(member), job.id)
            yield

    def flush(self, seconds: float = tunables.HOOK_FLUSH_SECONDS) -> None:
        """Push out what the integrations buffer; called once, before the child exits."""
        for member in self.members:
            flush = getattr(member, "flush", None)
            if flush is None:
                continue
            try:
                flush(seconds)
            except Exception:
                log.exception("hook %s could not flush", _name(member))

    def _call(self, member: Any, hook: str, job: Job, *args: Any) -> None:
        function = getattr(member, hook, None)
        if function is None:
            return
        try:
            function(job, *args)
        except Exception:  # a hook never changes the job's outcome
            log.exception("hook %s.%s raised for job %d", _name(member), hook, job.id)


def _name(member: Any) -> str:
    return str(getattr(member, "__name__", None) or getattr(member, "name", type(member).__name__))


def build(
    hooks_module: str | None,
    *,
    django_settings: str | None = None,
    sentry: Any = None,
) -> Hooks:
    """The child's hooks, after its handlers imported: integrations first, then the user's.

    ``sentry`` is the config's ``sentry`` section (``SentryConfig`` or None): when set, the
    SDK is initialised here, in the child (its transport thread is then this process's).
    """
    members: list[Any] = []
    if django_settings:
        from kongtaskd.integrations.django import DjangoIntegration

        members.append(DjangoIntegration())
    # OpenTelemetry only when the app (its hooks or handlers, or an auto-instrumenting
    # launcher) imported it: without a configured provider spans would be no-ops anyway.
    if "opentelemetry.trace" in sys.modules:
        from kongtaskd.integrations.otel import OtelIntegration

        members.append(OtelIntegration())
    user = load_module(hooks_module) if hooks_module else None
    if sentry is not None:
        from kongtaskd.integrations import sentry as sentry_integration

        sentry_integration.init(sentry)
    if "sentry_sdk" in sys.modules:
        from kongtaskd.integrations.sentry import SentryIntegration, active

        if active():
            members.append(SentryIntegration())
    if user is not None:
        members.append(user)
    return Hooks(members)
