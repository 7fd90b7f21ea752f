"""Throughput of an uncapped task beside a saturated capped one (issue #16).

    PYTHONPATH=$PWD python perf/caps_fleet.py [--free 3000] [--capped 300] [--rounds 3]

Each round runs one daemon with 4 children on a fresh database twice: ``alone`` with
``--free`` no-op jobs of an uncapped task, and ``beside`` with the same jobs plus
``--capped`` older jobs of 50 ms of a task with ``concurrency: 2`` (always saturated: its
backlog outlasts the uncapped one). Reported: the seconds until the uncapped jobs are all done
(median over rounds) and the capped task's jobs per second meanwhile. Results:
perf/results/caps.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.conftest import create_database, drop_database  # noqa: E402
from tests.support.daemon import Daemon, prepare_database, query, write_config  # noqa: E402

ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"


def left(dsn: str, task: str) -> int:
    rows = query(
        dsn, "select count(*) from graphile_worker.jobs where task_identifier = %s", (task,)
    )
    return int(rows[0][0])


def one(free: int, capped: int) -> tuple[float, float]:
    dsn = create_database(ADMIN, "kt_caps_perf")
    try:
        prepare_database(dsn)
        directory = Path(tempfile.mkdtemp(prefix="kt-caps-perf-"))
        tasks = {
            "free": "handlers:noop",
            "capped": {"handler": "handlers:remember", "concurrency": 2},
        }
        config = write_config(
            directory, dsn, tasks=tasks, concurrency=4, log={"level": "warning", "format": "text"}
        )
        # The capped jobs are older: in graphile-worker's order they come first, so each claim
        # must take the uncapped task's jobs past the capped ones it may not start.
        if capped:
            query(
                dsn,
                "select graphile_worker.add_job('capped', '{\"sleep\": 0.05}')"
                " from generate_series(1, %s)",
                (capped,),
            )
        query(
            dsn, "select graphile_worker.add_job('free', '{}') from generate_series(1, %s)", (free,)
        )
        with Daemon(config) as daemon:
            daemon.wait_ready()
            started = time.monotonic()
            while left(dsn, "free"):
                time.sleep(0.02)
            seconds = time.monotonic() - started
            capped_done = capped - left(dsn, "capped")
            daemon.stop()
        return seconds, capped_done / seconds
    finally:
        drop_database(ADMIN, dsn)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--free", type=int, default=3000)
    parser.add_argument("--capped", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    alone, beside, capped_rate = [], [], []
    for _ in range(args.rounds):
        alone.append(one(args.free, 0)[0])
        seconds, rate = one(args.free, args.capped)
        beside.append(seconds)
        capped_rate.append(rate)
    a, b = statistics.median(alone), statistics.median(beside)
    print(f"uncapped {args.free} no-op jobs, 1 daemon x 4 children:")
    print(f"  alone:  {a:.2f} s ({args.free / a:.0f} jobs/s)  runs {alone}")
    print(f"  beside a saturated concurrency-2 task: {b:.2f} s ({args.free / b:.0f} jobs/s)")
    print(f"  capped task meanwhile: {statistics.median(capped_rate):.1f} jobs/s (cap 2 x 50 ms)")


if __name__ == "__main__":
    main()
