"""The typed round trip (``kongtaskd.settle``) against the real statement on PostgreSQL.

Outcomes go in as named fields, and what the statement did comes back as named fields:
these tests check that each field reaches its ``$n`` (a swapped pair would delete a failed
job or keep a completed one) and that ``hand_back`` refunds the attempt, as a child whose
supervisor is gone relies on.
"""

from __future__ import annotations

from typing import Any

import psycopg2
import psycopg2.extensions
import pytest

from kongtaskd.queries import STATEMENTS, Queries
from kongtaskd.settle import NAME, PARAM_TYPES, Outcomes, Settle, Want

POOL = "pool-settle-test-1"


def rows(conn: psycopg2.extensions.connection, text: str, params: Any = None) -> list[Any]:
    with conn.cursor() as cur:
        cur.execute(text, params)
        return cur.fetchall() if cur.description else []


def add_jobs(conn: psycopg2.extensions.connection, task: str, count: int) -> tuple[int, list[int]]:
    rows(
        conn,
        "insert into graphile_worker._private_tasks (identifier) values (%s)"
        " on conflict do nothing",
        (task,),
    )
    ((task_id,),) = rows(
        conn, "select id from graphile_worker._private_tasks where identifier = %s", (task,)
    )
    ids = [
        row[0]
        for row in rows(
            conn,
            "insert into graphile_worker._private_jobs (task_id, payload, run_at)"
            " select %s, '{}', now() - interval '1 minute' from generate_series(1, %s)"
            " returning id",
            (task_id, count),
        )
    ]
    return task_id, sorted(ids)


def test_the_statement_is_prepared_with_the_wrappers_types() -> None:
    assert STATEMENTS[NAME].param_types == PARAM_TYPES
    assert len(PARAM_TYPES) == 14  # $1..$14 of sql/settle.sql


def test_settle_writes_each_outcome_kind_and_claims(conn: psycopg2.extensions.connection) -> None:
    task_id, ids = add_jobs(conn, "t", 5)
    settle = Settle(Queries(conn, "graphile_worker", names=(NAME,)), POOL)
    first = settle.settle(Outcomes(), Want(3, [task_id]))
    claimed = [job.id for job in first.claimed]
    assert sorted(claimed) == ids[:3] and not first.more
    assert {job.task_id for job in first.claimed} == {task_id}
    done, failed, unstarted = claimed
    second = settle.settle(
        Outcomes(completed=[done], failed={failed: "boom"}, released=[unstarted]),
        Want(1, [task_id]),
    )
    assert second.completed == [done]
    assert [(f.id, f.attempts, f.permanent) for f in second.failed] == [(failed, 1, False)]
    assert second.released == [unstarted]
    assert second.written() == {done, failed, unstarted}
    assert len(second.claimed) == 1
    by_id = {
        row[0]: row[1:]
        for row in rows(
            conn, "select id, attempts, last_error, locked_by from graphile_worker._private_jobs"
        )
    }
    assert done not in by_id
    assert by_id[failed] == (1, "boom", None)
    assert by_id[unstarted] == (0, None, None)  # handed back, attempt refunded


def test_hand_back_refunds_the_attempt_and_claims_nothing(
    conn: psycopg2.extensions.connection,
) -> None:
    task_id, ids = add_jobs(conn, "t", 2)
    settle = Settle(Queries(conn, "graphile_worker", names=(NAME,)), POOL)
    claimed = [job.id for job in settle.settle(Outcomes(), Want(2, [task_id])).claimed]
    result = settle.hand_back(claimed)
    assert sorted(result.released) == ids and result.claimed == []
    assert rows(
        conn,
        "select count(*) from graphile_worker._private_jobs"
        " where attempts = 0 and locked_by is null",
    ) == [(2,)]
    # Another pool's hand-back touches nothing of ours.
    again = [job.id for job in settle.settle(Outcomes(), Want(2, [task_id])).claimed]
    assert Settle(settle.queries, "pool-someone-else").hand_back(again).released == []


HISTORY = (
    "select id, task_identifier, queue_name, key, attempts, created_at, started_at,"
    " finished_at, run_seconds, pool_id from graphile_worker._kongtaskd_completed_jobs"
    " order by id"
)


def test_keep_completed_records_each_completed_job_in_the_same_statement(
    conn: psycopg2.extensions.connection,
) -> None:
    task_id, _ = add_jobs(conn, "kept", 0)
    # One job in a named queue with a key, one plain: the record carries what each had.
    ((queued,),) = rows(
        conn,
        "select id from graphile_worker.add_job('kept', '{}', queue_name => 'q1',"
        " job_key => 'k-1', run_at => now() - interval '1 minute')",
    )
    ((plain,),) = rows(
        conn,
        "select id from graphile_worker.add_job('kept', '{}',"
        " run_at => now() - interval '1 minute')",
    )
    created = dict(rows(conn, "select id, created_at from graphile_worker._private_jobs"))
    settle = Settle(Queries(conn, "graphile_worker", names=(NAME,)), POOL)
    claimed = sorted(job.id for job in settle.settle(Outcomes(), Want(2, [task_id])).claimed)
    assert claimed == sorted([queued, plain])

    # Off (the default): the delete writes no record.
    done = settle.settle(Outcomes(completed=[plain], seconds={plain: 0.25}), Want(0, []))
    assert done.completed == [plain]
    assert rows(conn, HISTORY) == []

    # On: one record per completed job, from the same statement as the delete.
    ((statement_time,),) = rows(conn, "select now()")
    done = settle.settle(
        Outcomes(completed=[queued], seconds={queued: 1.5}, tasks={queued: "kept"}),
        Want(0, []),
        keep_completed=True,
    )
    assert done.completed == [queued]
    ((record),) = rows(conn, HISTORY)
    job_id, task, queue, key, attempts, created_at, started, finished, seconds, pool = record
    assert (job_id, task, queue, key, attempts, pool) == (queued, "kept", "q1", "k-1", 1, POOL)
    assert created_at == created[queued]
    assert seconds == 1.5
    assert finished >= statement_time
    assert (finished - started).total_seconds() == pytest.approx(1.5)
    # The queue was released as before.
    assert rows(conn, "select locked_by from graphile_worker._private_job_queues") == [(None,)]


def test_a_completion_without_a_known_duration_is_recorded_without_a_start(
    conn: psycopg2.extensions.connection,
) -> None:
    task_id, ids = add_jobs(conn, "kept", 1)
    settle = Settle(Queries(conn, "graphile_worker", names=(NAME,)), POOL)
    settle.settle(Outcomes(), Want(1, [task_id]))
    settle.settle(Outcomes(completed=ids), Want(0, []), keep_completed=True)
    ((job_id, started, seconds),) = rows(
        conn, "select id, started_at, run_seconds from graphile_worker._kongtaskd_completed_jobs"
    )
    assert (job_id, started, seconds) == (ids[0], None, None)
