"""Throughput: N pre-queued no-op jobs, ``kongtaskd --once``, time until the queue is empty.

    python perf/throughput.py --jobs 10000 --children 4 [--runs 3] [--dsn ADMIN_DSN]

Each run gets a fresh database (created and dropped here), the jobs are queued with one
``add_jobs`` call per 10,000, the table is VACUUM ANALYZEd, then the clock runs from the
daemon's exec to its exit. Start-up (migrate, fork, connect) is measured separately with
an empty queue and reported, not subtracted. Writes ``perf/results/throughput.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg2
import yaml
from psycopg2 import sql

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "perf" / "results"
FIXTURES = REPO / "tests" / "fixtures"


def create_db(admin: str) -> str:
    name = f"kt_perf_{uuid.uuid4().hex[:10]}"
    conn = psycopg2.connect(admin)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    conn.close()
    params = psycopg2.extensions.parse_dsn(admin)
    params["dbname"] = name
    return psycopg2.extensions.make_dsn(**params)


def drop_db(admin: str, dsn: str) -> None:
    name = psycopg2.extensions.parse_dsn(dsn)["dbname"]
    conn = psycopg2.connect(admin)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))
    conn.close()


def queue_jobs(dsn: str, count: int) -> None:
    from kongtaskd.schema import migrate

    conn = psycopg2.connect(dsn)
    migrate(conn)
    conn.autocommit = True
    with conn.cursor() as cur:
        for start in range(0, count, 10_000):
            n = min(10_000, count - start)
            cur.execute(
                "select count(*) from graphile_worker.add_jobs(array(select "
                "('noop', json_build_object('n', i), null, null, null, null, null, null)"
                "::graphile_worker.job_spec from generate_series(1, %s) i))",
                (n,),
            )
        cur.execute("vacuum analyze graphile_worker._private_jobs")
    conn.close()


def run_daemon(dsn: str, children: int, workdir: Path) -> float:
    config = workdir / "kongtask.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "connection": dsn,
                "concurrency": children,
                "python_path": [str(FIXTURES)],
                "tasks": {"noop": "handlers:noop"},
                "log": {"level": "warning"},
                "migrate": False,
            }
        )
    )
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "NOTIFY_SOCKET")}
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "kongtaskd", "-c", str(config), "--once"],
        env=env,
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"kongtaskd failed ({proc.returncode}):\n{proc.stderr}")
    return elapsed


def remaining(dsn: str) -> int:
    conn = psycopg2.connect(dsn)
    with conn.cursor() as cur:
        cur.execute("select count(*) from graphile_worker._private_jobs")
        (n,) = cur.fetchone()
    conn.close()
    return int(n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--children", type=int, nargs="+", default=[4])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dsn", default="host=127.0.0.1 port=5432 user=postgres dbname=postgres")
    parser.add_argument("--output", default=str(RESULTS / "throughput"))
    args = parser.parse_args()

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for children in args.children:
            empty_db = create_db(args.dsn)
            try:
                queue_jobs(empty_db, 0)
                startup = run_daemon(empty_db, children, Path(tmp))
            finally:
                drop_db(args.dsn, empty_db)
            rates = []
            for _ in range(args.runs):
                dsn = create_db(args.dsn)
                try:
                    queue_jobs(dsn, args.jobs)
                    elapsed = run_daemon(dsn, children, Path(tmp))
                    left = remaining(dsn)
                    if left:
                        raise SystemExit(f"{left} jobs left after --once")
                finally:
                    drop_db(args.dsn, dsn)
                rates.append(args.jobs / elapsed)
            row = {
                "children": children,
                "jobs": args.jobs,
                "jobs_per_s_median": round(statistics.median(rates)),
                "jobs_per_s_min": round(min(rates)),
                "jobs_per_s_max": round(max(rates)),
                "startup_s": round(startup, 3),
            }
            print(json.dumps(row), flush=True)
            results.append(row)

    conn = psycopg2.connect(args.dsn)
    with conn.cursor() as cur:
        cur.execute("show server_version")
        (pg_version,) = cur.fetchone()
        cur.execute("show synchronous_commit")
        (sync_commit,) = cur.fetchone()
    conn.close()
    machine = {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "postgresql": pg_version,
        "synchronous_commit": sync_commit,
    }
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(
        json.dumps({"machine": machine, "results": results}, indent=2)
    )
    lines = [
        "# kongtaskd throughput (no-op jobs, `--once`, exec to exit)",
        "",
        f"Machine: {machine['cores']} cores, Python {machine['python']}, PostgreSQL "
        f"{machine['postgresql']} (synchronous_commit={machine['synchronous_commit']}), same host.",
        "",
        "| children | jobs | jobs/s median | min-max | start-up+exit, empty queue (s) |",
        "|---:|---:|---:|---|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['children']} | {r['jobs']} | {r['jobs_per_s_median']} | "
            f"{r['jobs_per_s_min']}-{r['jobs_per_s_max']} | {r['startup_s']} |"
        )
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
