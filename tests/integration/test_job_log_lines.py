"""What kongtaskd logs about each job: one line per finished job at INFO, failures at
WARNING (retries left) or ERROR (the last attempt), "job started" at DEBUG only. The same in
the daemon's children and in ``kongtaskd.run_jobs`` (real daemon, real PostgreSQL)."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import kongtaskd
from kongtaskd.logs import setup_logging
from tests.integration.test_run_jobs import TASKS, enqueue_mix
from tests.support.daemon import prepare_database, run_once, write_config

#: ``<ts> LEVEL kongtaskd.task.<task> [job N <task>]: job ...``, duration and id blanked.
JOB_LINE = re.compile(
    r"^\S+ (?P<level>[A-Z]+) kongtaskd\.task\.(?P<task>\w+) \[job \d+ (?P=task)\]: "
    r"(?P<text>job .*)$"
)

EXPECTED = sorted(
    [
        ("INFO", "remember", "job succeeded in S (attempt 1 of 25)"),
        (
            "WARNING",
            "fail",
            "job failed in S (attempt 1 of 3, will retry): RuntimeError: asked to fail (attempt 1)",
        ),
        (
            "ERROR",
            "fail",
            "job failed in S (attempt 1 of 1, no retries left): "
            "RuntimeError: asked to fail (attempt 1)",
        ),
        (
            "WARNING",
            "fail_then_succeed",
            "job failed in S (attempt 1 of 25, will retry): ValueError: not yet (attempt 1)",
        ),
    ]
)


def job_lines(log: str) -> list[tuple[str, str, str]]:
    found = []
    for line in log.splitlines():
        match = JOB_LINE.match(line)
        if match and not match["text"].startswith("job started"):
            text = re.sub(r"in \d+\.\d{3}s", "in S", match["text"])
            found.append((match["level"], match["task"], text))
    return sorted(found)


@pytest.fixture()
def root_logging() -> Iterator[None]:
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    yield
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)


@pytest.mark.parametrize("level", ["info", "debug"])
def test_the_daemon_logs_one_line_per_finished_job(
    fresh_dsn: str, tmp_path: Path, level: str
) -> None:
    prepare_database(fresh_dsn)
    enqueue_mix(fresh_dsn)
    config = write_config(tmp_path, fresh_dsn, concurrency=1, log={"level": level})
    done = run_once(config)
    assert done.returncode == 0, done.stdout + done.stderr
    assert job_lines(done.stderr) == EXPECTED, done.stderr
    started = [line for line in done.stderr.splitlines() if "job started (attempt 1 of" in line]
    if level == "info":
        assert not started, done.stderr
    else:
        assert len(started) == 4 and all(" DEBUG " in line for line in started), done.stderr


def test_run_jobs_logs_the_same_lines(fresh_dsn: str, root_logging: Any) -> None:
    prepare_database(fresh_dsn)
    enqueue_mix(fresh_dsn)
    stream = io.StringIO()
    setup_logging("info", "text", stream)
    summary = kongtaskd.run_jobs(fresh_dsn, TASKS)
    assert summary.ran == 4
    assert job_lines(stream.getvalue()) == EXPECTED, stream.getvalue()
    assert "job started" not in stream.getvalue()


LAST_WORDS = """
import os


def handler(payload, ctx):
    ctx.logger.info("last words before the crash")
    os._exit(7)  # like a segfaulting extension: no exception, no flush
"""


def test_a_handlers_lines_before_a_crash_are_not_lost(fresh_dsn: str, tmp_path: Path) -> None:
    prepare_database(fresh_dsn)
    modules = tmp_path / "modules"
    modules.mkdir()
    (modules / "crash.py").write_text(LAST_WORDS)
    config = write_config(
        tmp_path,
        fresh_dsn,
        concurrency=1,
        python_path=[str(modules)],
        tasks={"crash": "crash:handler"},
        task_modules=[],
        log={"level": "debug"},
    )
    kongtaskd.add_job(fresh_dsn, "crash", {}, max_attempts=1)
    done = run_once(config)
    assert done.returncode == 0, done.stdout + done.stderr
    log = done.stderr
    assert "[job 1 crash]: job started (attempt 1 of 1)" in log, log
    assert "[job 1 crash]: last words before the crash" in log, log
