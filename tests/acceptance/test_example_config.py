"""The README's run command: conf/kongtask.yaml with examples/hello.py runs real jobs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.daemon import prepare_database, query

REPO = Path(__file__).resolve().parents[2]


def test_the_example_config_runs_the_example_handlers(fresh_dsn: str):
    prepare_database(fresh_dsn)
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "NOTIFY_SOCKET")}
    env["DATABASE_URL"] = fresh_dsn  # the documented way to point the example elsewhere
    add = [sys.executable, "-m", "kongtaskd", "add", "-c", str(REPO / "conf" / "kongtask.yaml")]
    for task, payload in [("hello", '{"name": "test"}'), ("fan_out", '{"count": 2}')]:
        done = subprocess.run([*add, task, "--payload", payload], env=env, capture_output=True)
        assert done.returncode == 0, done.stderr
    run = subprocess.run(
        [sys.executable, "-m", "kongtaskd", "-c", str(REPO / "conf" / "kongtask.yaml"), "--once"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert "hello, test!" in run.stderr
    assert run.stderr.count("hello, follow-up") == 2  # fan_out's follow-ups ran too
    assert query(fresh_dsn, "select count(*) from graphile_worker._private_jobs") == [(0,)]
