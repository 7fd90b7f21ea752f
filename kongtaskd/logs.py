"""Logging: text or JSON lines on stderr, job context on every record, no passwords ever.

Every record is scrubbed of every secret :mod:`kongtaskd.redact` holds (the connection's
passwords, registered by config loading and by each connect), in message, traceback and
``extra=`` fields alike, in both formats.

The daemon runs under systemd, so logs go to stderr and journald stores them; the text
format still starts with an ISO-8601 UTC timestamp because people also run kongtaskd in a
terminal, and journald's own timestamp is the time of receipt, not of the event.

Job context travels in a :mod:`contextvars` variable set by the child around each handler
call (:func:`job_context`). A filter on our handler copies it onto every record, so a
handler's plain ``logging.getLogger(__name__)`` calls carry ``job_id`` and ``task`` too,
not only ``ctx.logger``'s. Context variables follow ``async`` handlers into their tasks.

Nothing here starts a thread or holds a lock across calls; the stdlib re-initialises
handler locks in a forked child, so this setup is safe to inherit across ``fork()``.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import json
import logging
import sys
from collections.abc import Iterator
from typing import IO, Any

from kongtaskd.dsn import mask_secrets

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("text", "json")

_job: contextvars.ContextVar[tuple[int, str] | None] = contextvars.ContextVar(
    "kongtaskd_job", default=None
)

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD_ATTRIBUTES = frozenset(
    vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None))
) | {"message", "asctime", "job_id", "task", "taskName", "_masked"}


@contextlib.contextmanager
def job_context(job_id: int, task: str) -> Iterator[None]:
    """Within this block every log record carries ``job_id`` and ``task``."""
    token = _job.set((job_id, task))
    try:
        yield
    finally:
        _job.reset(token)


def current_job() -> tuple[int, str] | None:
    """``(job_id, task)`` of the job being run in this context, if any."""
    return _job.get()


class JobContextFilter(logging.Filter):
    """Adds ``job_id``/``task`` to records (None outside a job); ``extra=`` values win."""

    def filter(self, record: logging.LogRecord) -> bool:
        job = _job.get()
        if not hasattr(record, "job_id"):
            record.job_id = job[0] if job else None
        if not hasattr(record, "task"):
            record.task = job[1] if job else None
        return True


class SecretMaskingFilter(logging.Filter):
    """Masks secrets (registered ones, DSN passwords) in the rendered message of every record.

    The message is rendered once here and the arguments dropped, so later handlers and
    formatters see only the masked text.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad %-format must not lose the record; logging reports it
            return True
        record.msg = mask_secrets(message)
        record.args = None
        record._masked = True  # the formatters need not scrub the message a second time
        return True


def _message(record: logging.LogRecord) -> str:
    """The record's message, scrubbed (once: the filter may have done it already)."""
    message = record.getMessage()
    return message if getattr(record, "_masked", False) else mask_secrets(message)


def _timestamp(created: float) -> str:
    moment = dt.datetime.fromtimestamp(created, tz=dt.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class TextFormatter(logging.Formatter):
    """``2026-11-23T09:00:00.123Z INFO kongtaskd.supervisor: message``.

    Inside a job: ``... INFO myapp.tasks [job 42 send_email]: message``.
    """

    def format(self, record: logging.LogRecord) -> str:
        job_id = getattr(record, "job_id", None)
        where = record.name
        if job_id is not None:
            where += f" [job {job_id} {getattr(record, 'task', None) or '?'}]"
        head = mask_secrets(f"{_timestamp(record.created)} {record.levelname} {where}")
        line = f"{head}: {_message(record)}"
        if record.exc_info:
            line += "\n" + mask_secrets(self.formatException(record.exc_info))
        if record.stack_info:
            line += "\n" + mask_secrets(self.formatStack(record.stack_info))
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers.

    Keys: ``ts, level, logger, msg, job_id, task, pid`` always (``job_id``/``task`` null
    outside a job), ``exc`` with the traceback when there is one, plus ``extra=`` fields.
    """

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": _timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": None,  # filled in below, scrubbed once
            "job_id": getattr(record, "job_id", None),
            "task": getattr(record, "task", None),
            "pid": record.process,
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRIBUTES and key not in entry:
                entry[key] = value
        # Scrubbed value by value, before encoding: scrubbing the encoded line could eat a
        # quote of the JSON syntax next to a secret. default: an extra value that JSON
        # cannot hold is still logged, as (scrubbed) text.
        scrubbed = _scrubbed(entry)
        scrubbed["msg"] = _message(record)
        return json.dumps(
            scrubbed,
            default=lambda value: mask_secrets(str(value)),
            ensure_ascii=False,
            separators=(",", ":"),
        )


def _scrubbed(value: Any) -> Any:
    """``value`` with every string in it (keys too) passed through :func:`mask_secrets`."""
    if isinstance(value, str):
        return mask_secrets(value)
    if isinstance(value, dict):
        return {_scrubbed(k) if isinstance(k, str) else k: _scrubbed(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrubbed(item) for item in value]
    return value


class _KongtaskHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the handler we installed, so a second setup replaces it instead of doubling."""


def setup_logging(level: str = "info", fmt: str = "text", stream: IO[str] | None = None) -> None:
    """Send all logging (ours and the handlers' libraries') to ``stream`` (default stderr).

    ``level`` is one of :data:`LEVELS`, ``fmt`` one of :data:`FORMATS`. Calling it again
    replaces the previous set-up (the CLI first logs with defaults, then with the config).
    """
    if level not in LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}, got {level!r}")
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _KongtaskHandler)]:
        root.removeHandler(old)
    handler = _KongtaskHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(JobContextFilter())
    handler.addFilter(SecretMaskingFilter())
    root.addHandler(handler)
    root.setLevel(level.upper())
