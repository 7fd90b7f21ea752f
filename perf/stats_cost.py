"""What the statistics and the completed-job history cost (issue 14), in one run.

    python perf/stats_cost.py                       # before = main, 20,000 jobs, 4 children
    python perf/stats_cost.py --before REF --jobs 50000 --children 2,4 --runs 5

Three variants of the throughput scenario (pre-queued no-op jobs, ``--once``, exec to exit,
as ``perf/run.py throughput``), interleaved run by run so that the machine's drift (two
cores shared with other work) spreads over all of them alike:

* ``before``: the code of git ref ``--before`` (default ``main``), exported with
  ``git archive`` into a temporary directory, migrating its own schema;
* ``stats``: this checkout, defaults (statistics on, as always; ``keep_completed: null``);
* ``stats+history``: this checkout with ``keep_completed: 24h``.

Reported per variant and child count: jobs/s (median, min-max) and the daemon's CPU
milliseconds per 1,000 jobs (wait4 of the process tree), plus for the history variant the
records written (must equal the jobs). Results go to stdout as Markdown and to
``--output`` as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

import benchlib
from benchlib import (
    KONGTASKD_TASKS,
    PERF,
    REPO,
    Server,
    jobs_left,
    kongtaskd_env,
    log,
    queue,
    run_to_exit,
    summary,
    vacuum,
)

DEFAULT_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"


@dataclass
class Variant:
    label: str
    #: The kongtaskd package's checkout (PYTHONPATH).
    root: Path
    extra: dict[str, Any]


def export(ref: str, into: Path) -> Path:
    """``git archive REF`` of this repository, unpacked into ``into``."""
    archive = into / "before.tar"
    with archive.open("wb") as out:
        subprocess.run(["git", "-C", str(REPO), "archive", ref], stdout=out, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into / "before", filter="data")
    return into / "before"


def env_for(root: Path) -> dict[str, str]:
    env = kongtaskd_env()
    env["PYTHONPATH"] = os.pathsep.join([str(root), str(PERF)])
    return env


def migrate(dsn: str, root: Path) -> None:
    """Install the schema with ``root``'s own migrator (the before code knows fewer)."""
    code = "import sys, psycopg2; from kongtaskd.schema import migrate; " + (
        "c = psycopg2.connect(sys.argv[1]); migrate(c); c.close()"
    )
    subprocess.run([sys.executable, "-c", code, dsn], env=env_for(root), check=True)


def once(server: Server, variant: Variant, jobs: int, children: int, work: Path) -> dict[str, Any]:
    dsn = server.create_database()
    try:
        migrate(dsn, variant.root)
        queue(dsn, "noop", jobs)
        vacuum(dsn)
        config = work / f"kongtask-{uuid.uuid4().hex[:8]}.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "connection": dsn,
                    "concurrency": children,
                    "python_path": [str(PERF)],
                    "tasks": dict(KONGTASKD_TASKS),
                    "log": {"level": "warning"},
                    **variant.extra,
                }
            )
        )
        argv = [sys.executable, "-m", "kongtaskd", "-c", str(config), "--once"]
        result = run_to_exit(argv, env=env_for(variant.root), cwd=work, timeout=900, cpus=None)
        left = jobs_left(dsn)
        if left:
            raise benchlib.BenchError(f"{variant.label}: {left} of {jobs} jobs left")
        records = None
        if "keep_completed" in variant.extra:
            rows = benchlib.connect(dsn).cursor()
            rows.execute("select count(*) from graphile_worker._kongtaskd_completed_jobs")
            ((records,),) = rows.fetchall()
            rows.connection.close()
        return {"seconds": result.seconds, "cpu_seconds": result.cpu_seconds, "records": records}
    finally:
        server.drop_database(dsn)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="main", help="git ref of the code before")
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--children", default="4", help="comma-separated child counts")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--dsn", default=os.environ.get("KONGTASK_PERF_DSN", DEFAULT_DSN))
    parser.add_argument("--output", type=Path, default=None, help="JSON results file")
    args = parser.parse_args()
    server = Server(args.dsn)
    with tempfile.TemporaryDirectory(prefix="kt-stats-cost-") as tmp:
        work = Path(tmp)
        benchlib.PYCACHE = work / "pycache"
        before = export(args.before, work)
        variants = [
            Variant(f"before ({args.before})", before, {}),
            Variant("stats", REPO, {}),
            Variant("stats+history", REPO, {"keep_completed": "24h"}),
        ]
        results: dict[tuple[str, int], list[dict[str, Any]]] = {}
        for children in [int(c) for c in args.children.split(",")]:
            for variant in variants:  # warm-up: bytecode caches, first-connection costs
                once(server, variant, 1000, children, work)
            for run in range(args.runs):
                for variant in variants:
                    log(f"{variant.label}, {children} children: run {run + 1}/{args.runs}")
                    results.setdefault((variant.label, children), []).append(
                        once(server, variant, args.jobs, children, work)
                    )
    rows = []
    for (label, children), runs in results.items():
        rows.append(
            {
                "variant": label,
                "children": children,
                "jobs": args.jobs,
                "jobs_per_s": summary([args.jobs / r["seconds"] for r in runs], 0),
                "cpu_ms_per_1000_jobs": summary(
                    [r["cpu_seconds"] * 1e6 / args.jobs for r in runs], 1
                ),
                "records": [r["records"] for r in runs],
            }
        )
    print("| variant | children | jobs/s (median, min-max) | CPU ms / 1,000 jobs |")
    print("|---|---|---|---|")
    for row in rows:
        speed, cpu = row["jobs_per_s"], row["cpu_ms_per_1000_jobs"]
        print(
            f"| {row['variant']} | {row['children']} | {speed['median']:.0f} "
            f"({speed['min']:.0f}-{speed['max']:.0f}) | {cpu['median']} "
            f"({cpu['min']}-{cpu['max']}) |"
        )
    if args.output is not None:
        args.output.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
