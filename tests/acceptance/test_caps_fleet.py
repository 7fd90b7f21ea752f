"""Fleet-wide caps, rates and pauses with real daemons (issue #16).

Every assertion is about order and counts read from the database (the handlers' own
start/end rows in kt_runs, the jobs table); latencies are printed for the perf report
(run with -s), never asserted.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import psycopg2
import pytest

import kongtaskd
from tests.acceptance.test_daemon import jobs_left, runs
from tests.support import wait_for
from tests.support.daemon import TASKS, Daemon, prepare_database, query, write_config


@pytest.fixture()
def db(fresh_dsn: str) -> str:
    prepare_database(fresh_dsn)
    return fresh_dsn


def add_many(dsn: str, task: str, count: int, payload: str = "{}") -> None:
    query(
        dsn,
        "select graphile_worker.add_job(%s, %s::json) from generate_series(1, %s)",
        (task, payload, count),
    )


def config_with(directory: Path, dsn: str, caps: dict[str, dict[str, Any]], **more: Any) -> Path:
    directory.mkdir(exist_ok=True)
    tasks: dict[str, Any] = dict(TASKS)
    for name, extra in caps.items():
        tasks[name] = {"handler": "handlers:remember", **extra}
    return write_config(directory, dsn, tasks=tasks, **more)


def max_overlap(intervals: list[tuple[dt.datetime, dt.datetime]]) -> int:
    """Most intervals open at one instant (an end at t closes before a start at t opens)."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = worst = 0
    for _, step in sorted(events, key=lambda e: (e[0], e[1])):
        running += step
        worst = max(worst, running)
    return worst


def task_runs(dsn: str, task: str) -> list[tuple[Any, ...]]:
    return [r for r in runs(dsn) if r[1] == task]


def locked_of(dsn: str, task: str) -> int:
    return int(
        query(
            dsn,
            "select count(*) from graphile_worker.jobs where task_identifier = %s"
            " and locked_at is not null",
            (task,),
        )[0][0]
    )


def test_three_daemons_never_run_more_than_the_cap(db: str, tmp_path: Path) -> None:
    add_many(db, "capped", 300, '{"sleep": 0.02}')
    add_many(db, "remember", 60, '{"sleep": 0.02}')
    daemons = [
        Daemon(config_with(tmp_path / f"d{i}", db, {"capped": {"concurrency": 3}}, concurrency=4))
        for i in range(3)
    ]
    started = time.monotonic()
    try:
        for daemon in daemons:
            daemon.wait_ready()
        wait_for(lambda: jobs_left(db) == 0, timeout=240, what="all 360 jobs")
        elapsed = time.monotonic() - started
        for daemon in daemons:
            assert daemon.stop() == 0
    finally:
        for daemon in daemons:
            daemon.close()
    capped = task_runs(db, "capped")
    other = task_runs(db, "remember")
    assert len({r[0] for r in capped}) == 300 and len(other) == 60
    overlap = max_overlap([(r[6], r[7]) for r in capped])
    assert overlap <= 3, f"{overlap} capped jobs ran at once"
    # The other task ran meanwhile, not after the capped backlog.
    last_capped_start = max(r[6] for r in capped)
    assert sum(1 for r in other if r[6] < last_capped_start) >= 30
    # Several daemons took capped jobs (the cap is fleet-wide, not one daemon's).
    assert len({r[4] for r in capped}) >= 3
    print(
        f"\n[caps] 3x4 children, 300 capped jobs of 20 ms at concurrency 3: max overlap "
        f"{overlap}, {elapsed:.1f} s for all 360 jobs"
    )


def test_rate_limit_over_ten_seconds(db: str, tmp_path: Path) -> None:
    add_many(db, "paced", 220)
    config = config_with(tmp_path / "r", db, {"paced": {"rate": "20/s"}}, concurrency=4)
    with Daemon(config) as daemon:
        daemon.wait_ready()
        wait_for(lambda: jobs_left(db) == 0, timeout=60, what="the paced jobs")
        assert daemon.stop() == 0
    starts = sorted(r[6].timestamp() for r in task_runs(db, "paced"))
    assert len(starts) == 220
    # Token bucket of 20 (the burst), refilled 20/s: any one-second window of *claims* holds
    # at most rate + burst = 40, and the whole run cannot be faster than (220 - 20) / 20 s.
    # These are the handlers' start times, which trail their claims by the dispatch delay
    # (pipe, child wake-up, row load: jitter up to ~0.1 s on a loaded 2-core machine), so a
    # one-second window of starts may span up to 1.1 s of claims: 20 + 20 * 1.1 = 42.
    worst = max(sum(1 for s in starts[i:] if s < start + 1.0) for i, start in enumerate(starts))
    assert worst <= 42, f"{worst} starts in one second"
    span = starts[-1] - starts[0]
    assert span >= 9.5, f"220 starts at 20/s took only {span:.2f} s"
    print(f"\n[caps] rate 20/s: worst 1 s window {worst} starts, 220 starts over {span:.2f} s")


def test_pause_mid_run_resume_and_restart_while_paused(db: str, tmp_path: Path) -> None:
    add_many(db, "stoppable", 200, '{"sleep": 0.05}')
    config = config_with(tmp_path / "p", db, {"stoppable": {}}, concurrency=3)
    with Daemon(config) as daemon:
        daemon.wait_ready()
        wait_for(lambda: len(task_runs(db, "stoppable")) >= 20, what="some jobs done")
        conn = psycopg2.connect(db)
        kongtaskd.pause(conn, tasks=["stoppable"])  # in this transaction: effective at commit
        conn.commit()
        with conn.cursor() as cur:
            cur.execute("select clock_timestamp()")  # after the pause committed
            (committed,) = cur.fetchone()
        conn.close()
        wait_for(lambda: locked_of(db, "stoppable") == 0, what="running jobs to finish")
        done_at_pause = len(task_runs(db, "stoppable"))
        # Jobs were left when the pause came: otherwise nothing below would test it.
        assert done_at_pause < 200, done_at_pause
        # Other work still flows, and proves the daemon claimed again after the pause.
        add_many(db, "remember", 10)
        wait_for(lambda: len(task_runs(db, "remember")) == 10, what="other jobs")
        assert len(task_runs(db, "stoppable")) == done_at_pause
        late = [r for r in task_runs(db, "stoppable") if r[6] > committed]
        last_start = max(r[6] for r in task_runs(db, "stoppable"))
        # No job claimed after the commit started after it (claimed-before jobs may).
        assert all(r[6] <= committed + dt.timedelta(seconds=1) for r in late)
        assert daemon.stop() == 0
    # A daemon started while paused stays paused.
    with Daemon(config) as daemon:
        daemon.wait_ready()
        add_many(db, "remember", 5)
        wait_for(lambda: len(task_runs(db, "remember")) == 15, what="other jobs after restart")
        assert len(task_runs(db, "stoppable")) == done_at_pause
        kongtaskd.resume(db, tasks="stoppable")
        wait_for(lambda: jobs_left(db) == 0, timeout=60, what="the rest after resume")
        assert daemon.stop() == 0
    assert len({r[0] for r in task_runs(db, "stoppable")}) == 200
    print(
        f"\n[caps] pause: {len(late)} jobs started after the pause committed (claimed "
        f"before it), last one {(last_start - committed).total_seconds() * 1000:.0f} ms after"
    )


def test_a_killed_daemons_slots_come_back_after_the_sweep(db: str, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    add_many(db, "capped", 8, f'{{"gate": "{gate}", "sleep": 60}}')
    fast = {"stale_after": 2, "heartbeat_interval": 0.5, "poll_interval": 0.3, "concurrency": 4}
    caps = {"capped": {"concurrency": 3}}
    worst: list[int] = []
    stop = threading.Event()

    def observe() -> None:
        while not stop.is_set():
            worst.append(locked_of(db, "capped"))

    watcher = threading.Thread(target=observe)
    watcher.start()
    try:
        first = Daemon(config_with(tmp_path / "a", db, caps, **fast))
        with first:
            first.wait_ready()
            wait_for(lambda: locked_of(db, "capped") == 3, what="the first daemon's 3 slots")
            (dead_pool,) = {
                r[0]
                for r in query(
                    db, "select locked_by from graphile_worker.jobs where locked_at is not null"
                )
            }
            with Daemon(config_with(tmp_path / "b", db, caps, **fast)) as second:
                second.wait_ready()
                os.killpg(first.pid, signal.SIGKILL)
                first.wait(timeout=10)
                # The sweep fails the dead pool's jobs (retry later); the live daemon takes
                # the freed slots with the other jobs at once.
                wait_for(
                    lambda: (
                        query(
                            db,
                            "select count(*) from graphile_worker.jobs where locked_at is not null"
                            " and locked_by <> %s",
                            (dead_pool,),
                        )[0][0]
                        == 3
                    ),
                    timeout=30,
                    what="the live daemon holding 3 slots after the sweep",
                )
                gate.touch()
                wait_for(lambda: jobs_left(db) == 0, timeout=60, what="every capped job")
                assert second.stop() == 0
    finally:
        stop.set()
        watcher.join(10)
    assert max(worst) <= 3, f"{max(worst)} capped jobs held at once"
    assert len({r[0] for r in task_runs(db, "capped")}) == 8


def caps_row(dsn: str, task: str) -> tuple[Any, ...] | None:
    rows = query(
        dsn,
        "select c.concurrency, c.rate_limit, c.rate_seconds, c.written_by"
        " from graphile_worker._kongtaskd_task_caps c"
        " join graphile_worker._private_tasks t on t.id = c.task_id where t.identifier = %s",
        (task,),
    )
    return rows[0] if rows else None


def test_caps_are_written_at_start_and_on_reload_last_writer_wins(db: str, tmp_path: Path):
    first_config = config_with(tmp_path / "a", db, {"shared": {"concurrency": 2}})
    second_config = config_with(tmp_path / "b", db, {"shared": {"concurrency": 5, "rate": "3/min"}})
    with Daemon(first_config) as first:
        first.wait_ready()
        assert caps_row(db, "shared")[:3] == (2, None, None)
        assert caps_row(db, "remember")[:3] == (None, None, None)  # "no cap" is written too
        with Daemon(second_config) as second:
            second.wait_ready()
            assert caps_row(db, "shared")[:3] == (5, 3, 60)
            assert "the last writer wins" in second.log()
            assert second.stop() == 0
        # The first daemon's config loses its cap; a reload lifts it fleet-wide.
        config_with(tmp_path / "a", db, {"shared": {}})
        first.signal(signal.SIGHUP)
        wait_for(
            lambda: caps_row(db, "shared")[:3] == (None, None, None),
            timeout=30,
            what="the reload's caps",
        )
        assert "concurrency=5 rate=3/min" in first.log()
        assert first.stop() == 0


def test_graphile_worker_skips_a_paused_queue(db: str, tmp_path: Path) -> None:
    from tests.acceptance.test_mixed_fleet import graphile_workdir
    from tests.support.graphile import require_graphile, run_graphile

    require_graphile()
    query(db, "select graphile_worker.add_job('remember', '{}', queue_name => 'held')")
    query(db, "select graphile_worker.add_job('remember', '{}', queue_name => 'open')")
    kongtaskd.pause(db, queues=["held"])
    workdir = graphile_workdir(tmp_path / "gw")
    run_graphile(["--once"], db, cwd=workdir)
    left = query(db, "select queue_name from graphile_worker.jobs")
    assert left == [("held",)]  # graphile-worker ran the open queue's job only
    kongtaskd.resume(db, queues=["held"])
    run_graphile(["--once"], db, cwd=workdir)
    assert jobs_left(db) == 0
