"""Plans made on an empty jobs table stay right when the table fills.

Every statement a daemon runs often is planned once per session (generic plans), usually at
start, when the jobs table is empty or fresh. Planned then, a lookup by id is a sequential
scan (right for ten pages) and stays one while a burst fills the table: nothing re-plans it
short of an ANALYZE. Measured before the fix: the settle statement at 60,000 jobs took 10 ms
of server CPU per call planned that way, against 0.8 ms planned on the full table.

The check reads the plans PostgreSQL actually runs, nested ones included (auto_explain,
reported to this client as NOTICEs): no sequential scan of the jobs table once it is full.
Both callers are covered: the supervisor's session (session.py sets the planner up: the
settle's own lookups by id went sequential) and any other session calling the claim function
(kongtaskd_get_job, run_jobs), whose statements reach every row through an index by their
shape, on any table size; the second test keeps it so.
"""

from __future__ import annotations

import selectors
from collections.abc import Iterator

import psycopg2
import psycopg2.extensions
import pytest

from kongtaskd.session import Session
from kongtaskd.settle import Outcomes, Want

POOL = "pool-plans-test-0001"
JOBS = 20_000


def execute(conn: psycopg2.extensions.connection, text: str, params: object = None) -> list:
    with conn.cursor() as cur:
        cur.execute(text, params)
        return cur.fetchall() if cur.description else []


def explain_nested(conn: psycopg2.extensions.connection) -> None:
    """Every plan this session runs from now on comes back as a NOTICE (skip where the
    server has no auto_explain)."""
    try:
        execute(conn, "LOAD 'auto_explain'")
    except psycopg2.Error as error:
        pytest.skip(f"auto_explain is not available on this server: {error}")
    execute(
        conn,
        "SET auto_explain.log_min_duration = 0; SET auto_explain.log_nested_statements = on;"
        " SET auto_explain.log_level = notice; SET client_min_messages = notice",
    )


def fill(conn: psycopg2.extensions.connection, task_id: int) -> None:
    """A burst: JOBS ready jobs, inserted with no ANALYZE after them (autovacuum may be off,
    and even when it is on, it comes a minute later)."""
    execute(
        conn,
        "insert into graphile_worker._private_jobs (task_id, payload, run_at)"
        " select %s, '{}', now() - interval '1 minute' from generate_series(1, %s)",
        (task_id, JOBS),
    )


def sequential_scans(notices: list[str]) -> list[str]:
    return [
        line.strip()
        for notice in notices
        for line in notice.splitlines()
        if "Seq Scan on _private_jobs" in line
    ]


@pytest.fixture()
def task_conn(conn: psycopg2.extensions.connection) -> Iterator[int]:
    execute(conn, "insert into graphile_worker._private_tasks (identifier) values ('t')")
    ((task_id,),) = execute(
        conn, "select id from graphile_worker._private_tasks where identifier = 't'"
    )
    yield task_id


def test_the_supervisors_settle_planned_on_an_empty_table_uses_indexes_when_full(
    fresh_dsn: str, conn: psycopg2.extensions.connection, task_conn: int
) -> None:
    session = Session(
        fresh_dsn, "graphile_worker", POOL, selectors.DefaultSelector(), listen=False, tasks=["t"]
    )
    supervisor = session.connect([])
    try:
        assert session.round_trip is not None
        # Past the five custom plans: from here on the session runs its generic plan, made
        # on the empty table.
        for _ in range(8):
            session.round_trip.settle(Outcomes(), Want(1, [task_conn]))
        fill(conn, task_conn)
        explain_nested(supervisor)
        claimed = session.round_trip.settle(Outcomes(), Want(3, [task_conn])).claimed
        assert len(claimed) == 3
        del supervisor.notices[:]
        result = session.round_trip.settle(
            Outcomes(completed=[claimed[0].id], released=[claimed[1].id]), Want(2, [task_conn])
        )
        assert result.completed == [claimed[0].id] and result.released == [claimed[1].id]
        notices = list(supervisor.notices)
        assert any("kongtaskd_claim" in notice for notice in notices), notices[:2]
        assert sequential_scans(notices) == []
    finally:
        session.close()
        supervisor.close()


def test_the_claim_function_planned_on_an_empty_table_uses_indexes_when_full(
    fresh_dsn: str, conn: psycopg2.extensions.connection, task_conn: int
) -> None:
    # Any session, with PostgreSQL's defaults (kongtaskd_get_job's callers): the function
    # plans its statements once per session (force_generic_plan, migration 6).
    other = psycopg2.connect(fresh_dsn)
    other.autocommit = True
    try:
        for _ in range(3):
            execute(
                other, "select * from graphile_worker.kongtaskd_claim(%s, null, null, 1)", (POOL,)
            )
        fill(conn, task_conn)
        explain_nested(other)
        rows = execute(
            other, "select * from graphile_worker.kongtaskd_claim(%s, null, null, 5)", (POOL,)
        )
        assert len(rows) == 5
        assert sequential_scans(list(other.notices)) == []
    finally:
        other.close()
