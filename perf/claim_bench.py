"""The claim statement alone: milliseconds per statement, as the supervisor runs it.

    python perf/claim_bench.py                        # kongtaskd/sql/settle.sql
    python perf/claim_bench.py --sql old.sql --sql kongtaskd/sql/settle.sql --rounds 7

Two workloads (``--workload``):

* ``drain``: ``--jobs`` no-op jobs spread over ``--tasks`` task identifiers (one priority,
  one add_jobs call), then claim ``--size`` and complete the previous claim's jobs in the
  same statement until the queue is empty: the supervisor's steady state under load.
* ``idle``: one job is queued before each claim of ``--size``, which also completes the
  previous one: the latency path of an idle daemon.

Each round builds a fresh database (``--dsn`` must be allowed to create databases) and
runs every ``--sql`` file in turn; the report is the median over rounds of each file's
mean (drain) or median (idle) statement time. Used for perf/results/analysis.md, section 1.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import psycopg2
from benchlib import Server

from kongtaskd import queries

CLAIM_TYPES = "(bigint[], bigint[], text[], bigint[], text, integer[], text[], int)"
POOL = "pool-claim-bench"
DEFAULT_SQL = Path(__file__).resolve().parent.parent / "kongtaskd" / "sql" / "settle.sql"


def run_round(dsn: str, files: list[Path], args: argparse.Namespace) -> dict[str, float]:
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute("SET plan_cache_mode = force_generic_plan")  # as the supervisor does
    names = {}
    for n, path in enumerate(files):
        body = queries.bind_schema(
            path.read_text("utf-8"), "graphile_worker", conn, with_parameters=False
        )
        names[path.name if path.name not in names else str(path)] = f"c{n}"
        cur.execute(f"PREPARE c{n} {CLAIM_TYPES} AS {body}")
    results: dict[str, float] = {}
    for label, statement in names.items():
        if args.workload == "drain":
            results[label] = drain(cur, statement, args)
        else:
            results[label] = idle(cur, statement, args)
    conn.close()
    return results


def task_ids(cur: psycopg2.extensions.cursor) -> list[int]:
    cur.execute("select coalesce(array_agg(id), '{}') from graphile_worker._private_tasks")
    return list(cur.fetchone()[0])


def claim(
    cur: psycopg2.extensions.cursor, statement: str, done: list[int], tasks: list[int], size: int
) -> list[int]:
    cur.execute(
        f"EXECUTE {statement} (%s, %s, %s, %s, %s, %s, %s, %s)",
        (done, [], [], [], POOL, tasks, None, size),
    )
    return [row[1] for row in cur.fetchall() if row[0] == "claimed"]


def drain(cur: psycopg2.extensions.cursor, statement: str, args: argparse.Namespace) -> float:
    cur.execute(
        "select graphile_worker.add_jobs(array("
        " select row('t' || (n %% %s), '{}'::json, null, null, null, null, null, null)"
        "::graphile_worker.job_spec from generate_series(1, %s) as n))",
        (args.tasks, args.jobs),
    )
    cur.execute("VACUUM ANALYZE graphile_worker._private_jobs")
    tasks = task_ids(cur)
    done: list[int] = []
    statements = 0
    started = time.perf_counter()
    while True:
        done = claim(cur, statement, done, tasks, args.size)
        statements += 1
        if not done:
            break
    return (time.perf_counter() - started) * 1000 / statements


def idle(cur: psycopg2.extensions.cursor, statement: str, args: argparse.Namespace) -> float:
    cur.execute("select graphile_worker.add_job('t0', '{}')")
    tasks = task_ids(cur)
    done = claim(cur, statement, [], tasks, args.size)
    times = []
    for _ in range(args.jobs):
        cur.execute("select graphile_worker.add_job('t0', '{}')")
        started = time.perf_counter()
        done = claim(cur, statement, done, tasks, args.size)
        times.append(time.perf_counter() - started)
    claim(cur, statement, done, tasks, 0)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sql", type=Path, action="append", help="claim statement file(s)")
    parser.add_argument("--workload", choices=("drain", "idle"), default="drain")
    parser.add_argument("--jobs", type=int, default=30_000, help="jobs (drain) or claims (idle)")
    parser.add_argument("--size", type=int, default=64, help="jobs asked for per claim")
    parser.add_argument("--tasks", type=int, default=1, help="task identifiers (drain)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dsn", default="host=127.0.0.1 port=5432 user=postgres dbname=postgres")
    args = parser.parse_args()
    files = args.sql or [DEFAULT_SQL]
    per_file: dict[str, list[float]] = {}
    server = Server(args.dsn)
    for _ in range(args.rounds):
        with server.database("kongtaskd") as dsn:  # fresh, migrated, dropped afterwards
            for label, ms in run_round(dsn, files, args).items():
                per_file.setdefault(label, []).append(ms)
    print(f"{args.workload}: jobs={args.jobs} size={args.size} tasks={args.tasks}")
    for label, values in per_file.items():
        runs = " ".join(f"{v:.3f}" for v in values)
        print(f"  {label}: median {statistics.median(values):.3f} ms per statement ({runs})")


if __name__ == "__main__":
    main()
