"""``kongtaskd.run_jobs``: the daemon's claim and outcomes, inline, on real PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.extensions
import pytest

import kongtaskd
from tests.fixtures import handlers
from tests.support.daemon import prepare_database, query, run_once, write_config

TASKS: dict[str, Callable[..., Any]] = {
    "remember": handlers.remember,
    "fail": handlers.fail,
    "fail_then_succeed": handlers.fail_then_succeed,
}


def write_then_fail(payload: Any, ctx: Any) -> None:
    """Records the run, then raises: the record must be rolled back with the failure."""
    handlers.record(payload, ctx)
    raise RuntimeError("wrote, then failed")


@pytest.fixture()
def db(fresh_dsn: str) -> str:
    prepare_database(fresh_dsn)
    return fresh_dsn


@pytest.fixture()
def conn(db: str) -> Iterator[psycopg2.extensions.connection]:
    connection = psycopg2.connect(db)  # not autocommit: one open transaction
    try:
        yield connection
    finally:
        connection.close()


def jobs(dsn: str) -> list[tuple[Any, ...]]:
    return query(
        dsn,
        "select key, attempts, max_attempts, split_part(last_error, E'\\n', 1), locked_by,"
        " run_at > now(), run_at <= now() + exp(attempts) * interval '1 second'"
        " from graphile_worker._private_jobs order by key",
    )


def runs(dsn: str) -> list[tuple[Any, ...]]:
    return query(dsn, "select task, payload::text, attempts from kt_runs order by job_id")


def enqueue_mix(dsn: str) -> None:
    kongtaskd.add_job(dsn, "remember", {"n": 1}, job_key="a-ok")
    kongtaskd.add_job(dsn, "fail", {"n": 2}, job_key="b-retry", max_attempts=3)
    kongtaskd.add_job(dsn, "fail", {"n": 3}, job_key="c-last", max_attempts=1)
    kongtaskd.add_job(dsn, "fail_then_succeed", {"succeed_on": 2}, job_key="d-later")


def test_rows_are_the_daemons_rows(database_factory: Any, tmp_path: Path) -> None:
    daemon_db, inline_db = database_factory(), database_factory()
    for dsn in (daemon_db, inline_db):
        prepare_database(dsn)
        enqueue_mix(dsn)
    done = run_once(write_config(tmp_path, daemon_db, concurrency=1))
    assert done.returncode == 0, done.stdout + done.stderr
    summary = kongtaskd.run_jobs(inline_db, TASKS)
    assert sorted(summary.succeeded) and len(summary.failed) == 2
    assert len(summary.permanently_failed) == 1
    expected = [
        ("b-retry", 1, 3, "RuntimeError: asked to fail (attempt 1)", None, True, True),
        ("c-last", 1, 1, "RuntimeError: asked to fail (attempt 1)", None, True, True),
        ("d-later", 1, 25, "ValueError: not yet (attempt 1)", None, True, True),
    ]
    assert jobs(inline_db) == jobs(daemon_db) == expected
    assert runs(inline_db) == runs(daemon_db) == [("remember", '{"n": 1}', 1)]


def test_a_retry_runs_when_due_and_succeeds(db: str) -> None:
    kongtaskd.add_job(db, "fail_then_succeed", {"succeed_on": 2})
    first = kongtaskd.run_jobs(db, TASKS)
    assert (len(first.failed), first.succeeded) == (1, [])
    assert kongtaskd.run_jobs(db, TASKS).ran == 0  # backing off: not ready yet
    query(db, "update graphile_worker._private_jobs set run_at = now()")
    second = kongtaskd.run_jobs(db, TASKS)
    assert second.succeeded == first.failed
    assert query(db, "select count(*) from graphile_worker._private_jobs") == [(0,)]
    assert runs(db) == [("fail_then_succeed", '{"succeed_on": 2}', 2)]


def test_inside_an_open_transaction_with_a_savepoint_per_job(
    db: str, conn: psycopg2.extensions.connection
) -> None:
    kongtaskd.add_job(conn, "remember", {"n": 1})
    kongtaskd.add_job(conn, "write_then_fail", {"n": 2})
    assert query(db, "select count(*) from graphile_worker._private_jobs") == [(0,)]
    summary = kongtaskd.run_jobs(conn, {**TASKS, "write_then_fail": write_then_fail})
    assert (len(summary.succeeded), len(summary.failed)) == (1, 1)
    assert "RuntimeError: wrote, then failed" in next(iter(summary.errors.values()))
    with conn.cursor() as cur:
        # In the caller's transaction: the success's write, not the failure's; the
        # failure recorded on the row, the success's row gone.
        cur.execute("select task from kt_runs")
        assert cur.fetchall() == [("remember",)]
        cur.execute("select attempts, locked_by from graphile_worker._private_jobs")
        assert cur.fetchall() == [(1, None)]
    assert conn.info.transaction_status == psycopg2.extensions.TRANSACTION_STATUS_INTRANS
    assert runs(db) == []  # nothing committed behind the caller's back
    conn.rollback()
    assert runs(db) == [] and jobs(db) == []


def test_a_rolled_back_enqueue_is_not_seen(db: str, conn: psycopg2.extensions.connection) -> None:
    kongtaskd.add_job(conn, "remember", {"n": 1})
    conn.rollback()
    assert kongtaskd.run_jobs(conn, TASKS).ran == 0
    assert kongtaskd.run_jobs(db, TASKS).ran == 0


def test_a_named_queue_runs_in_order_and_a_held_queue_is_left_alone(db: str) -> None:
    for n in range(3):
        kongtaskd.add_job(db, "remember", {"n": n}, queue_name="serial")
    kongtaskd.add_job(db, "remember", {"n": 9}, queue_name="busy")
    # A daemon holds the queue "busy": its jobs must wait, as they would for a daemon.
    query(db, "update graphile_worker._private_job_queues set locked_by = 'other-pool',"
              " locked_at = now() where queue_name = 'busy'")  # fmt: skip
    summary = kongtaskd.run_jobs(db, TASKS)
    assert len(summary.succeeded) == 3
    assert [row[1] for row in runs(db)] == ['{"n": 0}', '{"n": 1}', '{"n": 2}']
    assert query(db, "select payload::text from graphile_worker._private_jobs") == [('{"n": 9}',)]


def test_limit_and_only_the_given_tasks(db: str) -> None:
    for n in range(3):
        kongtaskd.add_job(db, "remember", {"n": n})
    kongtaskd.add_job(db, "someone_elses", {})
    assert kongtaskd.run_jobs(db, TASKS, limit=2).ran == 2
    assert kongtaskd.run_jobs(db, TASKS).ran == 1
    left = query(db, "select task_identifier from graphile_worker.jobs")
    assert left == [("someone_elses",)]


def test_a_psycopg3_connection(db: str) -> None:
    psycopg = pytest.importorskip("psycopg")

    def remember3(payload: Any, ctx: Any) -> None:
        ctx.connection.execute(
            "insert into kt_runs (job_id, task, payload, pid, attempts, started_at)"
            " values (%s, 'remember3', %s, 0, %s, now())",
            (ctx.job.id, psycopg.types.json.Json(payload), ctx.job.attempts),
        )
        ctx.add_job("remember", {"follow": "up"})

    with psycopg.connect(db) as conn3:
        kongtaskd.add_job(conn3, "remember3", {"when": "2026-01-01"})
        summary = kongtaskd.run_jobs(conn3, {"remember3": remember3, **TASKS})
        assert len(summary.succeeded) == 2  # its follow-up ran too, in the same transaction
        conn3.commit()
    assert [row[0] for row in runs(db)] == ["remember3", "remember"]


def test_bad_arguments_get_clear_errors(db: str, conn: psycopg2.extensions.connection) -> None:
    with pytest.raises(TypeError, match="tasks must be a non-empty dict"):
        kongtaskd.run_jobs(db, {})
    with pytest.raises(TypeError, match="the handler of task 'x' is a int"):
        kongtaskd.run_jobs(db, {"x": 1})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="limit must be a positive integer"):
        kongtaskd.run_jobs(db, TASKS, limit=0)
    with pytest.raises(TypeError, match="psycopg2 or psycopg 3 connection"):
        kongtaskd.run_jobs(object(), TASKS)
    conn.autocommit = True
    with pytest.raises(ValueError, match="autocommit mode"):
        kongtaskd.run_jobs(conn, TASKS)


def test_with_a_dsn_a_failure_commits_its_row_but_not_its_writes(db: str) -> None:
    kongtaskd.add_job(db, "write_then_fail", {"n": 1}, max_attempts=5)
    kongtaskd.add_job(db, "remember", {"n": 2})
    summary = kongtaskd.run_jobs(db, {**TASKS, "write_then_fail": write_then_fail})
    assert (len(summary.succeeded), len(summary.failed)) == (1, 1)
    assert runs(db) == [("remember", '{"n": 2}', 1)]  # committed; the failure's write not
    assert [row[:5] for row in jobs(db)] == [(None, 1, 5, "RuntimeError: wrote, then failed", None)]


def test_an_async_handler_is_awaited(db: str) -> None:
    async def remember_async(payload: Any, ctx: Any) -> None:
        handlers.record(payload, ctx)

    kongtaskd.add_job(db, "remember_async", {"n": 1})
    assert len(kongtaskd.run_jobs(db, {"remember_async": remember_async}).succeeded) == 1
    assert runs(db) == [("remember_async", '{"n": 1}', 1)]


def test_a_sqlalchemy_session(db: str) -> None:
    sqlalchemy = pytest.importorskip("sqlalchemy")
    from sqlalchemy.orm import Session

    from kongtaskd.dsn import connect

    def follow(payload: Any, ctx: Any) -> None:
        ctx.add_job("note", {"after": payload["n"]})  # on the Session: same transaction

    def note(payload: Any, ctx: Any) -> None:  # ctx.connection is the Session given
        ctx.connection.execute(
            sqlalchemy.text(
                "insert into kt_runs (job_id, task, payload, pid, attempts, started_at)"
                " values (:id, 'note', :payload, 0, :attempts, now())"
            ),
            {"id": ctx.job.id, "payload": '{"after": 1}', "attempts": ctx.job.attempts},
        )

    engine = sqlalchemy.create_engine("postgresql+psycopg2://", creator=lambda: connect(db))
    with Session(engine) as session:
        kongtaskd.add_job(session, "follow", {"n": 1})
        summary = kongtaskd.run_jobs(session, {"follow": follow, "note": note})
        assert (len(summary.succeeded), summary.failed) == (2, [])
        seen = session.execute(sqlalchemy.text("select task from kt_runs")).all()
        assert [tuple(row) for row in seen] == [("note",)]
        session.rollback()
    engine.dispose()
    assert jobs(db) == [] and runs(db) == []
