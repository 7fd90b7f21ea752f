"""The six scenarios of issue 7. Each takes a :class:`Plan` and returns JSON-ready figures.

Every run starts from a fresh database (created and dropped here) whose schema was
installed by the system under test's own migrator; bulk-queued tables are VACUUM
ANALYZEd before the clock starts. Each figure is the median of ``plan.runs`` runs with
min and max (:func:`benchlib.summary`).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchlib import (
    BenchError,
    Graphile,
    Kongtaskd,
    Running,
    Server,
    System,
    jobs_left,
    latency_figures,
    log,
    measure_latency,
    memory_mib,
    queue,
    summary,
    vacuum,
    wait_drained,
)


@dataclass
class Plan:
    """Sizes and repetitions of one suite run (``full()`` or ``smoke()``)."""

    server: Server
    workdir: Path
    cores: int
    cpus: set[int] | None
    graphile: bool = True
    runs: int = 3
    throughput_jobs: list[int] = field(default_factory=lambda: [20_000, 100_000])
    throughput_children: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    graphile_variants: list[str] = field(default_factory=lambda: ["default", "best"])
    #: kongtaskd's children where one configuration stands for the daemon (latency,
    #: backlog, memory, start/stop): the config default.
    children: int = 4
    latency_jobs: int = 200
    latency_interval: float = 0.020
    latency_warmup: int = 10
    backlog_sizes: list[int] = field(default_factory=lambda: [10_000, 100_000, 1_000_000])
    backlog_measured_jobs: int = 20_000
    backlog_layouts: list[str] = field(default_factory=lambda: ["ahead", "behind"])
    cpu_jobs: int = 400
    cpu_ms: int = 50
    #: run.py adds the core count (``--cores``) for the full suite.
    cpu_children: list[int] = field(default_factory=lambda: [1, 2, 4])
    memory_checkpoints: list[int] = field(default_factory=lambda: [10_000, 100_000])

    @classmethod
    def smoke(cls, **kwargs: Any) -> Plan:
        """Tiny counts, one run: seconds per scenario, so the scripts cannot rot."""
        return cls(
            runs=1,
            throughput_jobs=[300],
            throughput_children=[2],
            graphile_variants=["best"],
            latency_jobs=20,
            latency_warmup=2,
            backlog_sizes=[1_000],
            backlog_measured_jobs=300,
            backlog_layouts=["ahead"],
            cpu_jobs=16,
            cpu_ms=20,
            cpu_children=[1, 2],
            memory_checkpoints=[100, 1_000],
            **kwargs,
        )

    def kongtaskd(self, concurrency: int | None = None) -> Kongtaskd:
        return Kongtaskd(self.workdir, concurrency or self.children, cpus=self.cpus)

    def graphiles(self, variants: list[str] | None = None) -> list[Graphile]:
        if not self.graphile:
            return []
        return [
            Graphile(self.workdir, variant, cpus=self.cpus)
            for variant in (variants or self.graphile_variants)
        ]


def repeat(plan: Plan, what: str, once: Callable[..., Any], *args: Any) -> list[Any]:
    """``once(*args)`` ``plan.runs`` times, one after the other; their results."""
    results = []
    for run in range(plan.runs):
        log(f"{what}: run {run + 1}/{plan.runs}")
        results.append(once(*args))
    return results


# ------------------------------------------------------------------------------------------
# 1. Throughput
# ------------------------------------------------------------------------------------------
def throughput(plan: Plan) -> dict[str, Any]:
    """N pre-queued no-op jobs, ``--once``, exec to exit (start-up included)."""
    systems: list[System] = [plan.kongtaskd(n) for n in plan.throughput_children]
    systems += plan.graphiles()
    rows = []
    for system in systems:
        # Start-up + exit with nothing to do, for perfTest's "jobs / (elapsed - startup)".
        empty = repeat(plan, f"throughput {system.label}: empty queue", _once, plan, system, 0)
        startup = summary([r["seconds"] for r in empty], 3)
        for jobs in plan.throughput_jobs:
            runs = repeat(
                plan, f"throughput {system.label}, {jobs} jobs", _once, plan, system, jobs
            )
            rows.append(
                {
                    "system": system.label,
                    "children": getattr(system, "concurrency", None),
                    "jobs": jobs,
                    "jobs_per_s": summary([jobs / r["seconds"] for r in runs], 0),
                    "seconds": summary([r["seconds"] for r in runs], 3),
                    "jobs_per_s_without_startup": summary(
                        [jobs / max(1e-3, r["seconds"] - startup["median"]) for r in runs], 0
                    ),
                    "daemon_cpu_ms_per_1000_jobs": summary(
                        [r["cpu_seconds"] * 1e6 / jobs for r in runs], 1
                    ),
                    "queueing_jobs_per_s": summary([jobs / r["queue_seconds"] for r in runs], 0),
                    "empty_queue_seconds": startup,
                }
            )
    return {"rows": rows}


def _once(plan: Plan, system: System, jobs: int) -> dict[str, float]:
    with plan.server.database(system.schema_by) as dsn:
        queued = queue(dsn, "noop", jobs) if jobs else 0.0
        vacuum(dsn)
        result = system.run_once(dsn)
        left = jobs_left(dsn)
        if left:
            raise BenchError(f"{system.label}: {left} of {jobs} jobs left after --once")
    return {"seconds": result.seconds, "cpu_seconds": result.cpu_seconds, "queue_seconds": queued}


# ------------------------------------------------------------------------------------------
# 2. Latency
# ------------------------------------------------------------------------------------------
def latency(plan: Plan) -> dict[str, Any]:
    """Idle daemon; jobs added one by one; add_job commit -> handler's first line."""
    systems: list[System] = [plan.kongtaskd(), *plan.graphiles()]
    rows = []
    for system in systems:
        runs = repeat(plan, f"latency {system.label}", _latency_run, plan, system)
        rows.append({"system": system.label, **_latency_summary(runs)})
    return {
        "jobs": plan.latency_jobs,
        "interval_ms": plan.latency_interval * 1000,
        "warmup_jobs": plan.latency_warmup,
        "rows": rows,
    }


def _latency_run(plan: Plan, system: System, dsn: str | None = None) -> dict[str, float]:
    if dsn is None:
        with plan.server.database(system.schema_by) as fresh:
            return _latency_run(plan, system, fresh)
    with system.start(dsn) as running:
        running.wait_ready()
        samples = measure_latency(
            dsn, plan.workdir, plan.latency_jobs, plan.latency_interval, plan.latency_warmup
        )
        running.stop()
    return latency_figures(samples)


def _latency_summary(runs: list[dict[str, float]]) -> dict[str, Any]:
    return {key: summary([r[key] for r in runs], 2) for key in ("p50", "p90", "p99", "max")}


# ------------------------------------------------------------------------------------------
# 3. Backlog growth
# ------------------------------------------------------------------------------------------
def backlog(plan: Plan) -> dict[str, Any]:
    """Throughput and latency with a big table of jobs this daemon will not run now.

    The backlog: half no-op jobs scheduled a day ahead, half ready jobs of a task no
    daemon here handles (``unhandled``; as another fleet's work in a shared queue), both
    queued first. Then ``backlog_measured_jobs`` ready no-op jobs are queued, the table is
    VACUUM ANALYZEd, and ``--once`` runs them (it stops when no ready job of its tasks is
    left; the backlog stays). On the same table a continuous daemon then takes the
    latency jobs.

    Layouts: ``ahead`` (the issue's case): the unhandled jobs have the same priority and
    an earlier run_at, so in claim order (priority, run_at) they come before the measured
    jobs and a claim that walks graphile-worker's jobs_main_index steps over them (since
    kongtaskd migration 2, kongtaskd's claim does not). ``behind``: the unhandled jobs
    have priority 1, so they come after; what is left is the cost of the table's size.
    """
    systems: list[System] = [plan.kongtaskd(), *plan.graphiles(["best"])]
    rows = []
    for layout in plan.backlog_layouts:
        for system in systems:
            for size in plan.backlog_sizes:
                runs = repeat(
                    plan,
                    f"backlog ({layout}) {system.label}, {size} waiting",
                    _backlog_run,
                    plan,
                    system,
                    size,
                    layout,
                )
                rows.append(_backlog_row(plan, system, size, layout, runs))
    return {"measured_jobs": plan.backlog_measured_jobs, "rows": rows}


def _backlog_row(
    plan: Plan, system: System, size: int, layout: str, runs: list[dict[str, Any]]
) -> dict[str, Any]:
    measured = plan.backlog_measured_jobs
    return {
        "system": system.label,
        "layout": layout,
        "backlog": size,
        "measured_jobs": measured,
        "jobs_per_s": summary([measured / r["seconds"] for r in runs], 0),
        "ms_per_job": summary([r["seconds"] * 1000 / measured for r in runs], 3),
        "latency_ms": _latency_summary([r["latency"] for r in runs]),
        "backlog_queue_seconds": summary([r["queue_seconds"] for r in runs], 1),
    }


def _backlog_run(plan: Plan, system: System, size: int, layout: str) -> dict[str, Any]:
    with plan.server.database(system.schema_by) as dsn:
        later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1)
        queued = queue(dsn, "noop", size // 2, run_at=later)
        priority = 1 if layout == "behind" else None
        queued += queue(dsn, "unhandled", size - size // 2, priority=priority)
        queue(dsn, "noop", plan.backlog_measured_jobs)
        vacuum(dsn)
        result = system.run_once(dsn)
        left = jobs_left(dsn, "noop")
        if left:
            raise BenchError(f"{system.label}: {left} measured jobs left after --once")
        vacuum(dsn)  # the measured jobs' dead rows, as autovacuum would soon do
        figures = _latency_run(plan, system, dsn)
    return {"seconds": result.seconds, "latency": figures, "queue_seconds": queued}


# ------------------------------------------------------------------------------------------
# 4. CPU-heavy handlers
# ------------------------------------------------------------------------------------------
def cpu(plan: Plan) -> dict[str, Any]:
    """Handlers burning ``cpu_ms`` of CPU each, at several children counts: scaling."""
    rows = []
    for n in plan.cpu_children:
        system = plan.kongtaskd(n)
        runs = repeat(plan, f"cpu {system.label}", _cpu_run, plan, system)
        rows.append({"children": n, "jobs_per_s": summary([plan.cpu_jobs / s for s in runs], 2)})
    single = next((r for r in rows if r["children"] == 1), None)
    for row in rows:
        row["scaling"] = (
            round(row["jobs_per_s"]["median"] / single["jobs_per_s"]["median"], 2)
            if single
            else None
        )
        row["ideal"] = min(row["children"], plan.cores)
    return {"jobs": plan.cpu_jobs, "cpu_ms_per_job": plan.cpu_ms, "cores": plan.cores, "rows": rows}


def _cpu_run(plan: Plan, system: System) -> float:
    with plan.server.database(system.schema_by) as dsn:
        queue(dsn, "burn", plan.cpu_jobs, payload={"ms": plan.cpu_ms})
        vacuum(dsn)
        result = system.run_once(dsn)
        if jobs_left(dsn):
            raise BenchError(f"{system.label}: burn jobs left after --once")
    return result.seconds


# ------------------------------------------------------------------------------------------
# 5. Memory
# ------------------------------------------------------------------------------------------
def memory(plan: Plan) -> dict[str, Any]:
    """RSS and PSS of every process: idle after READY, then after each checkpoint's jobs."""
    systems: list[System] = [plan.kongtaskd(), *plan.graphiles(["best"])]
    rows = []
    for system in systems:
        runs = repeat(plan, f"memory {system.label}", _memory_run, plan, system)
        stages = list(runs[0])
        for role in runs[0][stages[0]]:
            row: dict[str, Any] = {"system": system.label, "process": role}
            for stage in stages:
                for kind in ("rss", "pss"):
                    row[f"{kind}_{stage}"] = summary([r[stage][role][kind] for r in runs], 1)
            first, last = stages[-2], stages[-1]
            row["rss_growth"] = summary(
                [r[last][role]["rss"] - r[first][role]["rss"] for r in runs], 2
            )
            rows.append(row)
    return {"checkpoints": plan.memory_checkpoints, "rows": rows}


def _memory_run(plan: Plan, system: System) -> dict[str, dict[str, dict[str, float]]]:
    stages: dict[str, dict[str, dict[str, float]]] = {}
    with plan.server.database(system.schema_by) as dsn, system.start(dsn) as running:
        running.wait_ready()
        # Let the start-up finish settling (first heartbeat, listener) before "idle".
        time.sleep(1.0)
        stages["idle"] = _snapshot(running)
        done = 0
        for checkpoint in plan.memory_checkpoints:
            queue(dsn, "noop", checkpoint - done, chunk=10_000)
            wait_drained(dsn, "noop", f"{system.label} running {checkpoint} jobs")
            done = checkpoint
            stages[f"after_{checkpoint}"] = _snapshot(running)
        running.stop()
    return stages


def _snapshot(running: Running) -> dict[str, dict[str, float]]:
    return {role: memory_mib(pid) for role, pid in running.processes().items()}


# ------------------------------------------------------------------------------------------
# 6. Start and stop
# ------------------------------------------------------------------------------------------
def startstop(plan: Plan) -> dict[str, Any]:
    """Exec -> ready, SIGTERM -> exit (empty queue), and ``--once`` on an empty queue."""
    systems: list[System] = [plan.kongtaskd(), *plan.graphiles(["default"])]
    rows = []
    for system in systems:
        runs = repeat(plan, f"start/stop {system.label}", _startstop_run, plan, system)
        rows.append(
            {
                "system": system.label,
                **{key: summary([r[key] for r in runs], 3) for key in runs[0]},
            }
        )
    return {"rows": rows}


def _startstop_run(plan: Plan, system: System) -> dict[str, float]:
    with plan.server.database(system.schema_by) as dsn:
        with system.start(dsn) as running:
            ready = running.wait_ready()
            stop = running.stop()
        once = system.run_once(dsn).seconds
    return {"exec_to_ready_s": ready, "sigterm_to_exit_s": stop, "once_empty_queue_s": once}


SCENARIOS: dict[str, Callable[[Plan], dict[str, Any]]] = {
    "throughput": throughput,
    "latency": latency,
    "backlog": backlog,
    "cpu": cpu,
    "memory": memory,
    "startstop": startstop,
}
