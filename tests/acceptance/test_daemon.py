"""The daemon end to end: real supervisor, real forked children, real PostgreSQL."""

from __future__ import annotations

import itertools
import json
import re
import signal
from pathlib import Path

import psycopg2
import pytest

from tests.support import wait_for
from tests.support.daemon import Daemon, prepare_database, query, run_once, write_config


@pytest.fixture()
def db(fresh_dsn: str) -> str:
    prepare_database(fresh_dsn)
    return fresh_dsn


def add_job(dsn: str, task: str, payload: object = None, **options: object) -> int:
    """Enqueue through graphile-worker's own SQL function, as any application would."""
    names = ", ".join(f"{key} => %({key})s" for key in options)
    params = {"task": task, "payload": json.dumps(payload or {}), **options}
    extra = f", {names}" if names else ""
    text = f"select id from graphile_worker.add_job(%(task)s, %(payload)s::json{extra})"
    return int(query(dsn, text, params)[0][0])


def jobs_left(dsn: str) -> int:
    return int(query(dsn, "select count(*) from graphile_worker._private_jobs")[0][0])


def job_row(dsn: str, job_id: int) -> dict[str, object] | None:
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "select j.*, extract(epoch from j.run_at) as run_at_epoch "
                "from graphile_worker._private_jobs j where id = %s",
                (job_id,),
            )
            row = cur.fetchone()
            if row is None:
                return None
            return dict(zip([d.name for d in cur.description], row, strict=True))
    finally:
        conn.close()


def runs(dsn: str) -> list[tuple[object, ...]]:
    return query(
        dsn,
        "select job_id, task, queue_name, payload, pid, attempts, started_at, finished_at "
        "from public.kt_runs order by started_at",
    )


def test_named_queues_run_in_order_one_at_a_time_and_every_job_once(db: str, tmp_path: Path):
    ids: dict[str | None, list[int]] = {"alpha": [], "beta": [], "gamma": [], None: []}
    for n in range(12):
        for queue in ("alpha", "beta", "gamma"):
            ids[queue].append(add_job(db, "remember", {"n": n, "sleep": 0.01}, queue_name=queue))
    for n in range(30):
        ids[None].append(add_job(db, "remember", {"n": n}))
    config = write_config(tmp_path, db, concurrency=4)
    with Daemon(config) as daemon:
        daemon.wait_ready()
        wait_for(lambda: jobs_left(db) == 0, timeout=60, what="every job done")
        assert daemon.stop() == 0

    rows = runs(db)
    run_ids = [r[0] for r in rows]
    assert sorted(run_ids) == sorted(i for group in ids.values() for i in group)
    assert len(run_ids) == len(set(run_ids)), "a job ran twice"
    for queue in ("alpha", "beta", "gamma"):
        in_queue = [r for r in rows if r[2] == queue]
        assert [r[0] for r in in_queue] == ids[queue], f"queue {queue} ran out of order"
        for earlier, later in itertools.pairwise(in_queue):
            assert earlier[7] <= later[6], (
                f"queue {queue}: jobs {earlier[0]} and {later[0]} overlapped"
            )
    assert len({r[4] for r in rows}) > 1, "only one child did all the work"
    assert query(
        db, "select count(*) from graphile_worker._private_job_queues where locked_at is not null"
    ) == [(0,)]


def test_failure_sets_last_error_and_backs_off_then_retries(db: str, tmp_path: Path):
    (before,) = query(db, "select extract(epoch from now())")[0]
    job_id = add_job(db, "fail_then_succeed", {"succeed_on": 2})
    config = write_config(tmp_path, db, poll_interval=0.2)
    with Daemon(config) as daemon:
        daemon.wait_ready()
        failed = wait_for(
            lambda: (row := job_row(db, job_id)) and row["last_error"] and row, what="first failure"
        )
        (after,) = query(db, "select extract(epoch from now())")[0]
        assert failed["attempts"] == 1
        assert failed["locked_by"] is None and failed["locked_at"] is None
        assert failed["last_error"].startswith("ValueError: not yet (attempt 1)")
        assert "Traceback (most recent call last)" in failed["last_error"]
        assert "fail_then_succeed" in failed["last_error"]
        # run_at = greatest(now(), run_at) + exp(least(attempts, 10)) seconds, with attempts 1
        delay = float(failed["run_at_epoch"]) - 2.718281828
        assert float(before) - 0.01 <= delay <= float(after) + 0.01
        wait_for(lambda: job_row(db, job_id) is None, timeout=15, what="the retry to succeed")
        assert daemon.stop() == 0
    (run,) = runs(db)
    assert run[0] == job_id and run[5] == 2
    assert run[6].timestamp() >= float(failed["run_at_epoch"]) - 0.05


def test_permanent_failure_stays_in_the_table(db: str, tmp_path: Path):
    job_id = add_job(db, "fail", {}, max_attempts=1)
    result = run_once(write_config(tmp_path, db))
    assert result.returncode == 0, result.stderr
    row = job_row(db, job_id)
    assert row is not None
    assert row["attempts"] == 1 and row["max_attempts"] == 1
    assert row["last_error"].startswith("RuntimeError: asked to fail (attempt 1)")
    assert row["locked_at"] is None and row["is_available"] is False


def test_forbidden_flags_never_run(db: str, tmp_path: Path):
    blocked = add_job(db, "remember", {"which": "blocked"}, flags=["no-run", "other"])
    allowed = add_job(db, "remember", {"which": "allowed"}, flags=["other"])
    plain = add_job(db, "remember", {"which": "plain"})
    result = run_once(write_config(tmp_path, db, forbidden_flags=["no-run"]))
    assert result.returncode == 0, result.stderr
    assert sorted(r[0] for r in runs(db)) == sorted([allowed, plain])
    row = job_row(db, blocked)
    assert row is not None and row["attempts"] == 0 and row["locked_at"] is None


@pytest.mark.parametrize(
    ("task", "how"),
    [
        ("exit_hard", "exited with code 7"),
        ("kill_self", "killed by signal SIGKILL"),
        ("segfault", "killed by signal SIGSEGV"),
    ],
)
def test_a_dying_child_fails_only_its_job_and_is_replaced(
    db: str, tmp_path: Path, task: str, how: str
):
    victim = add_job(db, task, {"code": 7}, max_attempts=3)
    others = [add_job(db, "remember", {"n": n, "sleep": 0.02}) for n in range(20)]
    config = write_config(tmp_path, db, concurrency=2)
    with Daemon(config) as daemon:
        daemon.wait_ready()  # the victim may be dead already: it is the first job claimed
        row = wait_for(
            lambda: (r := job_row(db, victim)) and r["last_error"] and r,
            what="the victim's failure",
        )
        assert how in row["last_error"], row["last_error"]
        assert f"while running job {victim}" in row["last_error"]
        assert row["locked_at"] is None and row["attempts"] == 1
        wait_for(lambda: len(runs(db)) == len(others), timeout=30, what="the other jobs")
        # Children 0 and 1 were the first; a third one replaced the dead one.
        wait_for(lambda: "child 2 started" in daemon.log(), what="a replacement child")
        wait_for(lambda: len(daemon.children()) == 2, what="two children again")
        assert daemon.proc.poll() is None, "the daemon died with its child"
        assert daemon.stop() == 0
    assert sorted(r[0] for r in runs(db)) == sorted(others)
    assert query(
        db, "select count(*) from graphile_worker._private_job_queues where locked_at is not null"
    ) == [(0,)]


def test_job_timeout_kills_a_stuck_handler(db: str, tmp_path: Path):
    stuck = add_job(db, "spin", {})
    fine = add_job(db, "remember", {})
    tasks = {"spin": {"handler": "handlers:spin", "timeout": 1}, "remember": "handlers:remember"}
    config = write_config(tmp_path, db, tasks=tasks, task_modules=[])
    with Daemon(config) as daemon:
        daemon.wait_ready()
        row = wait_for(
            lambda: (r := job_row(db, stuck)) and r["last_error"] and r, timeout=20, what="timeout"
        )
        assert row["last_error"].startswith("job timed out after 1s"), row["last_error"]
        assert "JobInterrupted" in row["last_error"]  # the handler's stack was unwound
        assert row["locked_at"] is None
        wait_for(lambda: job_row(db, fine) is None, what="the other job")
        assert daemon.stop() == 0


def test_async_decorated_and_follow_up_handlers(db: str, tmp_path: Path):
    a = add_job(db, "remember_async", {"kind": "async"})
    d = add_job(db, "decorated", {"kind": "decorated"})
    f = add_job(db, "enqueue_follow_up", {"kind": "parent"})
    result = run_once(write_config(tmp_path, db))
    assert result.returncode == 0, result.stderr
    done = runs(db)
    assert {r[0] for r in done} >= {a, d, f}
    follow_ups = [r for r in done if r[3] == {"follow_up_of": f}]
    assert len(follow_ups) == 1 and follow_ups[0][1] == "remember"
    assert jobs_left(db) == 0


def test_once_runs_everything_ready_and_exits(db: str, tmp_path: Path):
    ready = [add_job(db, "remember", {"n": n}) for n in range(25)]
    later = add_job(db, "remember", {"n": "later"}, run_at="2999-01-01T00:00:00Z")
    result = run_once(write_config(tmp_path, db, concurrency=3))
    assert result.returncode == 0, result.stderr
    assert sorted(r[0] for r in runs(db)) == ready
    assert [r["id"] for r in filter(None, [job_row(db, later)])] == [later]


def test_a_handler_that_cannot_be_imported_stops_the_start(db: str, tmp_path: Path):
    config = write_config(tmp_path, db, tasks={"broken": "broken_import:handler"}, task_modules=[])
    add_job(db, "broken", {})
    result = run_once(config, timeout=60)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if "kongtaskd:" in line]
    assert lines, result.stderr
    assert "broken_import" in lines[-1] and "broken on purpose" in lines[-1]
    assert "Traceback" not in result.stderr
    (row,) = query(db, "select attempts, locked_at from graphile_worker._private_jobs")
    assert row == (0, None), "a job was claimed although the handlers could not load"


def test_notify_wakes_an_idle_daemon_without_polling(db: str, tmp_path: Path):
    config = write_config(tmp_path, db, poll_interval=3600)
    with Daemon(config) as daemon:
        daemon.wait_ready()
        job_id = add_job(db, "remember", {})
        wait_for(lambda: job_row(db, job_id) is None, timeout=10, what="NOTIFY to wake the daemon")
        daemon.signal(signal.SIGTERM)
        assert daemon.wait() == 0


def test_migrate_false_on_a_database_without_kongtaskd_objects_is_a_clear_error(
    fresh_dsn: str, tmp_path: Path
):
    config = write_config(tmp_path, fresh_dsn, migrate=False)
    result = run_once(config)
    assert result.returncode == 1, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("kongtaskd: schema 'graphile_worker' is not installed"), last
    assert "kongtaskd migrate" in last and "Traceback" not in result.stderr
    # A database graphile-worker's rows alone would satisfy: still refused, kongtaskd's
    # own tables are missing.
    query(fresh_dsn, "create schema graphile_worker")
    query(fresh_dsn, "create table graphile_worker.migrations (id int, breaking bool)")
    query(fresh_dsn, "insert into graphile_worker.migrations values (20, false)")
    result = run_once(config)
    assert result.returncode == 1 and "kongtaskd migrate" in result.stderr


def cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()


def test_process_titles_and_json_logs(db: str, tmp_path: Path):
    config = write_config(tmp_path, db, concurrency=2, log={"level": "info", "format": "json"})
    slow = add_job(db, "remember", {"sleep": 2})
    with Daemon(config) as daemon:
        daemon.wait_ready()
        wait_for(lambda: job_row(db, slow)["locked_at"], what="the slow job to start")
        pool = job_row(db, slow)["locked_by"]
        title = wait_for(
            lambda: (t := cmdline(daemon.pid)).endswith("[1/2 busy]") and t, what="busy title"
        )
        assert title == f"kongtaskd: supervisor [{pool}] [1/2 busy]"
        titles = sorted(cmdline(pid) for pid in daemon.children())
        assert re.fullmatch(r"kongtaskd: child \d+ idle", titles[1]), titles
        assert titles[0] == f"kongtaskd: child {titles[0].split()[2]} running remember#{slow}"
        wait_for(lambda: job_row(db, slow) is None, what="the slow job to finish")
        assert daemon.stop() == 0
        lines = [json.loads(line) for line in daemon.log().splitlines() if line.strip()]
    assert all({"ts", "level", "logger", "msg"} <= set(line) for line in lines)
    job_lines = [line for line in lines if line.get("job_id") == slow]
    # At info, one line per finished job; "job started" is debug (kongtaskd/logs.py).
    words = {line["msg"].split(" ")[1] for line in job_lines}
    assert "succeeded" in words and "started" not in words, job_lines
    assert all(line["task"] == "remember" for line in job_lines)
    assert not any("postgres@" in line.get("msg", "") for line in lines)


def test_a_named_queue_runs_back_to_back_without_waiting_for_a_poll(db: str, tmp_path: Path):
    config = write_config(tmp_path, db, concurrency=2, poll_interval=3600)
    with Daemon(config) as daemon:
        daemon.wait_ready()
        ids = [add_job(db, "remember", {"n": n}, queue_name="serial") for n in range(5)]
        # Each job unlocks its queue as it completes; the next one must be claimed on the
        # following loop turn, not at the next poll an hour later.
        wait_for(lambda: all(job_row(db, i) is None for i in ids), timeout=5, what="the queue")
        assert daemon.stop() == 0
    assert [r[0] for r in runs(db)] == ids


def test_a_slow_job_never_holds_short_ones_back_in_a_batch(db: str, tmp_path: Path):
    # Thousands of quick jobs are handed out in batches; slow jobs among them must end a
    # batch (nothing queued behind them), so the quick ones keep flowing on the other child.
    query(
        db,
        "select count(*) from graphile_worker.add_jobs(array(select ('noop', "
        "json_build_object('n', n), null, null, null, null, null, null)"
        "::graphile_worker.job_spec from generate_series(1, 2000) n))",
    )
    gate = tmp_path / "gate"
    slow = [add_job(db, "remember", {"gate": str(gate)}) for _ in range(2)]
    query(
        db,
        "select count(*) from graphile_worker.add_jobs(array(select ('noop', "
        "json_build_object('n', n), null, null, null, null, null, null)"
        "::graphile_worker.job_spec from generate_series(1, 2000) n))",
    )
    config = write_config(tmp_path, db, concurrency=3)
    with Daemon(config) as daemon:
        daemon.wait_ready()
        # The 4,000 quick jobs finish while the two slow ones still run on two children.
        wait_for(
            lambda: (
                query(
                    db, "select count(*) from graphile_worker.jobs where task_identifier = 'noop'"
                )
                == [(0,)]
            ),
            timeout=30,
            what="the quick jobs, with both slow jobs still running",
        )
        # The slow jobs wait on the gate, so they are still running: had a batch queued quick
        # jobs behind them, those could not have finished.
        assert all(job_row(db, i)["locked_at"] for i in slow)
        gate.touch()
        wait_for(lambda: jobs_left(db) == 0, timeout=15, what="the slow jobs")
        assert daemon.stop() == 0


def test_a_child_that_breaks_the_pipe_protocol_is_killed_not_the_daemon(db: str, tmp_path: Path):
    victim = add_job(db, "garble_pipe", {}, max_attempts=2)
    config = write_config(tmp_path, db, concurrency=1)
    with Daemon(config) as daemon:
        daemon.wait_ready()
        row = wait_for(
            lambda: (r := job_row(db, victim)) and r["last_error"] and r, what="the failure"
        )
        assert "broke protocol" in row["last_error"], row["last_error"]
        assert "sent garbage" in daemon.log()
        job_id = add_job(db, "remember", {})
        wait_for(lambda: job_row(db, job_id) is None, what="a replacement child at work")
        assert daemon.stop() == 0
