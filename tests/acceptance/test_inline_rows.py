"""Inline rows (issue 13 §2): a claimed job handed out within ``INLINE_ROW_MAX_AGE`` of its
claim travels with the row the claim read, and the child skips its row load.

Two things must hold. The row is the one the child would have loaded (``sql/load_job.sql``),
also when the job changed or appeared between the settle statement's snapshot and its
claim's; and the ownership check stays: a job this pool no longer holds never runs, whether
or not its row once travelled.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.extensions

import kongtaskd
from kongtaskd import tunables
from kongtaskd.child import decode_row
from kongtaskd.queries import Queries
from kongtaskd.settle import Outcomes, Settle, Want
from tests.support import wait_for
from tests.support.daemon import Daemon, prepare_database, query, write_config

POOL = "pool-inline-rows-test-1"
OTHER_POOL = "pool-inline-rows-test-2"


def execute(conn: psycopg2.extensions.connection, text: str, params: Any = None) -> list[Any]:
    with conn.cursor() as cur:
        cur.execute(text, params)
        return cur.fetchall() if cur.description else []


def task_id(conn: psycopg2.extensions.connection, name: str) -> int:
    execute(
        conn,
        "insert into graphile_worker._private_tasks (identifier) values (%s)"
        " on conflict do nothing",
        (name,),
    )
    return execute(
        conn, "select id from graphile_worker._private_tasks where identifier = %s", (name,)
    )[0][0]


def test_a_claimed_row_is_the_row_the_child_would_load(conn) -> None:
    noop = task_id(conn, "noop")
    small = kongtaskd.add_job(
        conn,
        "noop",
        {"text": "zürich \u2603", "n": [1, 2.5, None, True], "nested": {"a": {}}},
        queue_name="tenant-1",
        job_key="key-1",
        flags=["b", "a"],
        priority=-3,
        max_attempts=7,
    ).id
    plain = kongtaskd.add_job(conn, "noop", None).id
    big = kongtaskd.add_job(conn, "noop", {"blob": "x" * tunables.INLINE_ROW_MAX_BYTES}).id
    queries = Queries(conn, "graphile_worker")
    result = Settle(queries, POOL).settle(Outcomes(), Want(10, [noop], rows=10))
    claimed = {job.id: job for job in result.claimed}
    assert set(claimed) == {small, plain, big}
    assert claimed[big].row is None  # over the threshold: the child loads it
    assert decode_row(b"no task identifier, no NUL") is None  # malformed: the child loads
    for job_id in (small, plain):
        row = claimed[job_id].row
        assert row is not None
        (loaded,) = queries.fetchall("load_job", job_id, POOL)
        assert decode_row(b"noop\0" + row.encode()) == loaded
    # Rows for the best jobs only, as many as asked for (what idle children can take).
    later = kongtaskd.add_job(conn, "noop", {"n": 2}).id
    best = kongtaskd.add_job(conn, "noop", {"n": 1}, priority=-1).id
    result = Settle(queries, POOL).settle(Outcomes(), Want(10, [noop], rows=1))
    assert {job.id: job.row is not None for job in result.claimed} == {best: True, later: False}
    # Off: no row at all.
    other = kongtaskd.add_job(conn, "noop", {"n": 1}).id
    want = Want(10, [noop], rows=10)
    result = Settle(queries, POOL).settle(Outcomes(), want, inline_row_max_bytes=0)
    assert [(job.id, job.row) for job in result.claimed] == [(other, None)]


def test_a_job_changed_or_added_after_the_statements_snapshot_goes_without_its_row(
    conn, fresh_dsn
) -> None:
    """The claim (a volatile function) sees what committed after the settle statement's
    snapshot; the rows the statement reads do not. A job replaced in between (add_job with
    its key: new payload) must not travel with its old payload, and a job added in between
    cannot travel at all: both go without a row, and the child loads them. The other
    transaction holds a lock that the statement's first step waits for, and commits once the
    statement waits: after its snapshot, before its claim."""
    noop = task_id(conn, "noop")
    queries = Queries(conn, "graphile_worker")
    held = kongtaskd.add_job(conn, "noop", {"n": "held"}).id
    assert [job.id for job in Settle(queries, POOL).settle(Outcomes(), Want(1, [noop])).claimed]
    unchanged = kongtaskd.add_job(conn, "noop", {"n": "unchanged"}).id
    replaced = kongtaskd.add_job(conn, "noop", {"v": 1}, job_key="replace-me").id
    other = psycopg2.connect(fresh_dsn)
    settler = psycopg2.connect(fresh_dsn)
    settler.autocommit = True
    try:
        with other.cursor() as cur:  # a transaction left open: locks our outcome's row
            cur.execute(
                "select 1 from graphile_worker._private_jobs where id = %s for update", (held,)
            )
        assert kongtaskd.add_job(other, "noop", {"v": 2}, job_key="replace-me").id == replaced
        added = kongtaskd.add_job(other, "noop", {"n": "added"}).id
        settler_pid = execute(settler, "select pg_backend_pid()")[0][0]
        settle = Settle(Queries(settler, "graphile_worker"), POOL)
        outcome: dict[str, Any] = {}

        def run() -> None:
            try:
                want = Want(10, [noop], rows=10)
                outcome["result"] = settle.settle(Outcomes(completed=[held]), want)
            except psycopg2.Error as exc:
                outcome["error"] = exc

        thread = threading.Thread(target=run)
        thread.start()
        wait_for(
            lambda: execute(
                conn,
                "select 1 from pg_stat_activity where pid = %s and wait_event_type = 'Lock'",
                (settler_pid,),
            ),
            what="the settle statement to wait for the open transaction's lock",
        )
        other.commit()
        thread.join(30)
    finally:
        other.close()
        settler.close()
    assert "error" not in outcome, outcome.get("error")
    result = outcome["result"]
    assert result.completed == [held]
    rows = {job.id: job.row for job in result.claimed}
    assert set(rows) == {unchanged, replaced, added}
    assert rows[unchanged] is not None  # seen by the snapshot, unchanged since: it travels
    assert rows[replaced] is None  # the snapshot holds the old payload: must not travel
    assert rows[added] is None  # invisible to the snapshot
    loaded = queries.fetchall("load_job", unchanged, POOL)[0]
    assert decode_row(b"noop\0" + rows[unchanged].encode()) == loaded


def test_a_prefetched_job_another_pool_took_never_runs(fresh_dsn, tmp_path: Path) -> None:
    """A job claimed with its row but left in hand (the only child is busy) is taken over by
    another pool, as after a sweep or ``force_unlock_workers`` and someone else's claim.
    When the child gets to it, it must not run, and we must not delete or mark it: its row
    vouches for ownership only for INLINE_ROW_MAX_AGE after its claim, so the child loads
    it, which only a job this pool still holds passes."""
    prepare_database(fresh_dsn)
    config = write_config(tmp_path, fresh_dsn, concurrency=1)
    with Daemon(config) as daemon:
        daemon.wait_ready()
        # Short jobs first: the average job time makes the supervisor prefetch.
        conn = psycopg2.connect(fresh_dsn)
        try:
            for _ in range(20):
                kongtaskd.add_job(conn, "noop")
            conn.commit()
            wait_for(
                lambda: not query(fresh_dsn, "select 1 from graphile_worker._private_jobs"),
                timeout=30,
                what="the warm-up jobs to finish",
            )
            gate = tmp_path / "gate"
            # One transaction, one NOTIFY, one claim: the gated job goes to the child, the
            # other is prefetched with its row (its task is not measured yet: batches end
            # at the gated one).
            blocker = kongtaskd.add_job(conn, "remember", {"gate": str(gate)}).id
            taken = kongtaskd.add_job(conn, "remember", {"n": "taken over"}).id
            conn.commit()
        finally:
            conn.close()
        pool = wait_for(
            lambda: query(
                fresh_dsn,
                "select min(locked_by) from graphile_worker._private_jobs"
                " where id = any(%s) having count(locked_by) = 2",
                ([blocker, taken],),
            ),
            what="both jobs to be claimed",
        )[0][0]
        assert pool and pool != OTHER_POOL
        # The take-over is what the bound is for: a job in hand longer than it (counted from
        # before the claim was sent) goes without its row. Seen claimed, it is older than
        # the bound once this much more time has passed, whatever the machine's speed.
        time.sleep(tunables.INLINE_ROW_MAX_AGE)
        query(
            fresh_dsn,
            "update graphile_worker._private_jobs set locked_by = %s, locked_at = now()"
            " where id = %s and locked_by = %s",
            (OTHER_POOL, taken, pool),
        )
        gate.touch()
        wait_for(
            lambda: f"job {taken} skipped" in daemon.log(),
            timeout=30,
            what="the child to skip the job it no longer holds",
        )
        runs = query(fresh_dsn, "select job_id from public.kt_runs order by job_id")
        assert runs == [(blocker,)]
        row = query(
            fresh_dsn,
            "select locked_by, attempts, last_error from graphile_worker._private_jobs"
            " where id = %s",
            (taken,),
        )
        assert row == [(OTHER_POOL, 1, None)]
        daemon.stop()


def test_only_a_claim_without_outcomes_commits_asynchronously(conn) -> None:
    """``Want.async_commit``: the statement sets synchronous_commit off for its own
    transaction when it carries no outcome, never for the session, and never when an
    outcome rides along (run in an explicit transaction here, to read the setting in it)."""
    noop = task_id(conn, "noop")
    queries = Queries(conn, "graphile_worker")
    settle = Settle(queries, POOL)

    def commit_mode(outcomes: Outcomes, async_commit: bool) -> str:
        execute(conn, "begin")
        try:
            settle.settle(outcomes, Want(1, [noop], async_commit=async_commit))
            return execute(conn, "show synchronous_commit")[0][0]
        finally:
            execute(conn, "commit")

    assert commit_mode(Outcomes(), async_commit=False) == "on"
    assert commit_mode(Outcomes(), async_commit=True) == "off"
    job = kongtaskd.add_job(conn, "noop").id
    assert [j.id for j in settle.settle(Outcomes(), Want(1, [noop], async_commit=True)).claimed]
    assert execute(conn, "show synchronous_commit")[0][0] == "on"  # the session's is kept
    assert commit_mode(Outcomes(completed=[job]), async_commit=True) == "on"
    assert not execute(conn, "select 1 from graphile_worker._private_jobs where id = %s", (job,))
