"""What the children's unprepared statements cost (issue #13 §5, ``child_connection``).

    PYTHONPATH=$PWD python perf/pooler_bench.py [--jobs 10000] [--rounds 5] [--task noop]

Three modes, interleaved round by round (the order rotates each round), each on a fresh
database with one daemon of ``--concurrency`` children and ``log: {level: warning}``:

* ``direct, prepared``: ``connection`` only (children PREPARE their statements);
* ``direct, unprepared``: ``child_connection`` set to the same direct DSN (what setting the
  key does, without a pooler in the way);
* ``pooled``: ``child_connection`` through PgBouncer 1.18 in transaction mode,
  ``default_pool_size`` = children (nobody waits for a server connection).

Jobs are queued while the daemon is idle (one statement, from the bench's own connection);
the clock runs from that commit until the queue is empty. PostgreSQL CPU is the user+system
time of every backend on the bench's database (the bench's own excepted) over that window,
from /proc: the server is shared with other databases, so only its own backends are
counted. PgBouncer's own CPU is reported apart. Medians over rounds, min-max beside them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import psycopg2  # noqa: E402

from tests.conftest import create_database, drop_database  # noqa: E402
from tests.support.daemon import Daemon, prepare_database, write_config  # noqa: E402
from tests.support.pgbouncer import PoolerDsn, pgbouncer  # noqa: E402

ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
MODES = ("direct, prepared", "direct, unprepared", "pooled")
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process, 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def backends(monitor: Any) -> list[int]:
    with monitor.cursor() as cur:
        cur.execute(
            "select pid from pg_stat_activity where datname = current_database() "
            "and pid <> pg_backend_pid()"
        )
        return [row[0] for row in cur.fetchall()]


def jobs_left(monitor: Any) -> int:
    with monitor.cursor() as cur:
        cur.execute("select count(*) from graphile_worker._private_jobs")
        return int(cur.fetchone()[0])


@contextmanager
def pooler_for(mode: str, dsn: str, size: int) -> Iterator[PoolerDsn | None]:
    if mode != "pooled":
        yield None
        return
    with pgbouncer(dsn, pool_mode="transaction", pool_size=size) as pooled:
        yield pooled


def one(mode: str, jobs: int, concurrency: int, task: str) -> dict[str, float]:
    dsn = create_database(ADMIN, "kt_pooler_perf")
    try:
        prepare_database(dsn)
        with tempfile.TemporaryDirectory() as tmp, pooler_for(mode, dsn, concurrency) as pooled:
            extra: dict[str, Any] = {}
            if mode == "direct, unprepared":
                extra["child_connection"] = dsn
            elif pooled is not None:
                extra["child_connection"] = str(pooled)
            config = write_config(
                Path(tmp),
                dsn,
                concurrency=concurrency,
                log={"level": "warning", "format": "text"},
                **extra,
            )
            bouncer = pooled.pid if pooled is not None else None
            with Daemon(config) as daemon:
                daemon.wait_ready()
                monitor = psycopg2.connect(dsn)
                monitor.autocommit = True
                try:
                    pids = backends(monitor)
                    before = {pid: cpu_seconds(pid) for pid in pids}
                    bouncer_before = cpu_seconds(bouncer) if bouncer else 0.0
                    with monitor.cursor() as cur:
                        cur.execute(
                            "select count(graphile_worker.add_job(%s, '{}'::json)) "
                            "from generate_series(1, %s)",
                            (task, jobs),
                        )
                    started = time.perf_counter()
                    while jobs_left(monitor):
                        time.sleep(0.005)
                    seconds = time.perf_counter() - started
                    pids = sorted(set(pids) | set(backends(monitor)))
                    pg_cpu = sum(cpu_seconds(pid) - before.get(pid, 0.0) for pid in pids)
                    bouncer_cpu = (cpu_seconds(bouncer) - bouncer_before) if bouncer else 0.0
                finally:
                    monitor.close()
                daemon.stop()
        return {
            "jobs_per_s": jobs / seconds,
            "pg_cpu_us_per_job": pg_cpu / jobs * 1e6,
            "pgbouncer_cpu_us_per_job": bouncer_cpu / jobs * 1e6,
        }
    finally:
        drop_database(ADMIN, dsn)


def statement_cost(rounds: int, calls: int) -> None:
    """The child's per-job statement alone (``load_job`` of a held job), prepared vs
    unprepared on one direct connection, blocks interleaved: the backend's CPU and the
    client's wall time per call."""
    from kongtaskd.queries import Queries
    from kongtaskd.settle import Outcomes, Settle, Want

    dsn = create_database(ADMIN, "kt_pooler_stmt")
    try:
        prepare_database(dsn)
        conn = psycopg2.connect(dsn)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("select graphile_worker.add_job('noop', '{}'::json)")
            cur.execute("select pg_backend_pid(), id from graphile_worker._private_tasks")
            backend, task_id = cur.fetchone()
        modes = {
            "prepared": Queries(conn, "graphile_worker", names=("load_job", "settle")),
            "unprepared": Queries(conn, "graphile_worker", names=("load_job",), prepared=False),
        }
        (job,) = (
            Settle(modes["prepared"], "pooler-bench-pool")
            .settle(Outcomes(), Want(1, [task_id]))
            .claimed
        )
        cpu: dict[str, list[float]] = {mode: [] for mode in modes}
        wall: dict[str, list[float]] = {mode: [] for mode in modes}
        for round_ in range(rounds):
            for mode in sorted(modes, reverse=bool(round_ % 2)):
                queries = modes[mode]
                before, started = cpu_seconds(backend), time.perf_counter()
                for _ in range(calls):
                    assert queries.fetchall("load_job", job.id, "pooler-bench-pool")
                wall[mode].append((time.perf_counter() - started) / calls * 1e6)
                cpu[mode].append((cpu_seconds(backend) - before) / calls * 1e6)
        conn.close()
    finally:
        drop_database(ADMIN, dsn)
    print(f"\nload_job alone, {calls} calls x {rounds} interleaved blocks (median, min-max)\n")
    print("| mode | backend CPU µs/call | wall µs/call |")
    print("|---|---|---|")
    for mode in modes:
        print(f"| {mode} | {fmt(cpu[mode], 1)} | {fmt(wall[mode], 1)} |")


def fmt(values: list[float], digits: int = 0) -> str:
    median = statistics.median(values)
    return f"{median:,.{digits}f} ({min(values):,.{digits}f}-{max(values):,.{digits}f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--task", default="noop", help="noop, or remember (one insert)")
    parser.add_argument(
        "--statement", action="store_true", help="only the per-job statement, prepared or not"
    )
    args = parser.parse_args()
    if args.statement:
        statement_cost(args.rounds, 5000)
        return
    results: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
    for round_ in range(args.rounds):
        order = MODES[round_ % 3 :] + MODES[: round_ % 3]
        for mode in order:
            figures = one(mode, args.jobs, args.concurrency, args.task)
            results[mode].append(figures)
            print(f"round {round_ + 1} {mode}: {figures}", flush=True)
    base = statistics.median(r["jobs_per_s"] for r in results[MODES[0]])
    print(
        f"\n{args.jobs} {args.task} jobs, {args.concurrency} children, "
        f"{args.rounds} interleaved rounds (median, min-max)\n"
    )
    print("| mode | jobs/s | vs prepared | PG CPU µs/job | PgBouncer CPU µs/job |")
    print("|---|---|---|---|---|")
    for mode in MODES:
        rate = [r["jobs_per_s"] for r in results[mode]]
        print(
            f"| {mode} | {fmt(rate)} | {statistics.median(rate) / base:.2f}x "
            f"| {fmt([r['pg_cpu_us_per_job'] for r in results[mode]])} "
            f"| {fmt([r['pgbouncer_cpu_us_per_job'] for r in results[mode]])} |"
        )


if __name__ == "__main__":
    main()
