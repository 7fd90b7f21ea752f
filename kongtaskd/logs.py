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

Per-job lines are on the hot path (thousands a second), so each costs one record and one
pass of each step: :func:`job_line` makes the record without the stdlib's stack walk
(``findCaller``: the caller is always kongtaskd), the message is scrubbed once (by
:class:`SecretMaskingFilter`), the timestamp's date and time are formatted once a second,
the ``logger [job N task]`` part is scrubbed once per job, not per line. In a child the
handler holds back only a job's end line and captured output (:func:`defer_flushes`): the
child flushes when a job ends (before it reports) and before it exits, the output thread
after each read, so a job's last output and its end line go out in one write, in order, and
nothing waits past the job. Everything else (a handler's own records, "job started", every
WARNING or worse) is written at once: it may be the last line before a crash.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING, Any

from kongtaskd import redact
from kongtaskd.dsn import mask_secrets

if TYPE_CHECKING:
    from kongtaskd.job import Job

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
        if getattr(record, "_masked", False):  # already masked, or holds nobody's data
            return True
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


def _fields(record: logging.LogRecord) -> tuple[float, str, str, Any, Any, str]:
    """What both formats show of a record: created, level, logger, job id, task, message
    (scrubbed). A job line without a record (``job_line``'s direct path) passes the same."""
    job_id, task = getattr(record, "job_id", None), getattr(record, "task", None)
    return record.created, record.levelname, record.name, job_id, task, _message(record)


# The date and time of the last second formatted: strftime once a second, not per line.
_second: tuple[int, str] = (-1, "")


def _timestamp(created: float) -> str:
    global _second
    second, micros = divmod(round(created * 1_000_000), 1_000_000)
    cached = _second  # one read: another thread may replace it meanwhile, never half of it
    if cached[0] != second:
        moment = dt.datetime.fromtimestamp(second, tz=dt.timezone.utc)
        cached = _second = (second, moment.strftime("%Y-%m-%dT%H:%M:%S."))
    return f"{cached[1]}{micros // 1000:03d}Z"


# Scrubbed texts that repeat on every line of a job (logger names, task identifiers, the
# text format's ``logger [job N task]``), for the secrets registry of the moment: a new
# secret empties it. Bounded: a long-lived process sees endless job ids.
_scrubbed_cache: dict[Any, str] = {}
_scrubbed_for: object = None
_SCRUBBED_CACHE_MAX = 4096


def _scrub_cached(key: Any, text: str) -> str:
    """``mask_secrets(text)``, remembered under ``key`` while the registry stays the same."""
    global _scrubbed_for
    registry = redact.registry()
    if _scrubbed_for is not registry:
        _scrubbed_cache.clear()
        _scrubbed_for = registry
    try:
        found = _scrubbed_cache.get(key)
    except TypeError:  # an unhashable job_id or task someone passed in extra=
        return mask_secrets(text)
    if found is None:
        if len(_scrubbed_cache) >= _SCRUBBED_CACHE_MAX:
            _scrubbed_cache.clear()
        found = _scrubbed_cache[key] = mask_secrets(text)
    return found


class TextFormatter(logging.Formatter):
    """``2026-11-23T09:00:00.123Z INFO kongtaskd.supervisor: message``.

    Inside a job: ``... INFO myapp.tasks [job 42 send_email]: message``.
    """

    def format(self, record: logging.LogRecord) -> str:
        line = self.line(*_fields(record))
        if record.exc_info:
            line += "\n" + mask_secrets(self.formatException(record.exc_info))
        if record.stack_info:
            line += "\n" + mask_secrets(self.formatStack(record.stack_info))
        return line

    def line(
        self, created: float, level: str, name: str, job_id: Any, task: Any, message: str
    ) -> str:
        """The line of a record with these fields (``message`` already scrubbed)."""
        if job_id is None:
            where = _scrub_cached(name, name)
        else:
            task = task or "?"
            where = _scrub_cached((name, job_id, task), f"{name} [job {job_id} {task}]")
        # The timestamp and level are ours (digits, a level name): nothing to scrub there.
        return f"{_timestamp(created)} {level} {where}: {message}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers.

    Keys: ``ts, level, logger, msg, job_id, task, pid`` always (``job_id``/``task`` null
    outside a job), ``exc`` with the traceback when there is one, plus ``extra=`` fields.
    """

    def format(self, record: logging.LogRecord) -> str:
        entry = self.entry(*_fields(record), record.process)
        if record.exc_info:
            entry["exc"] = mask_secrets(self.formatException(record.exc_info))
        if record.stack_info:
            entry["stack"] = mask_secrets(self.formatStack(record.stack_info))
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRIBUTES and key not in entry:
                entry[mask_secrets(key)] = _scrubbed(value)
        return self.encode(entry)

    def entry(
        self,
        created: float,
        level: str,
        name: str,
        job_id: Any,
        task: Any,
        message: str,
        pid: int | None,
    ) -> dict[str, Any]:
        """The object of a record with these fields (``message`` already scrubbed)."""
        # Scrubbed value by value, before encoding: scrubbing the encoded line could eat a
        # quote of the JSON syntax next to a secret. ts and level are ours (nothing to
        # scrub); logger and task repeat on every line of a job (scrubbed once, cached).
        return {
            "ts": _timestamp(created),
            "level": level.lower(),
            "logger": _scrub_cached(name, name),
            "msg": message,
            "job_id": _scrubbed(job_id),
            "task": _scrub_cached(task, task) if isinstance(task, str) else _scrubbed(task),
            "pid": pid,
        }

    def encode(self, entry: dict[str, Any]) -> str:
        # default: an extra value that JSON cannot hold is still logged, as (scrubbed) text.
        return json.dumps(
            entry,
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
    """The handler we installed (a second setup replaces it instead of doubling).

    ``deferred``: a record is written into the stream's buffer and the buffer flushed only
    by :func:`flush` (the child's job end and exit) or by a record of WARNING or worse;
    otherwise (the supervisor, the CLI) every record is flushed as it is written.
    """

    deferred = False
    #: Deferred records are in the stream's buffer (``flush`` has something to do).
    pending = False
    #: The filters ``setup_logging`` gave it: any other means a record must be made.
    own_filters: list[Any] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.write_line(self.format(record), record.levelno, record.pathname)
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)

    def write_line(self, line: str, level: int, source: str) -> None:
        """Write a formatted line; flush it now unless it may wait for :func:`flush`."""
        self.stream.write(line + self.terminator)
        if not self.deferred or level >= logging.WARNING or source not in _DEFERRABLE:
            self.stream.flush()
            self.pending = False
        else:
            self.pending = True

    def direct_line(
        self, name: str, level: int, job_id: int, task: str, message: str, source: str
    ) -> None:
        """One of our own job lines without a ``LogRecord`` (``job_line``'s direct path):
        formatted by the same code a record of these fields is, written under the lock
        ``handle`` takes (the output thread writes through this handler too)."""
        formatter = self.formatter
        created = time.time()
        levelname = logging.getLevelName(level)
        if type(formatter) is JsonFormatter:
            pid = os.getpid() if logging.logProcesses else None  # as a LogRecord has it
            entry = formatter.entry(created, levelname, name, job_id, task, message, pid)
            line = formatter.encode(entry)
        else:
            assert type(formatter) is TextFormatter
            line = formatter.line(created, levelname, name, job_id, task, message)
        self.acquire()
        try:
            self.write_line(line, level, source)
        finally:
            self.release()


#: The handlers :func:`defer_flushes` made deferred: what :func:`flush` flushes.
_deferred: list[_KongtaskHandler] = []


def defer_flushes() -> None:
    """From now on our handler flushes only on :func:`flush` and at WARNING or worse (a
    child: it calls :func:`flush` when a job ends and before it exits)."""
    _deferred[:] = [h for h in logging.getLogger().handlers if isinstance(h, _KongtaskHandler)]
    for handler in _deferred:
        handler.deferred = True


def flush() -> None:
    """Write out what our deferred handler buffered; nearly free when nothing is (twice per
    job in a child, whatever the level). Never raises: it runs on the way out of a child,
    possibly from a signal handler that interrupted a write, and losing a log line must not
    lose the exit."""
    for handler in _deferred:
        if handler.pending:
            # Cleared first: a record the output thread writes meanwhile sets it again, so
            # it is flushed now or by the next call, never forgotten.
            handler.pending = False
            try:
                handler.flush()
            except Exception:
                pass


#: pathname of the records :func:`job_line` makes (the stdlib would walk the stack for it).
_JOB_LINE_SOURCE = __file__
#: pathname of a job's end line: the child flushes right after it, so it may wait in the
#: buffer. Every other record of a child is written at once (a handler's own lines, "job
#: started": the last words before a crash that no flush would follow).
_JOB_END_SOURCE = __file__ + ":job_finished"
#: Records a deferred handler may hold back: job ends, and the output capture's lines
#: (its reader thread flushes after each read, the child at each job's end).
_DEFERRABLE = frozenset({_JOB_END_SOURCE, "(captured)"})


def job_line(
    logger: logging.Logger,
    level: int,
    job_id: int,
    task: str,
    msg: str,
    *args: object,
    source: str = _JOB_LINE_SOURCE,
    clean: bool = False,
) -> None:
    """One of kongtaskd's own lines about a job (started, finished), as cheap as a line
    gets: no ``LoggerAdapter``, no stack walk for the caller's file and line, and for a
    ``clean`` line (our text and numbers only: nothing a secret could be in, so no
    redaction pass) that only our handler would see, no ``LogRecord`` at all."""
    if not logger.isEnabledFor(level):
        return
    failed: _KongtaskHandler | None = None
    if clean:
        sink = _direct_sink(logger, level)
        if sink is not None:
            try:
                sink.direct_line(logger.name, level, job_id, task, msg % args, source)
                return
            except RecursionError:
                raise
            except Exception:
                failed = sink  # reported below, with the record, as an emit's error is
    record = logger.makeRecord(
        logger.name,
        level,
        source,
        0,
        msg,
        args,
        None,
        extra={"job_id": job_id, "task": task},
    )
    if clean:
        # Rendered once, here, and not scrubbed (see above).
        record.msg = msg % args
        record.args = None
        record._masked = True
    if failed is not None:
        failed.handleError(record)  # not written again: the write may have got half out
        return
    logger.handle(record)


#: The stdlib's record path as the logging module defines it: a patched one (Sentry's
#: logging integration patches ``Logger.callHandlers``), like a record factory
#: (OpenTelemetry's adds trace ids), wants every record, so our lines then take its way.
#: None when it was patched before we were imported: then they always do.
_STDLIB_PATH = (logging.Logger.handle, logging.Logger.callHandlers, logging.Logger.makeRecord)
if any(method.__module__ != "logging" for method in _STDLIB_PATH):
    _STDLIB_PATH = None  # type: ignore[assignment]


def _direct_sink(logger: logging.Logger, level: int) -> _KongtaskHandler | None:
    """Our handler, when a record from ``logger`` at ``level`` would reach it and nothing
    else: the stdlib's classes and record factory, no filter on the logger, no other handler
    anywhere up to the root, our filters only on ours. Checked per line (a handful of
    attribute reads): an application may add a handler at any time."""
    if (
        type(logger) is not logging.Logger
        or logger.filters  # a logger's filters see its own records, not its children's
        or logging.getLogRecordFactory() is not logging.LogRecord
        or (logging.Logger.handle, logging.Logger.callHandlers, logging.Logger.makeRecord)
        != _STDLIB_PATH
    ):
        return None
    node = logger.parent
    while node is not None and node.parent is not None:  # up to the root
        if node.handlers or not node.propagate:
            return None
        node = node.parent
    if logger.handlers or not logger.propagate or node is None or len(node.handlers) != 1:
        return None
    sink = node.handlers[0]
    if (
        type(sink) is not _KongtaskHandler
        or level < sink.level
        or sink.filters != sink.own_filters
        or type(sink.formatter) not in (TextFormatter, JsonFormatter)
    ):
        return None
    return sink


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
    handler.own_filters = list(handler.filters)
    root.addHandler(handler)
    root.setLevel(level.upper())


# -- what is logged about each job ---------------------------------------------------------
# An operator needs, at INFO, one line per finished job (graphile-worker's one line per
# completed job, not Celery's two): task, id and attempt, the outcome and its duration. A
# failure is WARNING while retries are left and ERROR on the last attempt, with the error's
# first line (the traceback is in last_error). "job started" is DEBUG: the finished line
# says the same and more, and the start of a job that never finishes is in the heartbeat's
# details and the child's process title.


def job_started(logger: logging.Logger, job: Job) -> None:
    """DEBUG: the handler is about to run."""
    job_line(
        logger,
        logging.DEBUG,
        job.id,
        job.task_identifier,
        "job started (attempt %d of %d)",
        job.attempts,
        job.max_attempts,
        clean=True,
    )


def job_finished(logger: logging.Logger, job: Job, seconds: float, error: str | None) -> None:
    """The one INFO line per job (success), or its failure at WARNING/ERROR."""
    if error is None:
        job_line(
            logger,
            logging.INFO,
            job.id,
            job.task_identifier,
            "job succeeded in %.3fs (attempt %d of %d)",
            seconds,
            job.attempts,
            job.max_attempts,
            source=_JOB_END_SOURCE,
            clean=True,
        )
        return
    last = job.attempts >= job.max_attempts
    job_line(
        logger,
        logging.ERROR if last else logging.WARNING,
        job.id,
        job.task_identifier,
        "job failed in %.3fs (attempt %d of %d, %s): %s",
        seconds,
        job.attempts,
        job.max_attempts,
        "no retries left" if last else "will retry",
        error.split("\n", 1)[0],
        source=_JOB_END_SOURCE,
    )
