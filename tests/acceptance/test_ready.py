"""READY=1 and the "ready" line mean "serving": never once a drain began during start-up."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.acceptance.test_daemon import add_job
from tests.support import wait_for
from tests.support.daemon import FIXTURES, Daemon, prepare_database, write_config

#: A handler module whose import waits until the test lets it go (a file appears), so the
#: test can signal the daemon while its children are still starting.
SLOW_IMPORT = """
import os
import pathlib
import time

here = pathlib.Path(__file__).parent
(here / f"importing-{os.getpid()}").touch()
deadline = time.monotonic() + 60
while not (here / "go").exists() and time.monotonic() < deadline:
    time.sleep(0.01)


def handler(payload, ctx):
    pass
"""


@pytest.fixture()
def db(fresh_dsn: str) -> str:
    prepare_database(fresh_dsn)
    return fresh_dsn


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGINT"])
def test_a_stop_during_start_up_is_never_announced_as_ready(
    db: str, tmp_path: Path, signame: str
) -> None:
    modules = tmp_path / "modules"
    modules.mkdir()
    (modules / "slow_import.py").write_text(SLOW_IMPORT)
    config = write_config(
        tmp_path,
        db,
        concurrency=2,
        python_path=[str(FIXTURES), str(modules)],
        tasks={"slow": "slow_import:handler"},
        task_modules=[],
    )
    with Daemon(config) as daemon:
        wait_for(lambda: list(modules.glob("importing-*")), what="a child importing handlers")
        daemon.signal(getattr(signal, signame))
        wait_for(lambda: f"received {signame}: draining" in daemon.log(), what="the drain")
        (modules / "go").touch()  # the children finish starting only now
        assert daemon.wait(timeout=30) == 0
        daemon.notifications()
        log = daemon.log()
        assert "ready:" not in log, log
        assert not any("READY=1" in m.split("\n") for m in daemon.messages), daemon.messages
        assert "kongtaskd supervisor stopped" in log


GATE = """
import pathlib
import time


def handler(payload, ctx):
    pathlib.Path(payload["started"]).touch()
    deadline = time.monotonic() + 60
    while not pathlib.Path(payload["go"]).exists() and time.monotonic() < deadline:
        time.sleep(0.01)
"""


def test_a_reload_during_a_drain_does_not_announce_ready(db: str, tmp_path: Path) -> None:
    modules = tmp_path / "modules"
    modules.mkdir()
    (modules / "gate.py").write_text(GATE)
    config = write_config(
        tmp_path,
        db,
        concurrency=1,
        python_path=[str(FIXTURES), str(modules)],
        tasks={"gate": "gate:handler"},
        task_modules=[],
    )
    started, go = tmp_path / "started", tmp_path / "go"
    with Daemon(config) as daemon:
        daemon.wait_ready()
        add_job(db, "gate", {"started": str(started), "go": str(go)})
        wait_for(started.exists, what="the job running")
        daemon.signal(signal.SIGTERM)
        daemon.wait_for_notification("STOPPING=1", timeout=10)
        daemon.signal(signal.SIGHUP)
        wait_for(lambda: "SIGHUP" in daemon.log(), what="the reload handled")
        go.touch()  # the job ends, the drain completes
        assert daemon.wait(timeout=30) == 0
        daemon.notifications()
        stopping = next(i for i, m in enumerate(daemon.messages) if "STOPPING=1" in m)
        after = [m for m in daemon.messages[stopping:] if "READY=1" in m.split("\n")]
        assert after == [], daemon.messages
        assert "reload complete" not in daemon.log()
