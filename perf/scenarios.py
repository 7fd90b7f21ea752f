"""The scenarios of issues 7 and 13. Each takes a :class:`Plan` and returns JSON-ready figures.

Every run starts from a fresh database (created and dropped here) whose schema was
installed by the system under test's own migrator; bulk-queued tables are VACUUM
ANALYZEd before the clock starts. The runs of the configurations compared in a scenario
are interleaved (A, B, C, A, B, C, ...: :func:`interleave`), so a slow minute on a shared
machine hits all of them; each figure is the median of its runs with min and max
(:func:`benchlib.summary`). Headline figures get ``plan.runs`` runs, the others
``plan.extra_runs``.
"""

from __future__ import annotations

import datetime as dt
import functools
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
    add_idle_queues,
    connect,
    jobs_left,
    latency_figures,
    log,
    measure_latency,
    memory_mib,
    postgres_cpu_seconds,
    proc_times,
    queue,
    statement,
    summary,
    tree_cpu_seconds,
    vacuum,
    wait_drained,
    wait_until,
)


@dataclass
class Plan:
    """Sizes and repetitions of one suite run (the full suite, ``quick()`` or ``smoke()``)."""

    server: Server
    workdir: Path
    cores: int
    cpus: set[int] | None
    graphile: bool = True
    mode: str = "full"
    #: Runs of a headline figure (the ones a target judges) ...
    runs: int = 5
    #: ... and of every other figure.
    extra_runs: int = 3
    throughput_jobs: list[int] = field(default_factory=lambda: [20_000, 100_000])
    #: kongtaskd with no ``log:`` section (its default), for "best children" too.
    throughput_children: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    #: Of those, the ones with ``runs`` runs (the default 4, and 8, the best one so far).
    headline_children: list[int] = field(default_factory=lambda: [4, 8])
    #: kongtaskd with ``log: {level: warning}`` (tuned).
    tuned_children: list[int] = field(default_factory=lambda: [4])
    #: graphile-worker (variant, its default success logging?): ("best", True) is the
    #: headline rival; ("best", False) is NO_LOG_SUCCESS=1, the tuned comparison.
    graphile_throughput: list[tuple[str, bool]] = field(
        default_factory=lambda: [("default", True), ("best", True), ("best", False)]
    )
    #: A throughput run still going after this many seconds is stopped there and counts
    #: jobs done / seconds (graphile-worker's default needs ~40 s for 100,000 jobs).
    throughput_cap_s: float = 30.0
    graphile_variants: list[str] = field(default_factory=lambda: ["default", "best"])
    #: kongtaskd's children where one configuration stands for the daemon (latency,
    #: backlog, memory, start/stop, queues, load): the config default.
    children: int = 4
    latency_jobs: int = 200
    latency_interval: float = 0.020
    latency_warmup: int = 10
    #: Latency under load: jobs being processed while the samples are added ...
    load_jobs: int = 100_000
    #: ... samples (alternately a better-priority job and a job of another task) ...
    load_samples: int = 20
    load_interval: float = 0.100
    #: ... and how many of the load's jobs must be done before the first sample.
    load_started: int = 2_000
    #: Per-entity queues: jobs in as many distinct queues ...
    distinct_queues: int = 100_000
    #: ... ready jobs (each in its own queue) beside idle queue rows ...
    idle_ready_jobs: int = 20_000
    idle_queue_rows: int = 500_000
    #: ... and hot queues x jobs in each.
    hot_queues: int = 1_000
    hot_jobs_per_queue: int = 50
    #: Which of the layouts (distinct, idle, hot) run.
    queue_layouts: list[str] = field(default_factory=lambda: ["distinct", "idle", "hot"])
    #: A queue run still going after this many seconds is stopped (rate = done / cap):
    #: graphile-worker's claim locks every available queue row, so with 100,000 queues it
    #: needs minutes; its rate over the cap is the same figure.
    queue_cap_s: float = 20.0
    #: Runs of graphile-worker in the queue scenarios: a capped reference for the ≥ 3x
    #: targets, its rate steady (two runs for a median with a range, within the budget).
    queue_reference_runs: int = 2
    #: Many daemons: daemon counts sharing ``daemon_children`` children in total, jobs.
    daemon_counts: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    #: Of those, the ones with ``runs`` runs (the target compares 4 with 1).
    headline_daemons: list[int] = field(default_factory=lambda: [1, 4])
    daemon_children: int = 8
    daemon_jobs: int = 40_000
    backlog_sizes: list[int] = field(default_factory=lambda: [10_000, 1_000_000])
    backlog_measured_jobs: int = 20_000
    backlog_layouts: list[str] = field(default_factory=lambda: ["ahead"])
    cpu_jobs: int = 400
    cpu_ms: int = 50
    #: run.py adds the core count (``--cores``) for the full suite.
    cpu_children: list[int] = field(default_factory=lambda: [1, 2, 4])
    cpu_runs: int = 2
    memory_checkpoints: list[int] = field(default_factory=lambda: [10_000, 100_000])
    memory_runs: int = 2

    @classmethod
    def quick(cls, **kwargs: Any) -> Plan:
        """Every scenario and configuration of the full suite, smaller counts, fewer runs:
        a few minutes (a check that the full run will work, figures indicative only)."""
        return cls(
            mode="quick",
            runs=2,
            extra_runs=1,
            throughput_jobs=[5_000, 20_000],
            throughput_cap_s=15.0,
            latency_jobs=100,
            latency_warmup=5,
            load_jobs=20_000,
            load_samples=10,
            load_interval=0.05,
            load_started=1_000,
            distinct_queues=10_000,
            idle_ready_jobs=5_000,
            idle_queue_rows=100_000,
            hot_queues=100,
            hot_jobs_per_queue=50,
            queue_cap_s=15.0,
            daemon_jobs=10_000,
            backlog_sizes=[1_000, 50_000],
            backlog_measured_jobs=5_000,
            cpu_jobs=100,
            cpu_runs=1,
            memory_checkpoints=[2_000, 10_000],
            memory_runs=1,
            **kwargs,
        )

    @classmethod
    def smoke(cls, **kwargs: Any) -> Plan:
        """Tiny counts, one run: seconds per scenario, so the scripts cannot rot."""
        return cls(
            mode="smoke",
            runs=1,
            extra_runs=1,
            throughput_jobs=[300],
            throughput_children=[2],
            headline_children=[2],
            tuned_children=[],
            graphile_throughput=[("best", True)],
            throughput_cap_s=60.0,
            latency_jobs=20,
            latency_warmup=2,
            load_jobs=600,
            load_samples=4,
            load_interval=0.01,
            load_started=1,
            distinct_queues=300,
            idle_ready_jobs=100,
            idle_queue_rows=1_000,
            # The idle layout has every code path of the three (named queues, idle rows).
            queue_layouts=["idle"],
            hot_queues=10,
            hot_jobs_per_queue=2,
            queue_cap_s=5.0,
            # Two daemons: the many-daemon path and its exactly-once check.
            daemon_counts=[2],
            headline_daemons=[2],
            daemon_children=2,
            daemon_jobs=300,
            backlog_sizes=[1_000],
            backlog_measured_jobs=300,
            cpu_jobs=16,
            cpu_ms=20,
            cpu_children=[1, 2],
            cpu_runs=1,
            memory_checkpoints=[100, 1_000],
            memory_runs=1,
            **kwargs,
        )

    def kongtaskd(
        self, concurrency: int | None = None, log_level: str | None = None, tag: str = ""
    ) -> Kongtaskd:
        """kongtaskd as users run it (no ``log:`` section) unless ``log_level`` is given."""
        return Kongtaskd(
            self.workdir,
            concurrency or self.children,
            cpus=self.cpus,
            log_level=log_level,
            tag=tag,
        )

    def graphiles(
        self, variants: list[str] | None = None, log_success: bool = True
    ) -> list[Graphile]:
        """graphile-worker's configurations, as users run them (success lines) by default."""
        if not self.graphile:
            return []
        return [
            Graphile(self.workdir, variant, cpus=self.cpus, log_success=log_success)
            for variant in (variants or self.graphile_variants)
        ]


@dataclass
class Case:
    """One configuration of a scenario: what one run does and how many runs it gets."""

    key: Any
    run: Callable[[], Any]
    runs: int


def interleave(what: str, cases: list[Case]) -> dict[Any, list[Any]]:
    """Round-robin over ``cases`` (A, B, C, A, B, C, ...) until each had its runs; results
    by key. A case with fewer runs drops out of the later rounds."""
    results: dict[Any, list[Any]] = {case.key: [] for case in cases}
    for round_ in range(max((case.runs for case in cases), default=0)):
        for case in cases:
            if round_ < case.runs:
                log(f"{what}: {_key_text(case.key)}, run {round_ + 1}/{case.runs}")
                results[case.key].append(case.run())
    return results


def _key_text(key: Any) -> str:
    if isinstance(key, tuple):
        return ", ".join(f"{k:,}" if isinstance(k, int) else str(k) for k in key)
    return str(key)


def _family(system: System) -> dict[str, Any]:
    """The fields a report row uses to find a configuration again."""
    if isinstance(system, Kongtaskd):
        return {
            "system": system.label,
            "family": "kongtaskd",
            "children": system.concurrency,
            "log": "default" if system.log_level is None else "tuned",
            "variant": None,
        }
    assert isinstance(system, Graphile)
    return {
        "system": system.label,
        "family": "graphile-worker",
        "children": None,
        "log": "default" if system.log_success else "tuned",
        "variant": system.variant,
    }


# ------------------------------------------------------------------------------------------
# 1. Throughput
# ------------------------------------------------------------------------------------------
def throughput(plan: Plan) -> dict[str, Any]:
    """N pre-queued no-op jobs, ``--once``, exec to exit (start-up included).

    Every configuration's runs are interleaved per job count: empty queue (start-up) for
    all, then the smaller count for all, then the bigger, and again.
    """
    systems: list[tuple[System, int]] = []
    for n in plan.throughput_children:
        runs = plan.runs if n in plan.headline_children else plan.extra_runs
        systems.append((plan.kongtaskd(n), runs))
    systems += [(plan.kongtaskd(n, "warning"), plan.extra_runs) for n in plan.tuned_children]
    if plan.graphile:
        for variant, log_success in plan.graphile_throughput:
            headline = variant == "best" and log_success
            graphile = Graphile(plan.workdir, variant, cpus=plan.cpus, log_success=log_success)
            systems.append((graphile, plan.runs if headline else plan.extra_runs))
    cases = []
    for jobs in [0, *plan.throughput_jobs]:
        for system, runs in systems:
            cases.append(
                Case(
                    (system.label, jobs),
                    functools.partial(_once, plan, system, jobs, plan.throughput_cap_s),
                    # Start-up is a small correction: the extra runs are enough.
                    min(runs, plan.extra_runs) if jobs == 0 else runs,
                )
            )
    results = interleave("throughput", cases)
    rows = []
    for system, _ in systems:
        empty = results[(system.label, 0)]
        startup = summary([r["seconds"] for r in empty], 3)
        for jobs in plan.throughput_jobs:
            runs_ = results[(system.label, jobs)]
            rows.append(
                {
                    **_family(system),
                    "jobs": jobs,
                    "jobs_per_s": summary([r["done"] / r["seconds"] for r in runs_], 0),
                    "seconds": summary([r["seconds"] for r in runs_], 3),
                    "jobs_per_s_without_startup": summary(
                        [r["done"] / max(1e-3, r["seconds"] - startup["median"]) for r in runs_],
                        0,
                    ),
                    "daemon_cpu_ms_per_1000_jobs": _cpu_per_1000(runs_),
                    "queueing_jobs_per_s": summary([jobs / r["queue_seconds"] for r in runs_], 0),
                    "empty_queue_seconds": startup,
                    "capped_runs": sum(1 for r in runs_ if r["capped"]),
                }
            )
    return {"cap_s": plan.throughput_cap_s, "rows": rows}


def _cpu_per_1000(runs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The daemon's CPU ms per 1000 jobs over the runs whose CPU is whole: a capped
    ``--once`` run was killed, and wait4 does not count the children its supervisor never
    reaped (a continuously running daemon's tree is read from /proc, capped or not)."""
    whole = [r["cpu_seconds"] * 1e6 / max(1, r["done"]) for r in runs if r["cpu_whole"]]
    return summary(whole, 1) if whole else None


def _once(
    plan: Plan,
    system: System,
    jobs: int,
    cap: float | None = None,
    queues: int | None = None,
    idle_queues: int = 0,
) -> dict[str, Any]:
    """One ``--once`` run on a fresh database of ``jobs`` no-op jobs (in ``queues`` named
    queues round-robin, beside ``idle_queues`` queue rows without jobs). A run stopped at
    ``cap`` counts the jobs done by then."""
    with plan.server.database(system.schema_by) as dsn:
        queued = queue(dsn, "noop", jobs, queues=queues) if jobs else 0.0
        if idle_queues:
            add_idle_queues(dsn, idle_queues)
        vacuum(dsn)
        result = system.run_once(dsn, cap=cap)
        left = jobs_left(dsn)
        if left and not result.capped:
            raise BenchError(f"{system.label}: {left} of {jobs} jobs left after --once")
    return {
        "seconds": result.seconds,
        "cpu_seconds": result.cpu_seconds,
        "queue_seconds": queued or 1e-9,
        "done": jobs - left,
        "capped": result.capped,
        "cpu_whole": not result.capped,
    }


# ------------------------------------------------------------------------------------------
# 2. Latency
# ------------------------------------------------------------------------------------------
def latency(plan: Plan) -> dict[str, Any]:
    """Idle daemon; jobs added one by one; add_job commit -> handler's first line."""
    systems: list[System] = [plan.kongtaskd(), *plan.graphiles()]
    results = interleave(
        "latency",
        [
            Case(system.label, functools.partial(_latency_run, plan, system), plan.runs)
            for system in systems
        ],
    )
    rows = [{**_family(system), **_latency_summary(results[system.label])} for system in systems]
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
# 2b. Latency under load
# ------------------------------------------------------------------------------------------
#: The two kinds of sample job added while the load runs: (name, add_job options).
LOAD_KINDS: list[tuple[str, dict[str, Any]]] = [
    ("better priority", {"priority": -1}),
    ("another task", {}),
]


def load_latency(plan: Plan) -> dict[str, Any]:
    """A running daemon works through ``load_jobs`` no-op jobs; meanwhile ``load_samples``
    latency jobs are added one by one, alternately of a better priority (-1) and of another
    task at the load's priority (0). Commit -> handler's first line, per kind."""
    systems: list[System] = [plan.kongtaskd(), *plan.graphiles(["best"])]
    results = interleave(
        "latency under load",
        [
            Case(system.label, functools.partial(_load_run, plan, system), plan.extra_runs)
            for system in systems
        ],
    )
    rows = []
    for system in systems:
        runs = results[system.label]
        for kind, _ in LOAD_KINDS:
            rows.append(
                {
                    **_family(system),
                    "kind": kind,
                    **_latency_summary([r[kind] for r in runs]),
                    "load_left_after_samples": summary([r["left"] for r in runs], 0),
                }
            )
    return {
        "load_jobs": plan.load_jobs,
        "samples": plan.load_samples,
        "interval_ms": plan.load_interval * 1000,
        "started_after": plan.load_started,
        "rows": rows,
    }


def _load_run(plan: Plan, system: System) -> dict[str, Any]:
    with plan.server.database(system.schema_by) as dsn, system.start(dsn) as running:
        running.wait_ready()
        queue(dsn, "noop", plan.load_jobs, chunk=plan.load_jobs)
        wait_until(
            lambda: jobs_left(dsn, "noop") <= plan.load_jobs - plan.load_started,
            120.0,
            f"{system.label} to start on the load",
            interval=0.01,
        )

        def options(i: int) -> dict[str, Any]:
            return LOAD_KINDS[i % len(LOAD_KINDS)][1]

        left: list[int] = []  # load jobs still waiting when the last sample was added
        samples = measure_latency(
            dsn,
            plan.workdir,
            plan.load_samples,
            plan.load_interval,
            0,
            options=options,
            after_adding=lambda: left.append(jobs_left(dsn, "noop")),
            # A job of another task at the load's priority may wait for all of the load.
            timeout=600.0,
        )
        wait_drained(dsn, "noop", f"{system.label} running the load")
        running.stop()
    figures: dict[str, Any] = {"left": left[0] if left else 0}
    for k, (kind, _) in enumerate(LOAD_KINDS):
        figures[kind] = latency_figures(samples[k :: len(LOAD_KINDS)])
    return figures


# ------------------------------------------------------------------------------------------
# 3. Per-entity queues
# ------------------------------------------------------------------------------------------
#: layout -> (what it is, whether the ≥ 3x graphile-worker target applies)
QUEUE_LAYOUTS = {
    "distinct": "a queue per job",
    "idle": "a queue per job, beside idle queue rows",
    "hot": "hot queues, many jobs each",
}


def queues(plan: Plan) -> dict[str, Any]:
    """Named queues: each layout against the no-queue throughput at the same job count
    (same daemon, interleaved) and against graphile-worker best with the same queues.

    * distinct: ``distinct_queues`` jobs, each in its own queue (per-entity queues);
    * idle: ``idle_ready_jobs`` ready jobs, each in its own queue, beside
      ``idle_queue_rows`` queue rows whose jobs are done (inserted straight into
      ``_private_job_queues``; what ``cleanup --queues`` would delete);
    * hot: ``hot_queues`` queues x ``hot_jobs_per_queue`` jobs (one runs at a time per
      queue, so at most ``hot_queues`` are claimable at once).

    The daemons run continuously, not ``--once``: graphile-worker's ``--once`` exits as
    soon as a fetch finds nothing, which with busy queues is before the jobs are done. The
    clock runs from exec to the moment no job is left (start-up included, as ``--once``).
    A run still going after ``queue_cap_s`` is stopped: its rate is jobs done / cap.
    """
    ours = plan.kongtaskd()
    theirs = plan.graphiles(["best"])
    shapes = {
        "distinct": (plan.distinct_queues, plan.distinct_queues, 0),
        "idle": (plan.idle_ready_jobs, plan.idle_ready_jobs, plan.idle_queue_rows),
        "hot": (plan.hot_queues * plan.hot_jobs_per_queue, plan.hot_queues, 0),
    }
    layouts = {layout: shapes[layout] for layout in plan.queue_layouts}
    cases = []
    cap = plan.queue_cap_s
    for layout, (jobs, named, idle) in layouts.items():
        cases.append(
            Case(
                (layout, "queues", ours.label),
                functools.partial(_drain_run, plan, ours, jobs, cap, named, idle),
                plan.extra_runs,
            )
        )
        cases.append(
            Case(
                (layout, "no queue", ours.label),
                functools.partial(_drain_run, plan, ours, jobs, cap),
                plan.extra_runs,
            )
        )
        for system in theirs:
            cases.append(
                Case(
                    (layout, "queues", system.label),
                    functools.partial(_drain_run, plan, system, jobs, cap, named, idle),
                    min(plan.extra_runs, plan.queue_reference_runs),
                )
            )
    results = interleave("queues", cases)
    rows = []
    for key, runs in results.items():
        layout, kind, label = key
        jobs, named, idle = layouts[layout]
        system = ours if label == ours.label else next(s for s in theirs if s.label == label)
        rows.append(
            {
                **_family(system),
                "layout": layout,
                "what": QUEUE_LAYOUTS[layout],
                "with_queues": kind == "queues",
                "jobs": jobs,
                "queues": named if kind == "queues" else 0,
                "idle_queue_rows": idle if kind == "queues" else 0,
                "jobs_per_s": summary([r["done"] / r["seconds"] for r in runs], 0),
                "seconds": summary([r["seconds"] for r in runs], 3),
                "daemon_cpu_ms_per_1000_jobs": _cpu_per_1000(runs),
                "capped_runs": sum(1 for r in runs if r["capped"]),
            }
        )
    return {"cap_s": cap, "rows": rows}


def _drain_run(
    plan: Plan,
    system: System,
    jobs: int,
    cap: float,
    queues: int | None = None,
    idle_queues: int = 0,
) -> dict[str, Any]:
    """Like :func:`_once` with a continuously running daemon: exec to no job left."""
    with plan.server.database(system.schema_by) as dsn:
        queue(dsn, "noop", jobs, queues=queues)
        if idle_queues:
            add_idle_queues(dsn, idle_queues)
        vacuum(dsn)
        poll = connect(dsn)
        try:
            with system.start(dsn) as running:
                deadline = running.started + cap
                while True:
                    with poll.cursor() as cur:
                        cur.execute(statement("any_job"))
                        ((anything,),) = cur.fetchall()
                    now = time.perf_counter()
                    if not anything or now >= deadline:
                        break
                    if running.proc.poll() is not None:
                        raise BenchError(
                            f"{system.label} exited {running.proc.returncode}:\n{running.log()}"
                        )
                    time.sleep(0.05)  # the poll's own cost stays small next to the claims
                seconds = now - running.started
                cpu_seconds = tree_cpu_seconds(running.pid)
                running.stop()
        finally:
            poll.close()
        left = jobs_left(dsn)
    return {
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "done": jobs - left,
        "capped": bool(anything),
        "cpu_whole": True,
    }


# ------------------------------------------------------------------------------------------
# 3b. Many daemons
# ------------------------------------------------------------------------------------------
def daemons(plan: Plan) -> dict[str, Any]:
    """1, 2, 4, 8 daemons (distinct pools, as on separate hosts) sharing
    ``daemon_children`` children against one database: ``daemon_jobs`` jobs whose handler
    does one insert of its id (``record``), throughput from the queueing commit to the
    last id recorded and every job deleted (start-up excluded: on separate hosts it would
    not add up), exactly-once check, CPU per job of the daemons and of PostgreSQL."""
    counts = [n for n in plan.daemon_counts if plan.daemon_children % n == 0]
    cases = [
        Case(
            n,
            functools.partial(_daemons_run, plan, n),
            plan.runs if n in plan.headline_daemons else plan.extra_runs,
        )
        for n in counts
    ]
    results = interleave("many daemons", cases)
    rows = []
    for n in counts:
        runs = results[n]
        jobs = plan.daemon_jobs
        rows.append(
            {
                "daemons": n,
                "children_each": plan.daemon_children // n,
                "jobs": jobs,
                "jobs_per_s": summary([jobs / r["seconds"] for r in runs], 0),
                "seconds": summary([r["seconds"] for r in runs], 3),
                "daemon_cpu_ms_per_job": summary([r["daemon_cpu"] * 1e3 / jobs for r in runs], 3),
                "postgres_cpu_ms_per_job": summary([r["pg_cpu"] * 1e3 / jobs for r in runs], 3),
                "postgres_backends_cpu_ms_per_job": summary(
                    [r["pg_backends_cpu"] * 1e3 / jobs for r in runs], 3
                ),
                "ran": sum(r["ran"] for r in runs),
                "distinct": sum(r["distinct"] for r in runs),
                "expected": jobs * len(runs),
                "exactly_once": all(r["ran"] == r["distinct"] == jobs for r in runs),
            }
        )
    return {"total_children": plan.daemon_children, "jobs": plan.daemon_jobs, "rows": rows}


def _daemons_run(plan: Plan, count: int) -> dict[str, Any]:
    each = plan.daemon_children // count
    systems = [plan.kongtaskd(each, tag=f"daemon {i + 1}/{count}") for i in range(count)]
    with plan.server.database("kongtaskd") as dsn:
        driver = connect(dsn)
        try:
            with driver.cursor() as cur:
                cur.execute(statement("create_recorded"))
                cur.execute(statement("backend_pid"))
                ((own_backend,),) = cur.fetchall()
            postmaster = proc_times(own_backend)[0]
            started: list[Running] = []
            try:
                for system in systems:
                    started.append(system.start(dsn))
                for running in started:
                    running.wait_ready()
                result = _drain_recorded(plan, driver, dsn, started, postmaster, own_backend)
                for running in started:
                    running.stop()
            finally:
                for running in started:
                    running.kill()
        finally:
            driver.close()
    return result


def _drain_recorded(
    plan: Plan,
    driver: Any,
    dsn: str,
    started: list[Running],
    postmaster: int,
    own_backend: int,
) -> dict[str, Any]:
    """Queue the jobs, wait until each was recorded and deleted; times and CPU."""
    jobs = plan.daemon_jobs
    daemon_before = sum(tree_cpu_seconds(r.pid) for r in started)
    backends_before = _backend_cpu(driver)
    pg_before = postgres_cpu_seconds(postmaster)
    own_before = proc_times(own_backend)[1]
    with driver.cursor() as cur:  # autocommit: the jobs are visible when this returns
        cur.execute(statement("queue_jobs"), _record_spec(jobs))
    committed = time.perf_counter()
    deadline = committed + 600.0
    while True:
        with driver.cursor() as cur:
            cur.execute(statement("drain_progress"))
            ((ran, left),) = cur.fetchall()
        if ran >= jobs and left == 0:
            break
        for running in started:
            if running.proc.poll() is not None:
                raise BenchError(f"a daemon exited {running.proc.returncode}:\n{running.log()}")
        if time.perf_counter() > deadline:
            raise BenchError(f"{len(started)} daemon(s): {ran} of {jobs} ran, {left} left")
        time.sleep(0.05)  # polling is the measurement; its own cost is subtracted below
    seconds = time.perf_counter() - committed
    daemon_cpu = sum(tree_cpu_seconds(r.pid) for r in started) - daemon_before
    own = proc_times(own_backend)[1] - own_before
    pg_cpu = postgres_cpu_seconds(postmaster) - pg_before - own
    backends = _backend_cpu(driver)
    backends_cpu = sum(cpu - backends_before.get(pid, 0.0) for pid, cpu in backends.items())
    with driver.cursor() as cur:
        cur.execute(statement("recorded"))
        ((ran, distinct),) = cur.fetchall()
    return {
        "seconds": seconds,
        "daemon_cpu": daemon_cpu,
        "pg_cpu": pg_cpu,
        "pg_backends_cpu": backends_cpu,
        "ran": ran,
        "distinct": distinct,
    }


def _record_spec(jobs: int) -> dict[str, Any]:
    return {
        "task": "record",
        "start": 0,
        "count": jobs,
        "run_at": None,
        "priority": None,
        "payload": None,
        "queues": None,
        "queue_prefix": "q",
    }


def _backend_cpu(driver: Any) -> dict[int, float]:
    """CPU seconds so far of every other backend connected to this database (the
    daemons' sessions), by pid."""
    with driver.cursor() as cur:
        cur.execute(statement("other_backends"))
        pids = [pid for (pid,) in cur.fetchall()]
    return {pid: proc_times(pid)[1] for pid in pids}


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
    cases = [
        Case(
            (layout, size, system.label),
            functools.partial(_backlog_run, plan, system, size, layout),
            plan.extra_runs,
        )
        for layout in plan.backlog_layouts
        for size in plan.backlog_sizes
        for system in systems
    ]
    results = interleave("backlog", cases)
    rows = [
        _backlog_row(plan, system, size, layout, results[(layout, size, system.label)])
        for layout in plan.backlog_layouts
        for system in systems
        for size in plan.backlog_sizes
    ]
    return {"measured_jobs": plan.backlog_measured_jobs, "rows": rows}


def _backlog_row(
    plan: Plan, system: System, size: int, layout: str, runs: list[dict[str, Any]]
) -> dict[str, Any]:
    measured = plan.backlog_measured_jobs
    return {
        **_family(system),
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
    systems = {n: plan.kongtaskd(n) for n in plan.cpu_children}
    results = interleave(
        "cpu",
        [
            Case(n, functools.partial(_cpu_run, plan, system), plan.cpu_runs)
            for n, system in systems.items()
        ],
    )
    rows = [
        {"children": n, "jobs_per_s": summary([plan.cpu_jobs / s for s in results[n]], 2)}
        for n in plan.cpu_children
    ]
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
    results = interleave(
        "memory",
        [
            Case(system.label, functools.partial(_memory_run, plan, system), plan.memory_runs)
            for system in systems
        ],
    )
    rows = []
    for system in systems:
        runs = results[system.label]
        stages = list(runs[0])
        for role in runs[0][stages[0]]:
            row: dict[str, Any] = {**_family(system), "process": role}
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
    results = interleave(
        "start/stop",
        [
            Case(system.label, functools.partial(_startstop_run, plan, system), plan.extra_runs)
            for system in systems
        ],
    )
    rows = []
    for system in systems:
        runs = results[system.label]
        rows.append(
            {**_family(system), **{key: summary([r[key] for r in runs], 3) for key in runs[0]}}
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
    "load": load_latency,
    "queues": queues,
    "daemons": daemons,
    "backlog": backlog,
    "cpu": cpu,
    "memory": memory,
    "startstop": startstop,
}
