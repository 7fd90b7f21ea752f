"""A child whose supervisor dies hands back every job it holds, wherever the SIGTERM lands.

Real processes and the real signal: ``tests/support/orphan.py`` forks a real child, sends it
a batch and dies; the child's PDEATHSIG SIGTERM is held back and released at one numbered
line event of the batch loop after another (every event one run reaches). After each run
the database must show every job either done once or back in the queue, unlocked, its
attempt refunded: none left locked for the stale sweep to fail.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.daemon import REPO, prepare_database, query

BATCH = 3


@pytest.fixture()
def db(fresh_dsn: str) -> str:
    prepare_database(fresh_dsn)
    return fresh_dsn


def claim_batch(dsn: str, pool_id: str) -> list[int]:
    """Add BATCH jobs and claim them for ``pool_id`` as the supervisor's claim does."""
    ids = [
        row[0]
        for row in query(
            dsn,
            "select (graphile_worker.add_job('remember', json_build_object('n', n))).id"
            " from generate_series(1, %s) n",
            (BATCH,),
        )
    ]
    query(
        dsn,
        "update graphile_worker._private_jobs set locked_by = %s, locked_at = now(),"
        " attempts = attempts + 1 where id = any(%s) returning id",
        (pool_id, ids),
    )
    return sorted(ids)


def run_orphan(dsn: str, tmp_path: Path, inject: int) -> tuple[list[int], list[str], str]:
    """One orphaned batch with the SIGTERM at event ``inject`` (-1: none): (ids, events, log)."""
    pool_id = f"orphan-test-{inject}"
    ids = claim_batch(dsn, pool_id)
    events = tmp_path / f"events-{inject}.txt"
    result = subprocess.run(
        [sys.executable, "-m", "tests.support.orphan", dsn, pool_id, str(events), str(inject)]
        + [str(i) for i in ids],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    lines = events.read_text().splitlines() if events.exists() else []
    return ids, lines, result.stderr


def problems(dsn: str, ids: list[int]) -> list[str]:
    """What is wrong with these jobs: each must be done exactly once, or back in the queue
    with its attempt refunded and never run."""
    rows = {
        r[0]: r[1:]
        for r in query(
            dsn,
            "select id, locked_by, locked_at, attempts, last_error"
            " from graphile_worker._private_jobs where id = any(%s)",
            (ids,),
        )
    }
    runs: dict[int, int] = dict(
        query(
            dsn,
            "select job_id, count(*) from public.kt_runs where job_id = any(%s) group by job_id",
            (ids,),
        )
    )
    found = []
    for job_id in ids:
        if job_id in rows:
            locked_by, locked_at, attempts, last_error = rows[job_id]
            if locked_by is not None or locked_at is not None:
                found.append(f"job {job_id} left locked by {locked_by}")
            elif attempts != 0 or last_error is not None:
                found.append(f"job {job_id} back with attempts {attempts}, error {last_error!r}")
            if runs.get(job_id):
                found.append(f"job {job_id} ran but is still in the table")
        elif runs.get(job_id) != 1:
            found.append(f"job {job_id} deleted after {runs.get(job_id, 0)} runs")
    return found


def test_sigterm_on_every_line_of_the_batch_loop_hands_back_every_job(db: str, tmp_path: Path):
    ids, events, log = run_orphan(db, tmp_path, -1)
    assert problems(db, ids) == [], log
    assert len(events) > 10 and any(" run_batch " in e for e in events), events
    failures = []
    for n, event in enumerate(events):
        ids, reached, log = run_orphan(db, tmp_path, n)
        assert len(reached) > n, f"event {event!r} not reached: {reached[-1:]} {log}"
        assert reached[n] == event, "the child took another path: the test is not deterministic"
        wrong = problems(db, ids)
        if wrong:
            failures.append(f"SIGTERM at event {event}: {'; '.join(wrong)}")
    assert failures == [], "\n".join(failures)
