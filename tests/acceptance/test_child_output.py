"""A handler's stdout and stderr reach the log as records of its job, in either log format.

Real daemon, real fds: the fixture handler ``chatter`` writes with print(), sys.stderr,
os.write on fds 1 and 2, from a subprocess, and ends with a line that has no newline.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.acceptance.test_daemon import add_job, runs
from tests.support import wait_for
from tests.support.daemon import TASKS, Daemon, prepare_database, write_config

WHAT = {
    "print": "stdout",
    "sys.stderr": "stderr",
    "fd 1": "stdout",
    "fd 2": "stderr",
    "subprocess": "stdout",
    "unterminated": "stdout",
}
BULK = 20000  # ~400 KB: several times a pipe's buffer


@pytest.fixture()
def db(fresh_dsn: str) -> str:
    prepare_database(fresh_dsn)
    return fresh_dsn


def run_chatter(db: str, tmp_path: Path, fmt: str) -> tuple[list[int], str]:
    config = write_config(
        tmp_path,
        db,
        concurrency=1,
        # A child is recycled after each job: the last output must still be logged before
        # its os._exit.
        max_jobs_per_child=1,
        tasks={**TASKS, "chatter": "handlers:chatter"},
        log={"level": "info", "format": fmt},
    )
    jobs = [add_job(db, "chatter", {"lines": BULK if n == 0 else 0}) for n in range(2)]
    with Daemon(config) as daemon:
        daemon.wait_ready()
        wait_for(lambda: len(runs(db)) == len(jobs), timeout=60, what="both jobs done")
        assert daemon.stop() == 0
        return jobs, daemon.log()


def test_json_format_every_line_is_json_and_handler_output_names_its_job(db: str, tmp_path: Path):
    jobs, log = run_chatter(db, tmp_path, "json")
    records = []
    for n, line in enumerate(log.splitlines(), 1):
        try:
            records.append(json.loads(line))
        except ValueError:
            pytest.fail(f"daemon stderr line {n} is not JSON: {line!r}")
    for job_id in jobs:
        for what, stream in WHAT.items():
            found = [r for r in records if r["msg"] == f"{what} of job {job_id}"]
            assert len(found) == 1, (what, job_id, found)
            (record,) = found
            assert (record["job_id"], record["task"], record["stream"]) == (
                job_id,
                "chatter",
                stream,
            ), record
            assert record["logger"] == f"kongtaskd.{stream}"
    bulk = [r for r in records if r["msg"].startswith("bulk ")]
    assert [r["msg"] for r in bulk] == [f"bulk {n} of job {jobs[0]}" for n in range(BULK)]
    assert all(r["job_id"] == jobs[0] for r in bulk)


def test_text_format_handler_output_is_a_log_line_of_its_job(db: str, tmp_path: Path):
    jobs, log = run_chatter(db, tmp_path, "text")
    lines = log.splitlines()
    for job_id in jobs:
        for what, stream in WHAT.items():
            text = f"{what} of job {job_id}"
            found = [line for line in lines if line.endswith(text)]
            assert len(found) == 1, (text, found)
            assert f" kongtaskd.{stream} [job {job_id} chatter]: {text}" in found[0], found[0]
    assert not [line for line in lines if line.startswith(("print of", "fd ", "subprocess"))]
