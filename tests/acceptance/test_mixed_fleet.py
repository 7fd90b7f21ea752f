"""kongtaskd and the real graphile-worker 0.18.0 working one queue table together."""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
from pathlib import Path

import pytest

from tests.acceptance.test_daemon import jobs_left
from tests.support import wait_for
from tests.support.daemon import Daemon, prepare_database, query, write_config
from tests.support.graphile import require_graphile, start_graphile

pytestmark = pytest.mark.interop

#: The same record as tests/fixtures/handlers.py:remember, written by graphile-worker.
REMEMBER_JS = """
module.exports = async (payload, helpers) => {
  const started = Date.now() / 1000;
  await new Promise((resolve) => setTimeout(resolve, payload.sleep_ms || 0));
  await helpers.query(
    "insert into public.kt_runs (job_id, task, queue_name, payload, pid, attempts, started_at)"
    + " values ($1, $2, null, $3, $4, $5, to_timestamp($6))",
    [helpers.job.id, helpers.job.task_identifier, JSON.stringify(payload), process.pid,
     helpers.job.attempts, started]
  );
};
"""


def graphile_workdir(path: Path) -> Path:
    (path / "tasks").mkdir(parents=True)
    (path / "package.json").write_text('{"type": "commonjs"}')
    (path / "tasks" / "remember.js").write_text(REMEMBER_JS)
    # Without these, 0.18 loses completions at shutdown (reference §4.8).
    (path / "graphile.config.mjs").write_text(
        "export default { worker: { completeJobBatchDelay: 0, failJobBatchDelay: 0 } };\n"
    )
    return path


def test_a_mixed_fleet_runs_every_job_once_in_queue_order(fresh_dsn: str, tmp_path: Path):
    require_graphile()
    db = fresh_dsn
    prepare_database(db)
    specs = [
        {"queue_name": f"q{n % 5}" if n % 2 else None, "payload": {"n": n, "sleep_ms": 2}}
        for n in range(1000)
    ]
    (count,) = query(
        db,
        "select count(*) from graphile_worker.add_jobs(array("
        " select ('remember', s->'payload', s->>'queue_name', null, null, null, null, null)"
        "::graphile_worker.job_spec from json_array_elements(%s::json) s))",
        (json.dumps(specs),),
    )[0]
    assert count == 1000
    queue_of = dict(
        query(
            db,
            "select j.id, q.queue_name from graphile_worker._private_jobs j "
            "left join graphile_worker._private_job_queues q on q.id = j.job_queue_id",
        )
    )
    (tmp_path / "kt").mkdir()
    config = write_config(tmp_path / "kt", db, concurrency=2)
    workdir = graphile_workdir(tmp_path / "gw")
    graphile = start_graphile(["--jobs", "2"], db, cwd=workdir, application_name="graphile")
    try:
        with Daemon(config) as daemon:
            daemon.wait_ready()
            wait_for(lambda: jobs_left(db) == 0, timeout=120, what="all 1000 jobs")
            assert daemon.stop() == 0
    finally:
        graphile.send_signal(signal.SIGTERM)
        try:
            graphile.wait(30)
        except subprocess.TimeoutExpired:
            graphile.kill()
    rows = query(
        db, "select job_id, pid, started_at, finished_at from public.kt_runs order by started_at"
    )
    ids = [r[0] for r in rows]
    assert len(ids) == 1000 and set(ids) == set(queue_of), "a job was lost or ran twice"
    pids_by_system = {pid for _, pid, _, _ in rows}
    graphile_pid = graphile.pid
    assert graphile_pid in pids_by_system, "graphile-worker did no work"
    assert pids_by_system - {graphile_pid}, "kongtaskd did no work"
    for queue in {q for q in queue_of.values() if q}:
        in_queue = [r for r in rows if queue_of[r[0]] == queue]
        assert [r[0] for r in in_queue] == sorted(r[0] for r in in_queue), f"{queue} out of order"
        for earlier, later in itertools.pairwise(in_queue):
            assert earlier[3] <= later[2], f"{queue}: {earlier[0]} and {later[0]} overlapped"
    assert query(
        db, "select count(*) from graphile_worker._private_job_queues where locked_at is not null"
    ) == [(0,)]
