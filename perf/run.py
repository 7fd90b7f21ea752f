"""kongtaskd's benchmark suite (issue 7): one command, a Markdown + JSON report.

    python perf/run.py                       # the full suite -> perf/results/report.{md,json}
    python perf/run.py --quick               # every scenario, smaller counts: a few minutes
    python perf/run.py --smoke               # a few s per scenario, tiny counts (CI)
    python perf/run.py --scenarios throughput,latency --cores 8 --output /tmp/r

It installs what it needs first: the project's Python dependencies (``pip install -e .``
when they are missing) and the real graphile-worker 0.18.0 (``npm ci --prefix
tests/interop``, pinned by its lock file) when it is not there; it says exactly what is
missing when it cannot. Scenarios: throughput, latency, load, queues, daemons, backlog, cpu,
memory, startstop (see ``perf/README.md``). Exit status 1 when a scenario failed (its error
is in the report).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PERF = REPO / "perf"
INTEROP = REPO / "tests" / "interop"
GRAPHILE_CLI = INTEROP / "node_modules" / "graphile-worker" / "dist" / "cli.js"
DEFAULT_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
SCENARIO_NAMES = (
    "throughput",
    "latency",
    "load",
    "queues",
    "daemons",
    "backlog",
    "cpu",
    "memory",
    "startstop",
)
#: Modules the daemon and this driver import (the project's install_requires).
REQUIRED_MODULES = ("psycopg2", "yaml", "setproctitle", "prometheus_client")


class Missing(Exception):
    """Something the suite needs is not there and could not be installed."""


# ------------------------------------------------------------------------------------------
# Installing what is needed
# ------------------------------------------------------------------------------------------
def ensure_project(install: bool) -> None:
    """This checkout's kongtaskd must import, with its dependencies installed."""
    missing = [m for m in REQUIRED_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        if not install:
            raise Missing(
                f"Python modules {', '.join(missing)} are missing: run "
                f"`{sys.executable} -m pip install -e {REPO}`"
            )
        say(f"installing the project and its dependencies (missing: {', '.join(missing)})")
        done = subprocess.run(
            [sys.executable, "-m", "pip", "install", "-e", str(REPO)], check=False
        )
        if done.returncode != 0:
            raise Missing(
                f"`{sys.executable} -m pip install -e {REPO}` failed (exit {done.returncode}); "
                "use a virtualenv where pip may install"
            )
        importlib.invalidate_caches()
    # The daemon runs from this checkout (PYTHONPATH, see benchlib.kongtaskd_env), and so
    # does this driver, whatever other kongtaskd is installed.
    sys.path[:0] = [str(REPO), str(PERF)]


def ensure_graphile(install: bool) -> None:
    """node 20+ on PATH and graphile-worker 0.18.0 in tests/interop/node_modules."""
    if shutil.which("node") is None:
        raise Missing(
            "`node` is not on PATH: install Node.js 20 or newer for graphile-worker "
            "(or pass --no-graphile to measure kongtaskd alone)"
        )
    version = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    major = int(version.lstrip("v").split(".")[0] or 0)
    if major < 20:
        raise Missing(f"node {version} is too old for graphile-worker 0.18.0: Node 20+ is needed")
    if GRAPHILE_CLI.is_file():
        return
    command = ["npm", "ci", "--prefix", str(INTEROP), "--no-audit", "--no-fund"]
    if not install:
        raise Missing(f"{GRAPHILE_CLI} is missing: run `{' '.join(command)}`")
    if shutil.which("npm") is None:
        raise Missing(f"{GRAPHILE_CLI} is missing and `npm` is not on PATH to install it")
    say("installing graphile-worker 0.18.0 from npm (" + " ".join(command) + ")")
    done = subprocess.run(command, check=False)
    if done.returncode != 0 or not GRAPHILE_CLI.is_file():
        raise Missing(f"`{' '.join(command)}` failed (exit {done.returncode})")


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------
# The machine
# ------------------------------------------------------------------------------------------
def usable_cpus() -> set[int]:
    return set(os.sched_getaffinity(0))


def machine(cores: int) -> dict[str, Any]:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = 0.0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = int(line.split()[1]) / 2**20
    except OSError:
        pass
    return {
        "cores": cores,
        "cpus_online": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(memory, 1),
        "kernel": f"{platform.system()} {platform.release()}",
        "load_before": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def software(graphile: bool) -> dict[str, str]:
    import kongtaskd

    commit = "unknown"
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        # Read-only: does the checkout differ from HEAD (someone's work in progress)?
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "diff", "--quiet", "HEAD", "--", "kongtaskd"], check=False
        ).returncode
        commit = head + (" + uncommitted changes in kongtaskd/" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        pass
    info = {
        "kongtaskd": str(getattr(kongtaskd, "__version__", "?")),
        "commit": commit,
        "python": platform.python_version(),
        "node": "not used",
        "graphile_worker": "not used",
    }
    if graphile:
        info["node"] = subprocess.run(
            ["node", "--version"], capture_output=True, text=True
        ).stdout.strip()
        package = GRAPHILE_CLI.parents[1] / "package.json"
        info["graphile_worker"] = json.loads(package.read_text())["version"]
    return info


METHOD = [
    "Every run uses a fresh database on the server (created and dropped by the suite); the "
    "schema is installed by the system under test's own migrator (`kongtaskd.schema.migrate` "
    "/ `graphile-worker --schema-only`).",
    "Jobs are bulk-queued with one `graphile_worker.add_jobs()` call per ≤100,000 jobs "
    "(`perf/sql/queue_jobs.sql`, as graphile-worker's perfTest; named queues round-robin "
    "through its `queue_name`), then `VACUUM ANALYZE` runs before the clock starts.",
    "The runs of the configurations compared in a scenario are interleaved (A, B, C, A, B, "
    "C, ...) so that a slow minute on a shared machine hits all of them. Each figure is the "
    "median of its runs with min-max; headline figures (the ones a target judges) get "
    "`runs` runs, the others `extra_runs` (see the mode line above).",
    "Both systems run as users run them unless a row says otherwise: kongtaskd with no "
    "`log:` section (its default, `info`), graphile-worker with its default logging (a line "
    "per completed job). Rows marked `log warning` / `NO_LOG_SUCCESS` are the tuned "
    "configurations: kongtaskd `log: {level: warning}`, graphile-worker `NO_LOG_SUCCESS=1`.",
    "kongtaskd runs from this checkout: `python -m kongtaskd -c CONFIG [--once]`, handlers "
    "in `perf/perf_handlers.py`. graphile-worker 0.18.0 (npm, `tests/interop`) runs "
    "`node dist/cli.js -C perf/graphile/<variant>.config.mjs [--once]` with the tasks in "
    "`perf/graphile/tasks/`; `default` = `concurrentJobs: 10`; `best` = that plus "
    "`localQueue: {size: 50}`, `completeJobBatchDelay: 0`, `failJobBatchDelay: 0`.",
    "kongtaskd's default of 4 children stands for the daemon wherever one configuration "
    "does (latency, latency under load, queues, backlog, memory, start/stop).",
    "A `--once` run still going at its scenario's cap is killed there; its figure is jobs "
    "done / cap (the report counts such capped runs).",
    "kongtaskd runs with its bytecode cached, as an installed package has it "
    "(`PYTHONPYCACHEPREFIX` in the run's temporary directory, filled by one unmeasured "
    "start): this machine sets `PYTHONDONTWRITEBYTECODE=1`, which would make every start "
    "compile the package from source (~40 ms).",
    "The driver, PostgreSQL and the daemons share the machine; `--cores N` below the CPUs "
    "available pins the daemons (not PostgreSQL) to N CPUs. PostgreSQL's CPU (many-daemons "
    "scenario) is read from /proc: the postmaster and all its processes, live and reaped, "
    "minus the driver's own session; on a shared server that includes other databases' "
    "work, so the daemons' own sessions are reported beside it.",
]


# ------------------------------------------------------------------------------------------
# Main
# ------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python perf/run.py",
        description="kongtaskd vs graphile-worker 0.18.0 benchmarks; writes report.{md,json}.",
    )
    modes = parser.add_mutually_exclusive_group()
    modes.add_argument(
        "--smoke", action="store_true", help="tiny counts and one run per figure (CI, ~30 s)"
    )
    modes.add_argument(
        "--quick",
        action="store_true",
        help="every scenario and configuration, smaller counts and fewer runs (a few minutes)",
    )
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIO_NAMES),
        help=f"comma-separated subset of: {', '.join(SCENARIO_NAMES)} (default: all)",
    )
    parser.add_argument(
        "--cores",
        type=int,
        default=None,
        help="cores to use and report (default: all this process may use); the CPU "
        "scenario also runs that many children",
    )
    parser.add_argument(
        "--runs",
        type=int,
        default=None,
        help="runs per figure, headline or not (default: 5 for headline figures, 3 or "
        "fewer for the others; --quick 2 and 1)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="directory for report.md and report.json "
        "(default: perf/results, or a temporary directory with --smoke)",
    )
    parser.add_argument(
        "--dsn",
        default=os.environ.get("KONGTASK_PERF_DSN", DEFAULT_DSN),
        help="libpq DSN of a role that may create databases (default: $KONGTASK_PERF_DSN, "
        f"else {DEFAULT_DSN!r})",
    )
    parser.add_argument(
        "--no-graphile", action="store_true", help="measure kongtaskd alone (no Node.js needed)"
    )
    parser.add_argument(
        "--no-install", action="store_true", help="only say what is missing, install nothing"
    )
    args = parser.parse_args(argv)
    chosen = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in SCENARIO_NAMES]
    if unknown or not chosen:
        parser.error(
            f"--scenarios: unknown scenario {', '.join(unknown) or '(none given)'}; "
            f"choose from {', '.join(SCENARIO_NAMES)}"
        )
    args.scenarios = chosen
    available = len(usable_cpus())
    if args.cores is None:
        args.cores = available
    elif not 1 <= args.cores <= available:
        parser.error(f"--cores: {args.cores} is not between 1 and the {available} usable cores")
    if args.runs is not None and args.runs < 1:
        parser.error(f"--runs: expected a positive number, got {args.runs}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        ensure_project(install=not args.no_install)
        if not args.no_graphile:
            ensure_graphile(install=not args.no_install)
    except Missing as exc:
        print(f"perf/run.py: {exc}", file=sys.stderr)
        return 2

    import benchlib
    import psycopg2
    from benchlib import Server
    from scenarios import SCENARIOS, Plan

    server = Server(args.dsn)
    try:
        psycopg2.connect(args.dsn).close()
    except psycopg2.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(
            f"perf/run.py: no PostgreSQL answers at {args.dsn!r} ({first}); "
            "pass --dsn or set KONGTASK_PERF_DSN",
            file=sys.stderr,
        )
        return 2

    output = args.output
    if output is None:
        output = Path(tempfile.mkdtemp(prefix="kt-perf-smoke-")) if args.smoke else PERF / "results"
    cpus = None
    if args.cores < len(usable_cpus()):
        cpus = set(sorted(usable_cpus())[: args.cores])

    started = time.monotonic()
    report: dict[str, Any] = {
        "mode": "smoke" if args.smoke else ("quick" if args.quick else "full"),
        "command": " ".join(["python perf/run.py", *(argv if argv is not None else sys.argv[1:])]),
        "generated": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(args.cores),
        "postgresql": server.settings(),
        "software": software(not args.no_graphile),
        "method": METHOD,
        "scenarios": {},
        "targets": [],
    }
    failed = False
    with tempfile.TemporaryDirectory(prefix="kt-perf-") as tmp:
        benchlib.PYCACHE = Path(tmp) / "pycache"
        benchlib.warm_up(server, Path(tmp))
        common = {
            "server": server,
            "workdir": Path(tmp),
            "cores": args.cores,
            "cpus": cpus,
            "graphile": not args.no_graphile,
        }
        if args.smoke:
            plan = Plan.smoke(**common)
        else:
            plan = Plan.quick(**common) if args.quick else Plan(**common)
            plan.cpu_children = sorted(set(plan.cpu_children) | {args.cores})
        if args.runs is not None:
            plan.runs = plan.extra_runs = plan.cpu_runs = plan.memory_runs = args.runs
        report["plan"] = {
            "runs": plan.runs,
            "extra_runs": plan.extra_runs,
            "cpu_runs": plan.cpu_runs,
            "memory_runs": plan.memory_runs,
        }
        try:
            for name in args.scenarios:
                say(f"scenario {name}")
                began = time.monotonic()
                load_before = os.getloadavg()[0]
                try:
                    result = SCENARIOS[name](plan)
                except Exception as exc:  # record it, keep going: the other figures still count
                    failed = True
                    traceback.print_exc()
                    result = {"error": f"{type(exc).__name__}: {exc}".strip()}
                result["duration_s"] = round(time.monotonic() - began, 1)
                # Other work on the machine shows here (1-minute load average, 2 cores =
                # 2.0 when both are busy): a figure taken under load is a lower bound.
                result["load_1min"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
                report["scenarios"][name] = result
                say(f"scenario {name} took {result['duration_s']} s")
                finish(report, started, args.cores, output)  # partial results
        finally:
            for name in list(server.created):  # an interrupted run leaves no database behind
                params = psycopg2.extensions.parse_dsn(args.dsn)
                params["dbname"] = name
                server.drop_database(psycopg2.extensions.make_dsn(**params))
    as_md, as_json = finish(report, started, args.cores, output)
    say(f"report written: {as_md} and {as_json}")
    return 1 if failed else 0


def finish(report: dict[str, Any], started: float, cores: int, output: Path) -> tuple[Path, Path]:
    """Judge the targets and write both files (after every scenario: partial results)."""
    import report as reporting

    report["duration_s"] = round(time.monotonic() - started, 1)
    report["machine"]["load_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    report["targets"] = reporting.targets(report["scenarios"], cores)
    return reporting.write(report, output)


if __name__ == "__main__":
    sys.exit(main())
