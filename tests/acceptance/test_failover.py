"""Failover: a primary and its synchronous standby, the primary killed mid-run, the standby
promoted; the daemon, given both hosts with ``target_session_attrs=read-write``, carries on.

Two throwaway clusters (``tests/support/cluster.py``). 2,000 jobs of the fixture handler
``remember`` (an insert into ``kt_runs`` on ``ctx.connection``: its row is the proof that a
run committed) at four children, a quarter of them in named queues (so queue locks are
tested too). Mid-run: ``pg_ctl stop -m immediate`` on the primary, ``pg_ctl promote`` on the
standby. Then every job must finish on the new primary, no job or queue row stays locked,
and every job's effect is there at least once. Printed, not asserted: seconds from the
promotion to the first job that committed on the new primary, and how many jobs ran twice
(at-least-once: the jobs mid-run at the failover; docs/deployment.md quotes them).

It runs in the local PostgreSQL 15 pass only (not again on the embedded 18): the clusters
are made with the local server binaries, the same in both passes, so a second run would
prove nothing new.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest

from tests.acceptance.test_daemon import jobs_left
from tests.conftest import FORCE_EMBEDDED
from tests.support import wait_for
from tests.support.cluster import ReplicatedPair
from tests.support.daemon import Daemon, prepare_database, query, write_config

local_pass_only = pytest.mark.skipif(
    os.environ.get(FORCE_EMBEDDED, "") not in ("", "0"),
    reason="the failover test runs in the local PostgreSQL pass only",
)

JOBS = 2000

#: ``remember`` jobs with one payload: (payload, count).
ADD_REMEMBER = (
    "select id from graphile_worker.add_jobs(array(select ('remember', %s::json, null, null, "
    "null, null, null, null)::graphile_worker.job_spec from generate_series(1, %s)))"
)


@pytest.fixture()
def pair() -> Iterator[ReplicatedPair]:
    made = ReplicatedPair()
    try:
        yield made
    finally:
        made.destroy()


def locked(dsn: str) -> list[tuple[object, ...]]:
    return query(
        dsn,
        "select 'job', id, locked_by from graphile_worker._private_jobs "
        "where locked_at is not null union all "
        "select 'queue', id, locked_by from graphile_worker._private_job_queues "
        "where locked_at is not null",
    )


def done_count(dsn: str) -> int:
    return int(query(dsn, "select count(distinct job_id) from public.kt_runs")[0][0])


def done_at_least(dsn: str, count: int) -> int:
    """How many jobs are done, once at least ``count`` are (0 before)."""
    done = done_count(dsn)
    return done if done >= count else 0


def reachable(dsn: str) -> bool:
    try:
        psycopg2.connect(dsn).close()
    except psycopg2.OperationalError:
        return False
    return True


@local_pass_only
def test_failover_to_a_promoted_synchronous_standby(pair: ReplicatedPair, tmp_path: Path):
    dsn = pair.dsn
    prepare_database(dsn)
    ids = [
        row[0]
        for row in query(
            dsn,
            "select id from graphile_worker.add_jobs(array(select ('remember', "
            "json_build_object('n', n, 'sleep', 0.004), "
            "case when n %% 4 = 0 then 'q' || (n %% 5) end, null, null, null, null, null)"
            "::graphile_worker.job_spec from generate_series(1, %s) n))",
            (JOBS,),
        )
    ]
    assert len(ids) == JOBS
    # Warnings only: two INFO lines per job would double the run's time on a busy machine.
    config = write_config(
        tmp_path, dsn, concurrency=4, poll_interval=0.5, log={"level": "warning", "format": "text"}
    )
    with Daemon(config) as daemon:
        daemon.wait_ready()
        before = wait_for(lambda: done_at_least(dsn, 300), timeout=30, what="300 jobs done")
        promoted = pair.failover()
        promoted_at = time.time()
        # The new primary answers; the daemon must find it by itself (the DSN names both).
        assert reachable(dsn)
        wait_for(lambda: jobs_left(dsn) == 0, timeout=60, what="every job on the new primary")
        recovered = time.monotonic() - promoted
        assert daemon.proc.poll() is None, daemon.log()
        assert locked(dsn) == []
        # The supervisor and every child are sessions of the new primary (their
        # application_name from dsn.connect, also with two hosts in the DSN).
        names = sorted(
            row[0]
            for row in query(
                dsn,
                "select application_name from pg_stat_activity "
                "where application_name like 'kongtaskd%%'",
            )
        )
        assert names == [f"kongtaskd child {n}" for n in range(4)] + ["kongtaskd supervisor"]
        assert daemon.stop() == 0
        log = daemon.log()
    assert "database connection lost" in log
    # Nothing swept this pool's jobs: an outcome the retry of a settle finds written is the
    # lost COMMIT's doing (logged at INFO), never "dropped".
    assert "outcome dropped" not in log, log
    assert locked(dsn) == []
    counts = dict(
        query(dsn, "select job_id, count(*) from public.kt_runs group by job_id")  # type: ignore[arg-type]
    )
    assert sorted(counts) == sorted(ids), "a job left the table without its effect"
    twice = sorted(job for job, count in counts.items() if count > 1)
    ((first,),) = query(
        dsn,
        "select extract(epoch from min(finished_at)) from public.kt_runs "
        "where finished_at > to_timestamp(%s)",
        (promoted_at,),
    )
    retried = int(
        query(dsn, "select count(distinct job_id) from public.kt_runs where attempts > 1")[0][0]
    )
    print(
        f"\nfailover after >= {before} of {JOBS} jobs: first job committed on the new primary "
        f"{float(first) - promoted_at:.3f} s after the promotion, all done {recovered:.2f} s "
        f"after it; {retried} jobs retried (mid-run: their handler's connection died), "
        f"{len(twice)} of them ran twice (their COMMIT reached the standby, its answer was "
        f"lost): {twice[:10]}"
    )


def test_a_connection_lost_mid_batch_fails_only_the_job_it_ran(fresh_dsn: str, tmp_path: Path):
    # Jobs this short are handed over in batches: the connection dying under one job of a
    # batch fails that job (retried), and the rest of the batch runs on a new connection.
    # Every 10th job drops it (on its first attempt only), so some drops land mid-batch.
    dsn = fresh_dsn
    prepare_database(dsn)
    config = write_config(
        tmp_path, dsn, concurrency=1, poll_interval=0.5, log={"level": "warning", "format": "text"}
    )
    with Daemon(config) as daemon:
        daemon.wait_ready()
        # Teach the job book that these jobs are short (batches need a known average).
        warm = [row[0] for row in query(dsn, ADD_REMEMBER, ("{}", 200))]
        wait_for(lambda: jobs_left(dsn) == 0, timeout=30, what="the warm-up jobs")
        rows = query(
            dsn,
            "select id, (payload->>'drop_connection_on_attempt') is not null "
            "from graphile_worker.add_jobs(array(select ('remember', case when n %% 10 = 5 "
            "then '{\"drop_connection_on_attempt\": 1}' else '{}' end::json, null, null, "
            "null, null, null, null)::graphile_worker.job_spec from generate_series(1, %s) n))",
            (300,),
        )
        wait_for(lambda: jobs_left(dsn) == 0, timeout=30, what="every job, the dropped ones too")
        assert daemon.stop() == 0
        log = daemon.log()
    assert "crashed" not in log and "exited with code" not in log, log
    attempts = dict(
        query(dsn, "select job_id, max(attempts) from public.kt_runs group by job_id")  # type: ignore[arg-type]
    )
    assert sorted(attempts) == sorted(warm + [row[0] for row in rows])
    dropped = [job for job, drops in rows if drops]
    assert len(dropped) == 30
    assert sorted(job for job, _ in rows if attempts[job] != 1) == dropped, "only they retried"
