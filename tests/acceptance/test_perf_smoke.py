"""The benchmark suite's smoke run: every scenario, tiny counts, so the scripts cannot rot.

The full suite (``python perf/run.py``) takes tens of minutes and is not part of CI; this
runs the same command with ``--smoke`` (seconds per scenario) against the test server and
checks that the report has a positive figure for every scenario and both systems.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.graphile import package_dir, require_graphile

pytestmark = pytest.mark.interop

REPO = Path(__file__).resolve().parents[2]

#: scenario -> (what names a row, the figures in each row that must be positive)
#: (PostgreSQL's CPU per job in "daemons" is not among them: a few hundred jobs may use
#: less than a clock tick of it.)
FIGURES: dict[str, tuple[str, tuple[str, ...]]] = {
    "throughput": ("system", ("jobs_per_s", "seconds", "daemon_cpu_ms_per_1000_jobs")),
    "latency": ("system", ("max",)),
    "load": ("system", ("p99",)),
    "queues": ("system", ("jobs_per_s", "seconds")),
    "daemons": ("daemons", ("jobs_per_s", "seconds", "daemon_cpu_ms_per_job")),
    "backlog": ("system", ("jobs_per_s", "ms_per_job")),
    "cpu": ("children", ("jobs_per_s",)),
    "memory": ("system", ("rss_idle", "pss_idle")),
    "startstop": ("system", ("exec_to_ready_s", "sigterm_to_exit_s", "once_empty_queue_s")),
}

#: Latency figures that may be a little below zero: the clock is read when COMMIT returns to
#: the driver, and on a loaded machine the driver can be descheduled right after the server
#: committed while the daemon, woken by the NOTIFY, already starts the job (seen: a p50 of
#: -0.23 ms while the suite ran beside it). Such an error is the driver's scheduling delay;
#: a figure below -LATENCY_SLACK_MS would be a broken measurement.
LATENCIES: dict[str, tuple[str, ...]] = {"latency": ("p50", "p90", "p99"), "load": ("p50",)}
LATENCY_SLACK_MS = 5.0

#: The smoke plan's counts stay tiny (seconds per scenario), checked on the plan itself
#: rather than by timing the run on a shared machine.
MAX_SMOKE_JOBS = 1_000


def test_smoke_run_reports_every_scenario(admin_dsn: str, tmp_path: Path) -> None:
    with_graphile = True
    if (
        os.environ.get("KONGTASK_SKIP_INTEROP") == "1"
        and not (package_dir() / "dist" / "cli.js").is_file()
    ):
        with_graphile = False  # still smoke-test kongtaskd's side of every scenario
    else:
        require_graphile()
    argv = [
        sys.executable,
        str(REPO / "perf" / "run.py"),
        "--smoke",
        "--no-install",
        "--output",
        str(tmp_path),
        "--dsn",
        admin_dsn,
        *([] if with_graphile else ["--no-graphile"]),
    ]
    # A guard against a hang, not a speed check: on a shared 2-core machine under load the
    # smoke run (~20 s when quiet) has taken over 200 s.
    done = subprocess.run(argv, capture_output=True, text=True, timeout=480, cwd=REPO)
    assert done.returncode == 0, f"perf/run.py --smoke exited {done.returncode}:\n{done.stderr}"

    report: dict[str, Any] = json.loads((tmp_path / "report.json").read_text())
    markdown = (tmp_path / "report.md").read_text()
    assert report["mode"] == "smoke"
    assert report["machine"]["cores"] > 0
    assert report["postgresql"]["server_version"]
    for scenario, (label, keys) in FIGURES.items():
        result = report["scenarios"][scenario]
        assert "error" not in result, f"{scenario}: {result['error']}"
        assert result["duration_s"] > 0, scenario
        assert result["rows"], f"{scenario}: no rows"
        for row in result["rows"]:
            for key in keys:
                value = row[key]["median"]
                assert value > 0, f"{scenario} {row[label]}: {key} = {value}"
            for key in LATENCIES.get(scenario, ()):
                value = row[key]["median"]
                assert value > -LATENCY_SLACK_MS, f"{scenario} {row[label]}: {key} = {value}"
        systems = {str(row.get("system", "kongtaskd")) for row in result["rows"]}
        assert any(s.startswith("kongtaskd") for s in systems), (scenario, systems)
        if with_graphile and scenario not in ("cpu", "daemons"):
            assert any(s.startswith("graphile-worker") for s in systems), (scenario, systems)
    for row in report["scenarios"]["backlog"]["rows"]:
        assert row["latency_ms"]["p50"]["median"] > -LATENCY_SLACK_MS
    for row in report["scenarios"]["daemons"]["rows"]:
        assert row["exactly_once"], row
    kinds = {row.get("with_queues") for row in report["scenarios"]["queues"]["rows"]}
    assert kinds == {True, False}, "queue runs and their no-queue baselines"
    assert report["targets"], "no target was judged"
    for heading in ("## Targets", "## 1. Throughput", "## 4. Many daemons", "## 8. Start and stop"):
        assert heading in markdown


@pytest.mark.parametrize("workload", ["drain", "idle"])
def test_claim_bench_runs(admin_dsn: str, workload: str) -> None:
    """perf/claim_bench.py (the claim statement alone, analysis.md section 1) still runs."""
    argv = [
        sys.executable,
        str(REPO / "perf" / "claim_bench.py"),
        f"--workload={workload}",
        "--jobs=200",
        "--size=8",
        "--tasks=2",
        "--rounds=1",
        f"--dsn={admin_dsn}",
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr
    (line,) = [line for line in done.stdout.splitlines() if "settle.sql" in line]
    assert float(line.split("median ")[1].split(" ms")[0]) > 0, done.stdout


def test_the_smoke_plan_stays_small() -> None:
    sys.path.insert(0, str(REPO / "perf"))
    try:
        from scenarios import Plan
    finally:
        sys.path.pop(0)
    plan = Plan.smoke(server=None, workdir=REPO, cores=2, cpus=None, graphile=False)
    counts = [
        *plan.throughput_jobs,
        plan.latency_jobs,
        *plan.backlog_sizes,
        plan.backlog_measured_jobs,
        plan.cpu_jobs,
        *plan.memory_checkpoints,
        plan.load_jobs,
        plan.distinct_queues,
        plan.idle_ready_jobs,
        plan.idle_queue_rows,
        plan.hot_queues * plan.hot_jobs_per_queue,
        plan.daemon_jobs,
    ]
    assert plan.runs == 1 and max(counts) <= MAX_SMOKE_JOBS, counts


def test_the_quick_plan_keeps_every_configuration() -> None:
    """``--quick`` is the full suite with smaller counts and fewer runs: the same
    scenarios, configurations, queue layouts and daemon counts (so a quick run proves
    the full one will work), each configuration run at least once."""
    sys.path.insert(0, str(REPO / "perf"))
    try:
        from scenarios import Plan
    finally:
        sys.path.pop(0)
    common = {"server": None, "workdir": REPO, "cores": 2, "cpus": None}
    full, quick = Plan(**common), Plan.quick(**common)
    for name in (
        "throughput_children",
        "headline_children",
        "tuned_children",
        "graphile_throughput",
        "graphile_variants",
        "queue_layouts",
        "daemon_counts",
        "daemon_children",
        "backlog_layouts",
        "cpu_children",
        "children",
    ):
        assert getattr(quick, name) == getattr(full, name), name
    assert len(quick.throughput_jobs) == len(full.throughput_jobs)
    assert len(quick.backlog_sizes) == len(full.backlog_sizes)
    assert 1 <= quick.extra_runs <= quick.runs < full.runs
    assert quick.daemon_jobs < full.daemon_jobs and quick.distinct_queues < full.distinct_queues
