"""Caps of tasks registered in code, and caps-only ``tasks:`` entries, with a real daemon
(issue #16 leftovers). Order and counts come from the database (the handlers' own
start/end rows in kt_runs, ``_kongtaskd_task_caps``), never from sleeps."""

from __future__ import annotations

import signal
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from tests.acceptance.test_caps_fleet import add_many, max_overlap, task_runs
from tests.acceptance.test_daemon import jobs_left
from tests.support import wait_for
from tests.support.daemon import (
    FIXTURES,
    TASKS,
    Daemon,
    prepare_database,
    query,
    run_once,
    write_config,
)

#: A task_modules module whose task carries its cap in code (``handlers`` records the run).
CODED = textwrap.dedent(
    """
    import kongtaskd
    from handlers import remember


    @kongtaskd.task("coded", concurrency=2)
    def coded(payload, ctx):
        remember(payload, ctx)
    """
)


@pytest.fixture()
def db(fresh_dsn: str) -> str:
    prepare_database(fresh_dsn)
    return fresh_dsn


def config_for(tmp_path: Path, dsn: str, tasks: dict[str, Any], **more: Any) -> Path:
    code = tmp_path / "code"
    code.mkdir(exist_ok=True)
    (code / "capped_code.py").write_text(CODED)
    return write_config(
        tmp_path,
        dsn,
        python_path=[str(FIXTURES), str(code)],
        task_modules=["handlers", "capped_code"],
        tasks=tasks,
        **more,
    )


def caps_rows(dsn: str) -> dict[str, tuple[Any, ...]]:
    rows = query(
        dsn,
        "select t.identifier, c.concurrency, c.rate_limit, c.rate_seconds"
        " from graphile_worker._kongtaskd_task_caps c"
        " join graphile_worker._private_tasks t on t.id = c.task_id",
    )
    return {row[0]: tuple(row[1:]) for row in rows}


def test_decorator_and_caps_only_entry_cap_one_daemon(db: str, tmp_path: Path) -> None:
    # "coded": concurrency 2 from @kongtaskd.task; "decorated" (registered in handlers by
    # decorator, no cap in code): concurrency 1 from a caps-only tasks: entry.
    add_many(db, "coded", 40, '{"sleep": 0.05}')
    add_many(db, "decorated", 12, '{"sleep": 0.05}')
    add_many(db, "remember", 20, '{"sleep": 0.05}')
    tasks = {**TASKS, "decorated": {"concurrency": 1}}
    started = time.monotonic()
    with Daemon(config_for(tmp_path, db, tasks, concurrency=4)) as daemon:
        daemon.wait_ready()
        assert caps_rows(db)["coded"] == (2, None, None)
        assert caps_rows(db)["decorated"] == (1, None, None)
        assert caps_rows(db)["remember"] == (None, None, None)
        wait_for(lambda: jobs_left(db) == 0, timeout=120, what="all 72 jobs")
        elapsed = time.monotonic() - started
        assert daemon.stop() == 0
    coded, decorated = task_runs(db, "coded"), task_runs(db, "decorated")
    assert len({r[0] for r in coded}) == 40 and len({r[0] for r in decorated}) == 12
    assert len(task_runs(db, "remember")) == 20
    coded_overlap = max_overlap([(r[6], r[7]) for r in coded])
    decorated_overlap = max_overlap([(r[6], r[7]) for r in decorated])
    assert coded_overlap <= 2, f"{coded_overlap} 'coded' jobs ran at once (cap 2, in code)"
    assert decorated_overlap <= 1, f"{decorated_overlap} 'decorated' jobs ran at once (cap 1)"
    print(
        f"\n[taskcaps] 4 children: 'coded' (cap 2 in code) max overlap {coded_overlap}, "
        f"'decorated' (caps-only entry, cap 1) max overlap {decorated_overlap}; "
        f"{elapsed:.1f} s for 72 jobs"
    )


def test_the_config_wins_over_the_decorator_and_says_so(db: str, tmp_path: Path) -> None:
    tasks = {**TASKS, "coded": {"concurrency": 3, "rate": "50/s"}}
    with Daemon(config_for(tmp_path, db, tasks)) as daemon:
        daemon.wait_ready()
        assert caps_rows(db)["coded"] == (3, 50, 1)
        assert daemon.stop() == 0
        log = daemon.log()
    assert "task coded: concurrency is 2 in @kongtaskd.task and 3 under tasks: at " in log


def test_a_caps_only_entry_for_a_task_no_module_registers_stops_the_start(
    db: str, tmp_path: Path
) -> None:
    add_many(db, "remember", 3)
    config = config_for(tmp_path, db, {**TASKS, "call_partner": {"concurrency": 3}})
    line = next(
        n for n, text in enumerate(config.read_text().splitlines(), 1) if "call_partner" in text
    )
    result = run_once(config, timeout=60)
    assert result.returncode == 2, result.stderr
    lines = [text for text in result.stderr.splitlines() if "kongtaskd:" in text]
    assert lines, result.stderr
    assert (
        f"{config}:{line}: tasks.call_partner: a cap on a task this daemon does not run"
        in (lines[-1])
    )
    assert "Traceback" not in result.stderr
    assert query(db, "select count(*) from public.kt_runs") == [(0,)]
    assert query(db, "select count(*) from graphile_worker._private_jobs where attempts > 0") == [
        (0,)
    ]


def test_a_reload_rewrites_the_caps_and_refuses_a_cap_on_an_unknown_task(
    db: str, tmp_path: Path
) -> None:
    config = config_for(tmp_path, db, dict(TASKS))
    with Daemon(config) as daemon:
        daemon.wait_ready()
        assert caps_rows(db)["coded"] == (2, None, None)  # the decorator's
        # A caps-only entry for a task no module registers: refused, nothing changes.
        config_for(tmp_path, db, {**TASKS, "call_partnr": {"rate": "5/s"}})
        daemon.signal(signal.SIGHUP)
        wait_for(lambda: "reload refused" in daemon.log(), timeout=30, what="the refusal")
        (line,) = [text for text in daemon.log().splitlines() if "reload refused" in text]
        assert "tasks.call_partnr: a cap on a task this daemon does not run" in line
        # A caps-only entry that loosens the decorator's cap: written on the reload.
        config_for(tmp_path, db, {**TASKS, "coded": {"concurrency": 5}})
        daemon.signal(signal.SIGHUP)
        wait_for(lambda: caps_rows(db)["coded"] == (5, None, None), timeout=30, what="the new cap")
        add_many(db, "coded", 5)
        wait_for(lambda: jobs_left(db) == 0, timeout=60, what="the coded jobs")
        assert daemon.stop() == 0
    assert len(task_runs(db, "coded")) == 5
