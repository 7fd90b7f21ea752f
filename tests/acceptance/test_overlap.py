"""The settle's wait serves the children (``kongtaskd/overlap.py``): while the supervisor's
statement is in flight, a child that finishes gets the next job in hand at once.

The statement is held for as long as the test likes: a session of the test's own locks the
row of a job the daemon holds (claimed, not finished), so writing that job's completion
waits for the lock. Jobs that start meanwhile were handed out during the settle's round
trip; a supervisor blocked in it (``SERVE_CHILDREN_DURING_SETTLE = False``) hands out none.
"""

from __future__ import annotations

import os
import select
import threading
import time
from pathlib import Path

import psycopg2
import psycopg2.extensions
import pytest

from kongtaskd.overlap import ServeWhileWaiting
from tests.acceptance.test_daemon import jobs_left
from tests.support import wait_for
from tests.support.daemon import Daemon, prepare_database, query, write_config

#: Long enough not to be batched (a batch runs on in its child without the supervisor:
#: ``BATCH_MAX_AVERAGE_JOB_SECONDS``), short enough to be prefetched, and long next to a
#: claim's round trip: the children then rarely empty the hand, so the write the test
#: blocks is one that rides with a claim while jobs wait in hand (with 4 ms jobs, and
#: children that start a job from the hand without a row load, a loaded machine often had
#: the hand empty at every block).
QUICK_SECONDS = 0.01


def add_quick(db: str, count: int, tag: str) -> None:
    query(
        db,
        "select count(*) from graphile_worker.add_jobs(array(select ('remember',"
        " json_build_object('sleep', %s::float8, 'tag', %s::text), null, null, null, null,"
        " null, null)::graphile_worker.job_spec from generate_series(1, %s)))",
        (QUICK_SECONDS, tag, count),
    )


#: Tries at a settle that blocks while the supervisor holds jobs in hand (it holds none at
#: some blocks: the write of an outcome goes out at once when a child is left idle with
#: nothing in hand, and that is often the write the test blocks).
ATTEMPTS = 10


def child_ran_two_during(db: str, since: object) -> bool:
    """Some child finished a job after ``since`` and then started another: that second job
    was handed over after ``since``. (Jobs of 10 ms are never batched, so a child holds one
    job at a time and gets its next only by a hand-over.)"""
    rows = query(
        db,
        "select exists (select from public.kt_runs as a join public.kt_runs as b"
        " on b.pid = a.pid and b.job_id <> a.job_id"
        " where a.finished_at > %s and b.started_at >= a.finished_at)",
        (since,),
    )
    return bool(rows[0][0])


def test_children_get_jobs_in_hand_while_the_settle_statement_waits(fresh_dsn: str, tmp_path: Path):
    db = fresh_dsn
    prepare_database(db)
    # Six children: while jobs are this short the supervisor keeps at least one per child
    # in hand (``JobBook.prefetch_target``).
    config = write_config(tmp_path, db, concurrency=6)
    holder = psycopg2.connect(db)

    def lock_a_job_in_hand() -> int | None:
        """The row of a job this daemon claimed and has not finished: writing its outcome
        will wait for this session's lock."""
        with holder.cursor() as cur:
            cur.execute(
                "select id from graphile_worker._private_jobs"
                " where locked_at is not null and id not in (select job_id from public.kt_runs)"
                " order by id desc limit 1 for update skip locked"
            )
            row = cur.fetchone()
        if row is None:
            holder.rollback()
            return None
        return int(row[0])

    def blocked_since() -> object:
        rows = query(
            db,
            "select query_start from pg_stat_activity"
            " where application_name = 'kongtaskd supervisor' and wait_event_type = 'Lock'",
        )
        return rows[0][0] if rows else None

    try:
        with Daemon(config) as daemon:
            daemon.wait_ready()
            add_quick(db, 40, "warm-up")  # the prefetch is kept only once jobs are known short
            wait_for(lambda: jobs_left(db) == 0, timeout=30, what="the warm-up jobs")
            add_quick(db, 6000, "stream")
            served = False
            for _ in range(ATTEMPTS):
                wait_for(lock_a_job_in_hand, timeout=30, what="a job in hand to lock")
                since = wait_for(blocked_since, timeout=30, what="the settle blocked")
                # A child that finishes while the statement waits gets a job in hand. A
                # supervisor blocked in it (SERVE_CHILDREN_DURING_SETTLE = False) hands
                # out nothing until the statement returns.
                try:
                    wait_for(lambda: child_ran_two_during(db, since), timeout=2)  # noqa: B023
                    served = blocked_since() == since
                except AssertionError:
                    pass  # no job in hand at this block: let it go, try another
                holder.rollback()
                if served:
                    break
            assert served, f"no job in hand was handed out while a settle waited ({ATTEMPTS} tries)"
            wait_for(lambda: jobs_left(db) == 0, timeout=120, what="every job")
            assert daemon.stop() == 0
    finally:
        holder.close()
    ran = query(db, "select job_id, count(*) from public.kt_runs group by job_id")
    assert len(ran) == 6040 and {count for _, count in ran} == {1}, "a job ran twice or never"


# ---- ServeWhileWaiting on a real connection and a real pipe ----------------------------


@pytest.fixture()
def connection(fresh_dsn: str):
    conn = psycopg2.connect(fresh_dsn)
    conn.autocommit = True
    try:
        yield conn
    finally:
        conn.close()


def test_the_wait_serves_a_pipe_while_a_statement_runs(connection, pipe) -> None:
    read_end, write_end = pipe
    seen: list[tuple[str, float]] = []

    def read() -> None:
        seen.append(("read", time.monotonic()))
        _drain(read_end)

    overlap = ServeWhileWaiting(lambda: {read_end: read}, lambda: seen.append(("served", 0.0)))
    writer = threading.Timer(0.1, os.write, (write_end, b"x"))
    writer.start()
    with overlap.serving():
        with connection.cursor() as cur:
            cur.execute("select pg_sleep(0.5), 42")
            assert cur.fetchone() == ("", 42)
        returned = time.monotonic()
    writer.join()
    assert [kind for kind, _ in seen] == ["read", "served"]
    assert seen[0][1] < returned - 0.2, "the pipe was read only after the statement"
    assert overlap.served == 1
    assert psycopg2.extensions.get_wait_callback() is None


def test_an_error_while_serving_is_raised_after_the_statement(connection, pipe) -> None:
    read_end, write_end = pipe

    def broken() -> None:
        raise RuntimeError("serving went wrong")

    overlap = ServeWhileWaiting(lambda: {read_end: lambda: _drain(read_end)}, broken)
    os.write(write_end, b"x")
    with (
        pytest.raises(RuntimeError, match="serving went wrong"),
        overlap.serving(),
        connection.cursor() as cur,
    ):
        cur.execute("select pg_sleep(0.05), 1")
        assert cur.fetchone() == ("", 1)
    # The statement finished and the connection is fine.
    with connection.cursor() as cur:
        cur.execute("select 2")
        assert cur.fetchone() == (2,)
    assert psycopg2.extensions.get_wait_callback() is None


def test_a_database_error_raises_as_without_the_callback(connection) -> None:
    overlap = ServeWhileWaiting(dict, lambda: None)
    with (
        pytest.raises(psycopg2.errors.DivisionByZero),
        overlap.serving(),
        connection.cursor() as cur,
    ):
        cur.execute("select 1 / 0")
    with connection.cursor() as cur:
        cur.execute("select json_build_object('ok', true)")
        assert cur.fetchone() == ({"ok": True},)
    assert overlap.served == 0


@pytest.fixture()
def pipe():
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    try:
        yield read_end, write_end
    finally:
        os.close(read_end)
        os.close(write_end)


def _drain(fd: int) -> None:
    while select.select([fd], [], [], 0)[0]:
        if not os.read(fd, 4096):
            return
