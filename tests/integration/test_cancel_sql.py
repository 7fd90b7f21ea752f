"""sql/cancel_jobs.sql and the trigger of kongtaskd migration 7 against real PostgreSQL: a
cancelled job whose holder is not interrupted (a graphile-worker worker, a dead kongtaskd
pool) stays cancelled whoever lets go of it and however (failure, hand-back with a refund,
the dead pool's sweep); leftovers of jobs that succeeded first are cleaned up."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg2
import psycopg2.extensions
import pytest

from kongtaskd.cancel import cancel_jobs
from kongtaskd.queries import Queries
from kongtaskd.settle import Settle
from tests.integration.test_admin import add as add_job_row
from tests.integration.test_admin import beat, lock, queue_dsn, row_of, run  # noqa: F401

Conn = psycopg2.extensions.connection
POOL = "pool-0123456789abcdef01"


@pytest.fixture()
def conn(queue_dsn: str) -> Iterator[Conn]:  # noqa: F811
    connection = psycopg2.connect(queue_dsn)
    with connection, connection.cursor() as cur:
        cur.execute(
            "truncate graphile_worker._private_jobs, graphile_worker._private_job_queues, "
            "graphile_worker._kongtaskd_heartbeats, graphile_worker._kongtaskd_cancels"
        )
    yield connection
    connection.close()


def claimed(conn: Conn, by: str) -> int:
    """A job as a claim leaves it: locked by ``by``, one attempt counted."""
    job_id = add_job_row(conn)
    lock(conn, job_id, by=by)
    run(conn, "update graphile_worker._private_jobs set attempts = 1 where id = %s", job_id)
    return job_id


def cancel(conn: Conn, job_id: int, by: str = "ops@host") -> None:
    with conn:
        result = cancel_jobs(conn, [job_id], by=by)
    assert result.complete and [c.id for c in result.cancelled] == [job_id]


def records(conn: Conn) -> list[int]:
    return [r[0] for r in run(conn, "select job_id from graphile_worker._kongtaskd_cancels")]


def test_a_graphile_worker_job_failed_by_its_worker_keeps_the_cancel(conn: Conn) -> None:
    job_id = claimed(conn, "worker-graphile-1")
    with conn:
        result = cancel_jobs(conn, [job_id], by="ops@host")
    (job,) = result.cancelled
    assert job.running and not job.interrupted and job.locked_by == "worker-graphile-1"
    assert "is not interrupted" in job.describe()
    assert records(conn) == [job_id]
    # graphile-worker's failJob: its own error, back-off, unlock.
    run(
        conn,
        "update graphile_worker._private_jobs set last_error = 'Error: boom', "
        "run_at = now() + interval '2 seconds', locked_by = null, locked_at = null "
        "where id = %s and locked_by = 'worker-graphile-1'",
        job_id,
    )
    row = row_of(conn, job_id)
    assert row is not None
    assert row["last_error"] == job.message and row["attempts"] >= row["max_attempts"]
    assert records(conn) == []  # consumed


def test_a_hand_back_with_refund_does_not_revive_a_cancelled_job(conn: Conn) -> None:
    beat(conn, POOL)
    job_id = claimed(conn, POOL)
    cancel(conn, job_id)
    conn.autocommit = True
    settle = Queries(conn, "graphile_worker", names=("settle",))
    Settle(settle, POOL).hand_back([job_id])  # released, refunded
    row = row_of(conn, job_id)
    assert row is not None and row["locked_by"] is None
    assert row["attempts"] == row["max_attempts"]
    assert str(row["last_error"]).startswith("cancelled by ops@host at ")


def test_the_sweep_of_a_dead_pool_leaves_it_failed_with_the_cancel_message(conn: Conn) -> None:
    dead = "pool-dead0000000000000000"
    beat(conn, dead, age="10 minutes")
    job_id = claimed(conn, dead)
    with conn:
        (job,) = cancel_jobs(conn, [job_id], by="ops@host", stale_after=60).cancelled
    assert not job.interrupted  # its heartbeat is stale: nobody interrupts it
    conn.autocommit = True
    sweep = Queries(conn, "graphile_worker", names=("sweep",))
    swept = sweep.fetchall("sweep", 60.0, POOL)
    assert [r[0] for r in swept] == [dead]
    row = row_of(conn, job_id)
    assert row is not None and row["locked_by"] is None
    assert row["last_error"] == job.message and row["attempts"] >= row["max_attempts"]


def test_leftover_records_of_jobs_that_succeeded_first_are_removed(conn: Conn) -> None:
    beat(conn, POOL)
    job_id = claimed(conn, POOL)
    cancel(conn, job_id)
    run(conn, "delete from graphile_worker._private_jobs where id = %s", job_id)  # it succeeded
    assert records(conn) == [job_id]
    other = add_job_row(conn)
    cancel(conn, other)
    assert records(conn) == []


def test_unlocking_an_uncancelled_job_is_untouched(conn: Conn) -> None:
    job_id = claimed(conn, POOL)
    run(
        conn,
        "update graphile_worker._private_jobs set attempts = 0, locked_by = null, "
        "locked_at = null where id = %s",
        job_id,
    )
    row = row_of(conn, job_id)
    assert row is not None and row["attempts"] == 0 and row["last_error"] is None
