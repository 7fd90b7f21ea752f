"""Log formats, job context and password masking."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import io
import json
import logging
import os
import re
from collections.abc import Iterator
from typing import Any

import pytest

from kongtaskd import redact
from kongtaskd.job import Job
from kongtaskd.logs import (
    _direct_sink,
    _KongtaskHandler,
    _timestamp,
    current_job,
    defer_flushes,
    flush,
    job_context,
    job_finished,
    job_started,
    setup_logging,
)

TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (?P<level>[A-Z]+) (?P<rest>.*)$")


@pytest.fixture()
def stream() -> Iterator[io.StringIO]:
    """Logging set up into a buffer; the root logger (and the secrets registry) restored."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    redact.forget_secrets()
    buffer = io.StringIO()
    yield buffer
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)
    redact.forget_secrets()


def lines(buffer: io.StringIO) -> list[str]:
    return buffer.getvalue().splitlines()


def test_text_format(stream: io.StringIO) -> None:
    setup_logging("info", "text", stream)
    logging.getLogger("kongtaskd.supervisor").info("started %d children", 4)
    (line,) = lines(stream)
    match = TEXT_LINE.match(line)
    assert match, line
    assert match["level"] == "INFO"
    assert match["rest"] == "kongtaskd.supervisor: started 4 children"


def test_text_format_shows_the_job(stream: io.StringIO) -> None:
    setup_logging("info", "text", stream)
    with job_context(42, "send_email"):
        logging.getLogger("myapp.tasks").warning("slow smtp")
    logging.getLogger("myapp.tasks").warning("outside")
    first, second = lines(stream)
    assert first.endswith(" WARNING myapp.tasks [job 42 send_email]: slow smtp")
    assert second.endswith(" WARNING myapp.tasks: outside")


def test_level_filters(stream: io.StringIO) -> None:
    setup_logging("warning", "text", stream)
    log = logging.getLogger("kongtaskd.x")
    log.info("hidden")
    log.error("shown")
    assert [line.split(" ", 1)[1] for line in lines(stream)] == ["ERROR kongtaskd.x: shown"]


def test_json_format(stream: io.StringIO) -> None:
    setup_logging("debug", "json", stream)
    with job_context(7, "resize"):
        logging.getLogger("myapp").debug("size %s", "big", extra={"width": 800})
    logging.getLogger("kongtaskd.child").info("idle")
    inside, outside = (json.loads(line) for line in lines(stream))
    assert inside == {
        "ts": inside["ts"],
        "level": "debug",
        "logger": "myapp",
        "msg": "size big",
        "job_id": 7,
        "task": "resize",
        "pid": os.getpid(),
        "width": 800,
    }
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", inside["ts"])
    assert outside["job_id"] is None and outside["task"] is None


def test_json_format_carries_tracebacks_and_odd_extras(stream: io.StringIO) -> None:
    setup_logging("info", "json", stream)
    try:
        raise RuntimeError("broken")
    except RuntimeError:
        logging.getLogger("x").exception("failed", extra={"thing": object()})
    (entry,) = (json.loads(line) for line in lines(stream))
    assert entry["msg"] == "failed"
    assert "RuntimeError: broken" in entry["exc"]
    assert entry["thing"].startswith("<object object")


def test_passwords_are_masked_in_messages_arguments_and_tracebacks(stream: io.StringIO) -> None:
    setup_logging("info", "text", stream)
    log = logging.getLogger("kongtaskd.x")
    log.info("connecting to %s", "postgresql://app:hunter2@db/app")
    log.info("dsn host=db password=hunter2")
    try:
        raise ValueError("bad dsn postgresql://app:hunter2@db/app")
    except ValueError:
        log.exception("oops")
    text = stream.getvalue()
    assert "hunter2" not in text
    assert "connecting to postgresql://app:***@db/app" in text
    assert "password=***" in text


def test_passwords_are_masked_in_json_extras(stream: io.StringIO) -> None:
    setup_logging("info", "json", stream)
    logging.getLogger("x").info("x", extra={"dsn": "postgresql://a:hunter2@h/d"})
    assert "hunter2" not in stream.getvalue()


def test_setting_up_again_replaces_the_handler(stream: io.StringIO) -> None:
    setup_logging("info", "text", stream)
    setup_logging("info", "json", stream)
    logging.getLogger("x").info("once")
    (line,) = lines(stream)
    assert json.loads(line)["msg"] == "once"


def test_job_context_follows_async_tasks(stream: io.StringIO) -> None:
    setup_logging("info", "text", stream)

    async def handler() -> None:
        await asyncio.sleep(0)
        logging.getLogger("myapp").info("async")

    with job_context(9, "crawl"):
        asyncio.run(handler())
        assert current_job() == (9, "crawl")
    assert current_job() is None
    assert lines(stream)[0].endswith("myapp [job 9 crawl]: async")


def test_bad_level_or_format() -> None:
    with pytest.raises(ValueError, match="log level must be one of"):
        setup_logging("loud", "text")
    with pytest.raises(ValueError, match="log format must be one of"):
        setup_logging("info", "xml")


#: A password with every character a DSN, JSON or a repr() treats specially, and unicode.
SECRET = "S3c@r:e/t?#%'\"\\ pässwörd"


def leaks(text: str) -> list[str]:
    return sorted({SECRET[i : i + 4] for i in range(len(SECRET) - 3) if SECRET[i : i + 4] in text})


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_registered_secrets_are_hidden_in_every_part_of_a_record(
    stream: io.StringIO, fmt: str
) -> None:
    redact.register_secret(SECRET)
    setup_logging("info", fmt, stream)
    log = logging.getLogger("kongtaskd.supervisor")
    # What libpq quotes of a mangled DSN: a fragment, not the whole password.
    log.warning("reconnect failed: could not translate host name %r", SECRET[4:] + "@db")
    log.info("handler printed %s", SECRET, extra={"dsn": {"password": [SECRET]}})
    log.info("an object", extra={"thing": type("T", (), {"__str__": lambda _: SECRET})()})
    try:
        raise ValueError(f"bad password {SECRET!r}")
    except ValueError:
        log.exception("oops %s", SECRET[:-3])
    text = stream.getvalue()
    assert not leaks(text), text
    assert "***" in text
    if fmt == "json":
        entries = [json.loads(line) for line in lines(stream)]  # still valid JSON
        assert entries[0]["msg"] == "reconnect failed: could not translate host name '***@db'"
        assert entries[1]["dsn"] == {"password": ["***"]}
        assert entries[2]["thing"] == "***"
        assert "ValueError: bad password '***'" in entries[3]["exc"]
    else:
        assert "reconnect failed: could not translate host name '***@db'" in text


# -- the per-job lines and what makes them cheap ---------------------------------------------
def a_job(attempts: int = 1, max_attempts: int = 25) -> Job:
    values: dict[str, Any] = {f.name: None for f in dataclasses.fields(Job)}
    values.update(id=42, task_identifier="send_email", attempts=attempts, max_attempts=max_attempts)
    return Job(**values)


def test_one_info_line_per_finished_job_and_started_at_debug(stream: io.StringIO) -> None:
    setup_logging("info", "text", stream)
    task_log = logging.getLogger("kongtaskd.task.send_email")
    job_started(task_log, a_job())
    job_finished(task_log, a_job(), 0.0123, None)
    job_finished(task_log, a_job(2, 3), 1.5, "RuntimeError: smtp down\n\nTraceback ...")
    job_finished(task_log, a_job(3, 3), 0.25, "RuntimeError: smtp down")
    assert [line.split(" ", 1)[1] for line in lines(stream)] == [
        "INFO kongtaskd.task.send_email [job 42 send_email]: "
        "job succeeded in 0.012s (attempt 1 of 25)",
        "WARNING kongtaskd.task.send_email [job 42 send_email]: "
        "job failed in 1.500s (attempt 2 of 3, will retry): RuntimeError: smtp down",
        "ERROR kongtaskd.task.send_email [job 42 send_email]: "
        "job failed in 0.250s (attempt 3 of 3, no retries left): RuntimeError: smtp down",
    ]
    setup_logging("debug", "json", stream)
    stream.truncate(0)
    stream.seek(0)
    job_started(task_log, a_job())
    (entry,) = (json.loads(line) for line in lines(stream))
    assert entry == {
        "ts": entry["ts"],
        "level": "debug",
        "logger": "kongtaskd.task.send_email",
        "msg": "job started (attempt 1 of 25)",
        "job_id": 42,
        "task": "send_email",
        "pid": os.getpid(),
    }


def test_a_secret_registered_later_is_hidden_in_names_seen_before(stream: io.StringIO) -> None:
    """The scrubbed logger names and job tags are cached: a new secret must empty the cache."""
    setup_logging("info", "text", stream)
    task_log = logging.getLogger("kongtaskd.task.hunter2secret")
    job = dataclasses.replace(a_job(), task_identifier="hunter2secret")
    job_finished(task_log, job, 0.0, None)
    redact.register_secret("hunter2secret")
    job_finished(task_log, job, 0.0, None)
    first, second = lines(stream)
    assert "hunter2secret" in first
    assert "hunter2secret" not in second and "***" in second, second


@pytest.mark.parametrize(
    "created",
    [0.0, 1_700_000_000.0, 1_700_000_000.9994, 1_700_000_000.9996, 1_764_583_199.999999],
)
def test_the_cached_timestamp_is_the_exact_one(created: float) -> None:
    moment = dt.datetime.fromtimestamp(created, tz=dt.timezone.utc)
    exact = moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    assert _timestamp(created) == exact
    assert _timestamp(created) == exact  # second call: from the cache


def test_deferred_flushes_hold_back_only_job_ends(stream: io.StringIO) -> None:
    raw = io.BytesIO()
    buffered = io.TextIOWrapper(raw, encoding="utf-8", write_through=False)
    setup_logging("debug", "text", buffered)
    task_log = logging.getLogger("kongtaskd.task.send_email")
    job_finished(task_log, a_job(), 0.5, None)
    assert b"job succeeded" in raw.getvalue()  # not deferred: written at once
    defer_flushes()
    job_started(task_log, a_job())  # the last words before a crash: never held back
    assert b"job started" in raw.getvalue()
    task_log.info("a handler's own line")  # the same
    assert b"a handler's own line" in raw.getvalue()
    job_finished(task_log, a_job(2), 0.5, None)
    assert b"attempt 2 of 25" not in raw.getvalue()
    flush()
    assert b"attempt 2 of 25" in raw.getvalue()
    job_finished(task_log, a_job(3), 0.5, None)
    job_finished(task_log, a_job(4), 0.5, "RuntimeError: a failure is never held back")
    assert b"attempt 3 of 25" in raw.getvalue()
    assert b"never held back" in raw.getvalue()


# -- the direct path: a job's line without a LogRecord, when only our handler would see it ---
class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def only_ours(fmt: str, stream: io.StringIO) -> None:
    """Our set-up alone on the root (pytest's own capture handlers taken off for the test;
    the ``stream`` fixture puts them back)."""
    setup_logging("info", fmt, stream)
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if isinstance(h, _KongtaskHandler)]


def without_ts(fmt: str, line: str) -> Any:
    if fmt == "json":
        entry = json.loads(line)
        assert TEXT_LINE.match(entry.pop("ts") + " X y")
        return entry
    match = TEXT_LINE.match(line)
    assert match, line
    return match.group("level"), match.group("rest")


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_job_line_without_a_record_is_the_line_its_record_makes(
    fmt: str, stream: io.StringIO
) -> None:
    only_ours(fmt, stream)
    task_log = logging.getLogger("kongtaskd.task.send_email")
    assert _direct_sink(task_log, logging.INFO) is logging.getLogger().handlers[0]
    job_finished(task_log, a_job(), 0.0123, None)
    collect = Collect()
    logging.getLogger().addHandler(collect)  # someone else would see it: a record now
    assert _direct_sink(task_log, logging.INFO) is None
    job_finished(task_log, a_job(), 0.0123, None)
    direct, recorded = lines(stream)
    assert without_ts(fmt, direct) == without_ts(fmt, recorded)
    assert [r.getMessage() for r in collect.records] == [
        "job succeeded in 0.012s (attempt 1 of 25)"
    ]


def patch_call_handlers(monkeypatch: pytest.MonkeyPatch, seen: list[Any]) -> None:
    original = logging.Logger.callHandlers

    def call_handlers(self: logging.Logger, record: logging.LogRecord) -> None:  # Sentry's way
        seen.append(record)
        original(self, record)

    monkeypatch.setattr(logging.Logger, "callHandlers", call_handlers)


def record_factory(monkeypatch: pytest.MonkeyPatch, seen: list[Any]) -> None:
    original = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:  # OpenTelemetry's way
        record = original(*args, **kwargs)
        seen.append(record)
        return record

    monkeypatch.setattr(logging, "_logRecordFactory", factory)


def handler_on_the_task_logger(monkeypatch: pytest.MonkeyPatch, seen: list[Any]) -> None:
    collect = Collect()
    collect.emit = seen.append  # type: ignore[method-assign]
    monkeypatch.setattr(logging.getLogger("kongtaskd.task"), "handlers", [collect])


def filter_on_the_task_logger(monkeypatch: pytest.MonkeyPatch, seen: list[Any]) -> None:
    def keep(record: logging.LogRecord) -> bool:
        seen.append(record)
        return True

    monkeypatch.setattr(logging.getLogger("kongtaskd.task.send_email"), "filters", [keep])


def filter_on_our_handler(monkeypatch: pytest.MonkeyPatch, seen: list[Any]) -> None:
    def keep(record: logging.LogRecord) -> bool:
        seen.append(record)
        return True

    logging.getLogger().handlers[0].addFilter(keep)


@pytest.mark.parametrize(
    "observer",
    [
        patch_call_handlers,
        record_factory,
        handler_on_the_task_logger,
        filter_on_the_task_logger,
        filter_on_our_handler,
    ],
)
def test_whatever_else_would_see_a_job_line_gets_its_record(
    observer: Any, stream: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    only_ours("text", stream)
    task_log = logging.getLogger("kongtaskd.task.send_email")
    seen: list[logging.LogRecord] = []
    observer(monkeypatch, seen)
    job_finished(task_log, a_job(), 0.5, None)
    assert [r.getMessage() for r in seen] == ["job succeeded in 0.500s (attempt 1 of 25)"]
    (line,) = lines(stream)
    assert line.endswith("[job 42 send_email]: job succeeded in 0.500s (attempt 1 of 25)")


def test_a_failed_direct_write_is_reported_as_logging_does_and_not_written_twice(
    stream: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    only_ours("text", stream)
    handler = logging.getLogger().handlers[0]
    reported: list[logging.LogRecord] = []
    monkeypatch.setattr(handler, "handleError", reported.append)
    writes: list[str] = []

    def write(text: str) -> int:
        writes.append(text)
        raise OSError("disk full")

    monkeypatch.setattr(stream, "write", write)
    job_finished(logging.getLogger("kongtaskd.task.send_email"), a_job(), 0.5, None)
    assert len(writes) == 1  # tried once
    assert [r.getMessage() for r in reported] == ["job succeeded in 0.500s (attempt 1 of 25)"]
