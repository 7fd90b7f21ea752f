"""A mixed fleet shares one crontab line: every tick runs exactly once.

Two kongtaskd daemons and the real graphile-worker 0.18.0 run ``* * * * * remember`` on
one database across at least two minute boundaries. Each of the three schedules every
tick it sees, and each can run the jobs; the ``_private_known_crontabs`` gate must let
exactly one job per minute through, whoever wins it. Costs up to about two minutes of wall
time, because cron ticks are real minutes.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.support import wait_for
from tests.support.daemon import Daemon, prepare_database, query, write_config
from tests.support.graphile import require_graphile, start_graphile

pytestmark = pytest.mark.interop

CRONTAB = "* * * * * remember\n"

# Records a run the way tests/fixtures/handlers.py's ``remember`` does.
REMEMBER_JS = """\
module.exports = async (payload, helpers) => {
  const job = helpers.job;
  await helpers.query(
    "insert into public.kt_runs (job_id, task, queue_name, payload, pid, attempts, started_at)" +
      " values ($1, $2, $3, $4, $5, $6, now())",
    [job.id, job.task_identifier, job.queue_name ?? null, JSON.stringify(payload),
     process.pid, job.attempts],
  );
};
"""


def graphile_dir(tmp_path: Path) -> Path:
    """A directory graphile-worker can run in: crontab, tasks/remember.js, config."""
    directory = tmp_path / "graphile"
    (directory / "tasks").mkdir(parents=True)
    (directory / "tasks" / "remember.js").write_text(REMEMBER_JS)
    (directory / "crontab").write_text(CRONTAB)
    (directory / "package.json").write_text('{"type": "commonjs"}')
    # Without these, 0.18 can lose a completion at shutdown (reference §4.8).
    (directory / "graphile.config.mjs").write_text(
        "export default { worker: { completeJobBatchDelay: 0, failJobBatchDelay: 0 } };\n"
    )
    return directory


def ticks_run(dsn: str) -> list[str]:
    """The _cron.ts of every recorded run (one entry per run)."""
    rows = query(dsn, "select payload::json -> '_cron' ->> 'ts' from public.kt_runs")
    return sorted(ts for (ts,) in rows)


def minute_boundaries(after: float, before: float) -> list[str]:
    """ISO strings (graphile-worker's format) of the whole minutes in (after, before)."""
    first = math.floor(after / 60) + 1
    found = []
    for minute in range(first, math.ceil(before / 60)):
        moment = dt.datetime.fromtimestamp(minute * 60, dt.timezone.utc)
        found.append(moment.strftime("%Y-%m-%dT%H:%M:%S.000Z"))
    return found


def scheduled_ticks(dsn: str) -> list[str]:
    """The _cron.ts of every run and of every job still queued (one entry per job)."""
    rows = query(
        dsn,
        "select payload::json -> '_cron' ->> 'ts' from public.kt_runs"
        " union all"
        " select payload -> '_cron' ->> 'ts' from graphile_worker._private_jobs",
    )
    return sorted(ts for (ts,) in rows)


def stop_node(node: subprocess.Popen[str]) -> str:
    if node.poll() is None:
        node.send_signal(signal.SIGTERM)
        try:
            node.wait(30)
        except subprocess.TimeoutExpired:
            node.kill()
            node.wait(10)
    out, err = node.communicate()
    return f"{out}\n{err}"


def test_two_kongtaskd_daemons_and_graphile_worker_run_each_tick_once(
    tmp_path: Path, fresh_dsn: str
) -> None:
    require_graphile("0.18")
    dsn = fresh_dsn
    prepare_database(dsn)
    configs = []
    for name in ("a", "b"):
        directory = tmp_path / name
        directory.mkdir()
        configs.append(write_config(directory, dsn, crontab=CRONTAB))
    node_dir = graphile_dir(tmp_path)

    daemons: list[Daemon] = []
    node = start_graphile(["--jobs", "2"], dsn, cwd=node_dir, application_name="gw-cron")
    try:
        daemons = [Daemon(config) for config in configs]
        for daemon in daemons:
            daemon.wait_ready()
        # graphile-worker starts its cron as soon as its pool connects.
        wait_for(
            lambda: (
                node.poll() is not None
                or query(dsn, "select 1 from pg_stat_activity where application_name = 'gw-cron'")
            ),
            timeout=30,
            what="graphile-worker to connect",
        )
        assert node.poll() is None, stop_node(node)
        all_started = time.time()
        # Two whole minutes with all three up, and the second one's job done.
        second = minute_boundaries(all_started, all_started + 121)[1]
        wait_for(
            lambda: second in ticks_run(dsn),
            timeout=150,
            interval=0.5,
            what=f"the run of the {second} tick",
        )
        finished = time.time()
        for daemon in daemons:
            assert daemon.proc.poll() is None, daemon.log()
        assert node.poll() is None, stop_node(node)
    finally:
        node_output = stop_node(node)
        for daemon in daemons:
            daemon.stop()
            daemon.close()

    runs = ticks_run(dsn)
    everything = scheduled_ticks(dsn)
    # Exactly once: no tick was scheduled twice (run or still queued)...
    assert len(everything) == len(set(everything)), (everything, node_output)
    # ...and none was skipped while all three were up.
    covered = minute_boundaries(all_started, finished)
    assert len(covered) >= 2
    for tick in covered:
        assert tick in runs, (tick, runs, node_output)
    # Every job is a live tick on a minute boundary, in graphile-worker's payload format.
    payloads = [json.loads(p) for (p,) in query(dsn, "select payload::text from public.kt_runs")]
    assert all(p == {"_cron": {"ts": p["_cron"]["ts"], "backfilled": False}} for p in payloads)
    assert all(p["_cron"]["ts"].endswith(":00.000Z") for p in payloads)
