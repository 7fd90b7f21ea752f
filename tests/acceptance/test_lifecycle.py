"""Signals, drain, reload, crash recovery and database faults: real signals, real processes."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psycopg2
import pytest
import yaml

from kongtaskd import tunables
from tests.acceptance.test_daemon import add_job, job_row, jobs_left, runs
from tests.support import wait_for
from tests.support.daemon import Daemon, prepare_database, query, run_once, write_config
from tests.support.pgcluster import Cluster


@pytest.fixture()
def db(fresh_dsn: str) -> str:
    prepare_database(fresh_dsn)
    return fresh_dsn


def locked(dsn: str) -> list[tuple[object, ...]]:
    return query(
        dsn,
        "select 'job', id from graphile_worker._private_jobs where locked_at is not null "
        "union all select 'queue', id from graphile_worker._private_job_queues "
        "where locked_at is not null",
    )


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        return (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]) != "Z"
    except OSError:
        return False


def test_sigterm_drains_finishes_running_jobs_and_hands_back_the_rest(db: str, tmp_path: Path):
    ids = [add_job(db, "remember", {"n": n, "sleep": 0.3}) for n in range(200)]
    config = write_config(tmp_path, db, concurrency=8, shutdown_timeout=30)
    with Daemon(config) as daemon:
        daemon.wait_ready()
        wait_for(lambda: len(runs(db)) >= 16, what="the first jobs to finish")
        started = time.monotonic()
        daemon.signal(signal.SIGTERM)
        daemon.wait_for_notification("STOPPING=1", timeout=10)
        assert daemon.wait(timeout=30) == 0
        drain_seconds = time.monotonic() - started
    assert drain_seconds < 5, f"drain took {drain_seconds:.1f}s for 0.3s jobs"
    done = [r[0] for r in runs(db)]
    assert len(done) == len(set(done))
    left = query(
        db, "select id, attempts, locked_at, last_error from graphile_worker._private_jobs"
    )
    assert not set(done) & {r[0] for r in left}, "a finished job is still in the table"
    assert all(r[1:] == (0, None, None) for r in left), f"burned or locked: {left[:5]}"
    assert len(done) + len(left) == 200
    assert query(db, "select count(*) from graphile_worker._kongtaskd_heartbeats") == [(0,)]
    # A restart finishes the rest, and nothing runs twice.
    result = run_once(config)
    assert result.returncode == 0, result.stderr
    all_runs = [r[0] for r in runs(db)]
    assert sorted(all_runs) == ids


def test_shutdown_timeout_expiry_fails_the_jobs_still_running(db: str, tmp_path: Path):
    slow = [add_job(db, "remember", {"sleep": 30}) for _ in range(2)]
    config = write_config(tmp_path, db, concurrency=2, shutdown_timeout=1)
    with Daemon(config) as daemon:
        daemon.wait_ready()
        wait_for(lambda: all(job_row(db, i)["locked_at"] for i in slow), what="both running")
        started = time.monotonic()
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(timeout=20) == 0
        assert time.monotonic() - started < 8
    for job_id in slow:
        row = job_row(db, job_id)
        assert row is not None and row["locked_at"] is None and row["attempts"] == 1
        assert row["last_error"].startswith("kongtaskd shut down fast (shutdown_timeout of 1s")
        assert "JobInterrupted" in row["last_error"]
    assert runs(db) == [] and locked(db) == []


@pytest.mark.parametrize("signals", [("SIGTERM", "SIGTERM"), ("SIGINT", "SIGINT"), ("SIGQUIT",)])
def test_a_second_signal_or_sigquit_shuts_down_fast(db: str, tmp_path: Path, signals):
    slow = add_job(db, "remember", {"sleep": 60})
    config = write_config(tmp_path, db, concurrency=1, shutdown_timeout=120)
    with Daemon(config) as daemon:
        daemon.wait_ready()
        wait_for(lambda: job_row(db, slow)["locked_at"], what="the job to start")
        started = time.monotonic()
        for name in signals:
            daemon.signal(getattr(signal, name))
            daemon.wait_for_notification("STOPPING=1", timeout=10)
        assert daemon.wait(timeout=20) == 0
        assert time.monotonic() - started < 8
    row = job_row(db, slow)
    assert row is not None and row["locked_at"] is None
    assert "shut down fast" in row["last_error"]


def test_sighup_replaces_children_without_interrupting_jobs(db: str, tmp_path: Path):
    config = write_config(tmp_path, db, concurrency=2)
    ids = [add_job(db, "remember", {"n": n, "sleep": 0.2}) for n in range(30)]
    with Daemon(config) as daemon:
        daemon.wait_ready()
        before = set(daemon.children())
        wait_for(lambda: len(runs(db)) >= 2, what="jobs running")
        settings = yaml.safe_load(config.read_text())
        settings["concurrency"] = 3
        config.write_text(yaml.safe_dump(settings))
        daemon.signal(signal.SIGHUP)
        daemon.wait_for_notification("RELOADING=1", timeout=10)
        wait_for(
            lambda: "reload complete" in daemon.log(), timeout=30, what="the rolling replacement"
        )
        after = set(daemon.children())
        assert len(after) == 3 and not before & after, (before, after)
        assert daemon.notifications().count("READY=1") or any(
            "READY=1" in m for m in daemon.messages[1:]
        )
        wait_for(lambda: jobs_left(db) == 0, timeout=30, what="all jobs")
        assert daemon.stop() == 0
    done = [r[0] for r in runs(db)]
    assert sorted(done) == ids, "a job was lost or ran twice across the reload"
    assert query(db, "select count(*) from graphile_worker._private_jobs") == [(0,)]


def test_sighup_with_a_broken_config_keeps_running_on_the_old_one(db: str, tmp_path: Path):
    config = write_config(tmp_path, db, concurrency=2)
    with Daemon(config) as daemon:
        daemon.wait_ready()
        before = set(daemon.children())
        good = config.read_text()
        config.write_text(good + "concurency: 3\n")
        daemon.signal(signal.SIGHUP)
        wait_for(
            lambda: "reload refused" in daemon.log(),
            what="the refusal in the log",
        )
        assert "concurency" in daemon.log()
        job_id = add_job(db, "remember", {})
        wait_for(lambda: job_row(db, job_id) is None, what="a job after the failed reload")
        assert set(daemon.children()) == before
        assert daemon.stop() == 0


def test_sigttin_and_sigttou_add_and_remove_children(db: str, tmp_path: Path):
    config = write_config(tmp_path, db, concurrency=2)
    with Daemon(config) as daemon:
        daemon.wait_ready()
        assert len(daemon.children()) == 2
        daemon.signal(signal.SIGTTIN)
        wait_for(lambda: len(daemon.children()) == 3, what="a third child")
        # One at a time: two identical signals sent back to back may arrive as one.
        daemon.signal(signal.SIGTTOU)
        wait_for(lambda: len(daemon.children()) == 2, what="back to two")
        daemon.signal(signal.SIGTTOU)
        wait_for(lambda: len(daemon.children()) == 1, what="one child left")
        job_id = add_job(db, "remember", {})
        wait_for(lambda: job_row(db, job_id) is None, what="the last child to work")
        assert daemon.stop() == 0


def test_children_ignore_sigint_from_the_terminal(db: str, tmp_path: Path):
    job_id = add_job(db, "remember", {"sleep": 1})
    config = write_config(tmp_path, db, concurrency=1)
    with Daemon(config) as daemon:
        daemon.wait_ready()
        wait_for(lambda: job_row(db, job_id)["locked_at"], what="the job to start")
        (child,) = daemon.children()
        os.kill(child, signal.SIGINT)
        wait_for(lambda: job_row(db, job_id) is None, what="the job to finish anyway")
        assert daemon.children() == [child]
        assert daemon.stop() == 0
    assert [r[0] for r in runs(db)] == [job_id]


def test_a_breaking_migration_elsewhere_drains_and_exits_57(db: str, tmp_path: Path):
    config = write_config(tmp_path, db)
    with Daemon(config) as daemon:
        daemon.wait_ready()
        query(
            db, """select pg_notify('worker:migrate', '{"migrationNumber":21,"breaking":true}')"""
        )
        assert daemon.wait(timeout=20) == 57
        assert "breaking migration 21" in daemon.log()


def title(pid: int) -> str:
    """A process's title (setproctitle writes it over argv)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def test_killed_supervisor_children_exit_and_hand_back_their_jobs(db: str, tmp_path: Path):
    jobs = [add_job(db, "remember", {"sleep": 30}) for _ in range(2)]
    config = write_config(tmp_path, db, concurrency=2)
    with Daemon(config) as daemon:
        daemon.wait_ready()
        children = daemon.children()
        # Running, not only claimed: a claim the supervisor died before sending is the
        # sweep's to recover (test_a_dead_daemon_is_recovered_...), not the children's.
        wait_for(
            lambda: all("running remember#" in title(pid) for pid in children),
            what="both handlers running",
        )
        daemon.signal(signal.SIGKILL)
        daemon.wait(timeout=10)
        wait_for(lambda: not any(alive(pid) for pid in children), timeout=10, what="orphans gone")
    for job_id in jobs:
        row = job_row(db, job_id)
        assert row is not None and row["locked_at"] is None
        assert row["attempts"] == 0, "an orphan's interrupted job must get its attempt back"


def test_a_job_received_but_not_started_goes_back_when_the_supervisor_dies(db: str, tmp_path: Path):
    """The window between a child receiving an id and its handler's first line (the row
    load): the supervisor dies there, the child's PDEATHSIG arrives, the job must go back.

    The child's row load joins _private_tasks; a lock on that table holds the child inside
    the load (the claim does not read it) for as long as the test needs.
    """
    # No heartbeat during the test: it re-registers task ids, which the lock would block.
    quiet = {"heartbeat_interval": 60, "stale_after": 300, "poll_interval": 0.2}
    config = write_config(tmp_path, db, concurrency=1, **quiet)
    with Daemon(config) as daemon:
        daemon.wait_ready()
        (child,) = daemon.children()
        # Too big to travel with its id (tunables.INLINE_ROW_MAX_BYTES): the child loads it.
        job = query(
            db,
            "select id from graphile_worker.add_job('remember', json_build_object('pad', %s),"
            " run_at => now() + interval '1 second')",
            ("x" * tunables.INLINE_ROW_MAX_BYTES,),
        )[0][0]
        locker = psycopg2.connect(db)
        try:
            with locker.cursor() as cur:
                cur.execute("lock table graphile_worker._private_tasks in access exclusive mode")
            wait_for(
                lambda: (
                    query(
                        db,
                        "select count(*) from pg_stat_activity where wait_event_type = 'Lock'"
                        " and query like 'EXECUTE kongtaskd_load_job%%'",
                    )[0][0]
                    == 1
                ),
                what="the child waiting in its row load",
            )
            assert job_row(db, job)["attempts"] == 1
            daemon.signal(signal.SIGKILL)
            daemon.wait(timeout=10)
        finally:
            locker.rollback()  # the load returns; the child finds its supervisor gone
            locker.close()
        wait_for(lambda: not alive(child), timeout=10, what="the orphan gone")
    row = job_row(db, job)
    assert row is not None and row["locked_at"] is None and row["locked_by"] is None
    assert row["attempts"] == 0, "a job that never started must get its attempt back"
    assert runs(db) == []


def test_a_dead_daemon_is_recovered_by_another_within_stale_after(db: str, tmp_path: Path):
    jobs = [add_job(db, "remember", {"n": n, "sleep": 30}) for n in range(3)]
    fast_recovery = {"stale_after": 3, "heartbeat_interval": 0.5, "poll_interval": 0.5}
    first_dir, second_dir = tmp_path / "a", tmp_path / "b"
    first_dir.mkdir()
    second_dir.mkdir()
    first = Daemon(write_config(first_dir, db, concurrency=3, **fast_recovery))
    with first:
        first.wait_ready()
        wait_for(lambda: all(job_row(db, i)["locked_at"] for i in jobs), what="jobs running")
        (pool,) = {job_row(db, i)["locked_by"] for i in jobs}
        os.killpg(first.pid, signal.SIGKILL)  # the whole process group: a machine crash
        first.wait(timeout=10)
    query(db, "update graphile_worker._private_jobs set payload = '{\"n\": 0}'")
    with Daemon(write_config(second_dir, db, concurrency=3, **fast_recovery)) as second:
        started = time.monotonic()
        second.wait_ready()
        failed = wait_for(
            lambda: (
                all((job_row(db, i) or {}).get("last_error") for i in jobs)
                and [job_row(db, i) for i in jobs]
            ),
            timeout=10,
            what="the sweep",
        )
        assert time.monotonic() - started < 3 + 0.5 + 2
        for row in failed:
            assert pool in row["last_error"] and "stopped sending heartbeats" in row["last_error"]
        wait_for(lambda: jobs_left(db) == 0, timeout=20, what="the retries")
        assert second.stop() == 0
    assert sorted(r[0] for r in runs(db)) == jobs
    assert all(r[5] == 2 for r in runs(db)), "the crashed attempt stays counted"


def test_terminated_connections_lose_nothing(db: str, tmp_path: Path):
    ids = [add_job(db, "remember", {"n": n, "sleep": 0.01}) for n in range(300)]
    config = write_config(tmp_path, db, concurrency=4, poll_interval=0.5)
    with Daemon(config) as daemon:
        daemon.wait_ready()
        wait_for(lambda: len(runs(db)) >= 50, what="a third of the jobs")
        name = psycopg2.extensions.parse_dsn(db)["dbname"]
        killed = query(
            db,
            "select pg_terminate_backend(pid) from pg_stat_activity "
            "where datname = %s and application_name like 'kongtaskd%%'",
            (name,),
        )
        assert len(killed) >= 5  # the supervisor and every child
        wait_for(lambda: jobs_left(db) == 0, timeout=60, what="every job, after the reconnects")
        assert daemon.stop() == 0
        assert "database connection lost" in daemon.log()
    assert sorted({r[0] for r in runs(db)}) == ids
    assert locked(db) == []


def test_a_postgresql_restart_while_jobs_run(tmp_path: Path):
    cluster = Cluster()
    try:
        db = cluster.dsn
        prepare_database(db)
        ids = [
            add_job(db, "remember", {"n": n, "sleep": 0.02}, queue_name=f"q{n % 3}")
            for n in range(60)
        ]
        ids += [add_job(db, "remember", {"n": n, "sleep": 0.02}) for n in range(60)]
        config = write_config(tmp_path, db, concurrency=4, poll_interval=0.5)
        with Daemon(config) as daemon:
            daemon.wait_ready()
            wait_for(lambda: len(runs(db)) >= 20, what="some jobs done")
            cluster.restart()
            wait_for(lambda: jobs_left(db) == 0, timeout=90, what="every job after the restart")
            assert daemon.proc.poll() is None
            assert daemon.stop() == 0
        assert sorted({r[0] for r in runs(db)}) == sorted(ids)
        assert locked(db) == []
    finally:
        cluster.destroy()


def test_children_are_recycled_after_max_jobs_and_max_memory(db: str, tmp_path: Path):
    for n in range(12):
        add_job(db, "remember", {"n": n}, queue_name="serial")
    result = run_once(write_config(tmp_path, db, concurrency=1, max_jobs_per_child=5))
    assert result.returncode == 0, result.stderr
    pids = [r[4] for r in runs(db)]
    assert len(pids) == 12
    assert [pids.count(p) for p in dict.fromkeys(pids)] == [5, 5, 2]

    query(db, "truncate public.kt_runs")
    for _ in range(4):
        add_job(db, "hog", {"mib": 80}, queue_name="serial")
    result = run_once(write_config(tmp_path, db, concurrency=1, max_memory_per_child=60))
    assert result.returncode == 0, result.stderr
    # Every child leaves after its one job (80 MiB kept > 60 MiB allowed). Counted from the
    # log rather than from pids, which a busy machine may reuse within the test.
    recycles = result.stderr.count("recycled at")
    assert recycles == 4, f"a child over its memory limit kept working:\n{result.stderr}"
    assert len(runs(db)) == 4


def test_sighup_to_handlers_that_cannot_be_imported_is_refused(db: str, tmp_path: Path):
    config = write_config(tmp_path, db, concurrency=2)
    with Daemon(config) as daemon:
        daemon.wait_ready()
        before = set(daemon.children())
        settings = yaml.safe_load(config.read_text())
        settings["tasks"]["broken"] = "broken_import:handler"  # a valid config, a broken deploy
        config.write_text(yaml.safe_dump(settings))
        daemon.signal(signal.SIGHUP)
        wait_for(lambda: "reload refused" in daemon.log(), what="the refusal")
        job_id = add_job(db, "remember", {})
        wait_for(lambda: job_row(db, job_id) is None, what="jobs after the failed reload")
        assert daemon.proc.poll() is None
        assert set(daemon.children()) == before  # no child was replaced
        assert "reload complete" not in daemon.log()
        assert daemon.stop() == 0


def test_sigterm_mid_batch_hands_back_unstarted_short_jobs(db: str, tmp_path: Path):
    # Short jobs are handed to children in batches; a drain must still hand back (attempt
    # refunded) every job a child had not started, and lose or repeat nothing. A SIGTERM
    # can land while nothing waits unstarted (the hand just emptied, each child on its last
    # job): every drain is checked, and drains are repeated (each after 300 more jobs)
    # until one had jobs to hand back.
    ids = query(
        db,
        "select id from graphile_worker.add_jobs(array(select ('remember', "
        "json_build_object('n', n), null, null, null, null, null, null)"
        "::graphile_worker.job_spec from generate_series(1, 3000) n))",
    )
    ids = sorted(r[0] for r in ids)
    config = write_config(tmp_path, db, concurrency=2)
    handed_back = False
    for _ in range(5):
        before = len(runs(db))
        with Daemon(config) as daemon:
            daemon.wait_ready()
            wait_for(lambda: len(runs(db)) >= before + 300, what="batches under way")  # noqa: B023
            daemon.signal(signal.SIGTERM)
            assert daemon.wait(timeout=30) == 0
            log = daemon.log()
        done = [r[0] for r in runs(db)]
        assert len(done) < 3000, "the drain came too late to test anything"
        left = query(db, "select id, attempts, locked_at from graphile_worker._private_jobs")
        assert all(r[1:] == (0, None) for r in left), [r for r in left if r[1:] != (0, None)][:5]
        assert sorted(done + [r[0] for r in left]) == ids
        if "jobs it had not started" in log or "claimed jobs that no child started" in log:
            handed_back = True
            break
    assert handed_back, "no drain of 5 found a job claimed and not started"
    result = run_once(config)
    assert result.returncode == 0, result.stderr
    assert sorted(r[0] for r in runs(db)) == ids


def test_systemd_watchdog_status_and_drain_extension(db: str, tmp_path: Path):
    slow = add_job(db, "remember", {"sleep": 1.5})
    config = write_config(tmp_path, db, concurrency=1, shutdown_timeout=20)
    with Daemon(config, env={"WATCHDOG_USEC": "400000"}) as daemon:  # ping every 0.2 s
        ready = daemon.wait_ready()
        assert "STATUS=" in ready
        daemon.wait_for_notification("WATCHDOG=1", timeout=5)
        wait_for(lambda: job_row(db, slow)["locked_at"], what="the slow job to start")
        daemon.signal(signal.SIGTERM)
        daemon.wait_for_notification("STOPPING=1", timeout=5)
        message = daemon.wait_for_notification_prefix("EXTEND_TIMEOUT_USEC=")
        extend = next(line for line in message.split("\n") if line.startswith("EXTEND_"))
        # The rest of the 20 s drain plus the kill grace, give or take the time passed.
        assert 20_000_000 <= int(extend.split("=")[1]) <= 31_000_000
        assert daemon.wait(timeout=20) == 0
    assert job_row(db, slow) is None, "the running job finished during the drain"
