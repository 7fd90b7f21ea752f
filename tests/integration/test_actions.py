"""kongtaskd.actions against a real PostgreSQL: a filter's set up to an id, worked through in
batches, re-checked batch by batch, and one audit line per call."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import psycopg2
import psycopg2.extensions
import pytest

from kongtaskd import actions
from kongtaskd.schema import migrate

S = "graphile_worker"


@pytest.fixture()
def conn(dsn: str) -> Iterator[psycopg2.extensions.connection]:
    connection = psycopg2.connect(dsn)
    migrate(connection, S)
    with connection, connection.cursor() as cur:
        cur.execute("truncate graphile_worker._private_jobs, graphile_worker._private_tasks")
    yield connection
    connection.close()


def add_failed(conn: psycopg2.extensions.connection, task: str, count: int) -> list[int]:
    with conn, conn.cursor() as cur:
        cur.execute(
            "select (graphile_worker.add_job(%s, '{}')).id from generate_series(1, %s)",
            (task, count),
        )
        ids = [row[0] for row in cur.fetchall()]
        cur.execute(
            "update graphile_worker._private_jobs set attempts = max_attempts, "
            "last_error = 'E: no' where id = any(%s)",
            (ids,),
        )
    return ids


def attempts(conn: psycopg2.extensions.connection) -> dict[int, int]:
    with conn, conn.cursor() as cur:
        cur.execute("select id, attempts from graphile_worker._private_jobs")
        return dict(cur.fetchall())


def test_a_filter_acts_in_batches_on_the_set_up_to_its_id(
    conn: psycopg2.extensions.connection, caplog: pytest.LogCaptureFixture
) -> None:
    wanted = add_failed(conn, "a", 23)
    other = add_failed(conn, "b", 3)
    selection = actions.Matching(actions.JobFilter(task="a", state="failed"), 0)
    upto = actions.highest_id(conn, S)
    selection = actions.Matching(selection.filter, upto)
    assert actions.count_matching(conn, S, selection) == 23
    later = add_failed(conn, "a", 2)
    with caplog.at_level(logging.INFO, logger=actions.AUDIT_LOGGER):
        result = actions.apply(conn, S, actions.Action.RETRY, selection, who="tester", batch=5)
    assert result.changed == wanted
    now = attempts(conn)
    assert all(now[i] == 0 for i in wanted)
    assert all(now[i] == 25 for i in other + later)
    [line] = [r.getMessage() for r in caplog.records if r.name == actions.AUDIT_LOGGER]
    expected = f"audit: tester retry task='a' state='failed' up to id {upto}: "
    assert line == expected + "23 changed, 0 running, 0 missing"


def test_each_batch_rechecks_the_filter(conn: psycopg2.extensions.connection) -> None:
    ids = add_failed(conn, "c", 6)
    selection = actions.Matching(actions.JobFilter(task="c", state="failed"), max(ids))
    # Someone retries two of them before the action runs: they no longer match.
    actions.retry_jobs(conn, S, ids[:2])
    result = actions.apply(conn, S, actions.Action.REMOVE, selection, who="t", batch=2)
    assert result.changed == ids[2:]
    assert sorted(attempts(conn)) == ids[:2]


def test_error_text_is_matched_literally(conn: psycopg2.extensions.connection) -> None:
    [a] = add_failed(conn, "d", 1)
    [b] = add_failed(conn, "d", 1)
    with conn, conn.cursor() as cur:
        cur.execute(
            "update graphile_worker._private_jobs set last_error = '100%% down' where id = %s", (a,)
        )
    found = actions.Matching(actions.JobFilter(error="100%"), max(a, b))
    assert actions.count_matching(conn, S, found) == 1
    assert actions.count_matching(conn, S, actions.Matching(actions.JobFilter(error="_"), b)) == 0
