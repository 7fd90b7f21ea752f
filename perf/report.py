"""The report: ``report.json`` (everything) and ``report.md`` (the tables people read).

Targets are judged here from the figures, never asserted: a missed target is a row that
says "missed", with the figure next to it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

#: Growth of a process's RSS between the last two memory checkpoints that we call noise
#: (allocator arenas come and go in 256 KiB-1 MiB steps).
LEAK_NOISE_MIB = 1.0


def fmt(figure: dict[str, Any] | None, unit: str = "") -> str:
    """ "median (min-max)" for a summary."""
    if not figure:
        return "n/a"
    unit = f" {unit}" if unit else ""
    if figure["min"] == figure["max"]:
        return f"{_num(figure['median'])}{unit}"
    return f"{_num(figure['median'])}{unit} ({_num(figure['min'])}-{_num(figure['max'])})"


def _num(value: float) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) >= 100:
        return f"{int(value):,}"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:g}" if abs(value) < 1000 else f"{value:,.0f}"


def _stage(key: str) -> str:
    """'after_10000' -> 'after 10,000'; 'idle' stays."""
    if key.startswith("after_"):
        return f"after {int(key[6:]):,}"
    return key


def _verdict(met: bool | str | None) -> str:
    if isinstance(met, str):
        return met
    return {True: "met", False: "**missed**", None: "n/a"}[met]


def _ratio(ours: float, theirs: float) -> float:
    return ours / theirs if theirs else float("inf")


def _capped(row: dict[str, Any]) -> str:
    """ ", 2 runs capped" when some of the row's runs were stopped at the cap."""
    n = row.get("capped_runs") or 0
    return f", {n} run{'s' if n != 1 else ''} capped" if n else ""


def _rate(row: dict[str, Any], startup: bool = True) -> str:
    """'12,345 jobs/s (min-max) [w/o start-up 13,000]' for a throughput row."""
    text = fmt(row["jobs_per_s"], "jobs/s")
    if startup and "jobs_per_s_without_startup" in row:
        text += f" [w/o start-up {fmt(row['jobs_per_s_without_startup'])}]"
    return text + _capped(row)


def _pick(rows: list[dict[str, Any]], **want: Any) -> list[dict[str, Any]]:
    return [r for r in rows if all(r.get(k) == v for k, v in want.items())]


# ------------------------------------------------------------------------------------------
# Targets
# ------------------------------------------------------------------------------------------
#: Targets of issue 13 judged by tests, not by this suite: listed so that the closing
#: note's table has every target (the lead fills in the test's outcome).
TESTED_ELSEWHERE = [
    "Pooler: 1,000 jobs through PgBouncer (transaction mode), 8 children, 4 server "
    "connections; a pool too small makes children wait, never fail a job",
    "Pooler: a single DSN at PgBouncer in transaction mode works or is refused at start "
    "with one line",
    "Failover: 2,000 jobs, primary stopped, standby promoted: every job finishes, seconds "
    "from promote to the first job run",
]


def _queue_shape(row: dict[str, Any]) -> str:
    if row["layout"] == "distinct":
        return f"{row['jobs']:,} jobs in {row['queues']:,} distinct queues"
    if row["layout"] == "idle":
        return (
            f"{row['jobs']:,} ready jobs (own queues) beside {row['idle_queue_rows']:,} idle "
            "queue rows"
        )
    return f"{row['queues']:,} hot queues x {row['jobs'] // max(1, row['queues']):,} jobs"


def targets(scenarios: dict[str, Any], cores: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    add = rows.append
    tp = scenarios.get("throughput", {}).get("rows")
    if tp:
        for jobs in sorted({r["jobs"] for r in tp}):
            here = [r for r in tp if r["jobs"] == jobs]
            ours = _pick(here, family="kongtaskd", log="default", children=4)
            rival = _pick(here, family="graphile-worker", variant="best", log="default")
            if ours and rival:
                o, t = ours[0], rival[0]
                ratio = _ratio(o["jobs_per_s"]["median"], t["jobs_per_s"]["median"])
                add(
                    {
                        "target": f"1. Throughput, {jobs:,} no-op jobs, exec to exit: kongtaskd "
                        "at its default 4 children, no `log:` section ≥ graphile-worker's "
                        "best preset, its default logging",
                        "figure": f"{_rate(o)} vs {_rate(t)} = {ratio:.2f}x",
                        "met": ratio >= 1.0,
                    }
                )
        biggest = max(r["jobs"] for r in tp)
        here = [r for r in tp if r["jobs"] == biggest]
        ours = _pick(here, family="kongtaskd", log="default")
        rival = _pick(here, family="graphile-worker", variant="best", log="default")
        if ours and rival:
            best = max(ours, key=lambda r: r["jobs_per_s"]["median"])
            t = rival[0]
            ratio = _ratio(best["jobs_per_s"]["median"], t["jobs_per_s"]["median"])
            add(
                {
                    "target": f"1. Throughput, {biggest:,} no-op jobs: kongtaskd at its best "
                    "children count (no `log:` section) ≥ 1.5x graphile-worker's best preset",
                    "figure": f"{_rate(best)} ({best['children']} children) vs {_rate(t)} "
                    f"= {ratio:.2f}x",
                    "met": ratio >= 1.5,
                }
            )
    lat = scenarios.get("latency", {}).get("rows")
    if lat:
        ours = next((r for r in lat if r["system"].startswith("kongtaskd")), None)
        theirs = [r for r in lat if not r["system"].startswith("kongtaskd")]
        rival = min(theirs, key=lambda r: r["p50"]["median"]) if theirs else None
        if ours:
            add(
                {
                    "target": "2. Idle latency p50 ≤ graphile-worker's p50 (its better "
                    "configuration), same run",
                    "figure": f"{fmt(ours['p50'], 'ms')}"
                    + (f" vs {fmt(rival['p50'], 'ms')} ({rival['system']})" if rival else ""),
                    "met": ours["p50"]["median"] <= rival["p50"]["median"] if rival else None,
                }
            )
            add(
                {
                    "target": "2. Idle latency p99 ≤ 4 ms",
                    "figure": fmt(ours["p99"], "ms"),
                    "met": ours["p99"]["median"] <= 4.0,
                }
            )
    load = scenarios.get("load", {})
    if load.get("rows"):
        parts = [
            f"{r['system'].split(',')[0]} {r['kind']}: p50 {fmt(r['p50'], 'ms')}, "
            f"p99 {fmt(r['p99'], 'ms')}"
            for r in load["rows"]
        ]
        add(
            {
                "target": f"2. Latency under load reported (a job added while "
                f"{load['load_jobs']:,} others are processed), both systems",
                "figure": "; ".join(parts),
                "met": "reported",
            }
        )
    qs = scenarios.get("queues", {}).get("rows")
    if qs:
        for layout in ("distinct", "idle", "hot"):
            ours = _pick(qs, layout=layout, family="kongtaskd", with_queues=True)
            base = _pick(qs, layout=layout, family="kongtaskd", with_queues=False)
            rival = _pick(qs, layout=layout, family="graphile-worker", with_queues=True)
            if not ours:
                continue
            o = ours[0]
            shape = _queue_shape(o)
            if base:
                ratio = _ratio(o["jobs_per_s"]["median"], base[0]["jobs_per_s"]["median"])
                add(
                    {
                        "target": f"3. Queues, {shape}: kongtaskd within 20% of its no-queue "
                        f"throughput at {o['jobs']:,} jobs",
                        "figure": f"{_rate(o)} vs {_rate(base[0])} = {ratio:.0%}",
                        "met": ratio >= 0.8,
                    }
                )
            if rival and layout in ("distinct", "idle"):
                ratio = _ratio(o["jobs_per_s"]["median"], rival[0]["jobs_per_s"]["median"])
                add(
                    {
                        "target": f"3. Queues, {shape}: kongtaskd ≥ 3x graphile-worker best",
                        "figure": f"{_rate(o)} vs {_rate(rival[0])} = {ratio:.2f}x",
                        "met": ratio >= 3.0,
                    }
                )
    dm = scenarios.get("daemons", {}).get("rows")
    if dm:
        one = next((r for r in dm if r["daemons"] == 1), None)
        four = next((r for r in dm if r["daemons"] == 4), None)
        if one and four:
            ratio = _ratio(four["jobs_per_s"]["median"], one["jobs_per_s"]["median"])
            add(
                {
                    "target": f"4. Many daemons: 4 daemons x {four['children_each']} children "
                    f"≥ 0.9x 1 daemon x {one['children_each']} ({one['jobs']:,} jobs, one "
                    "insert each)",
                    "figure": f"{fmt(four['jobs_per_s'], 'jobs/s')} vs "
                    f"{fmt(one['jobs_per_s'], 'jobs/s')} = {ratio:.2f}x",
                    "met": ratio >= 0.9,
                }
            )
            pg = _ratio(
                four["postgres_cpu_ms_per_job"]["median"], one["postgres_cpu_ms_per_job"]["median"]
            )
            own = _ratio(
                four["postgres_backends_cpu_ms_per_job"]["median"],
                one["postgres_backends_cpu_ms_per_job"]["median"],
            )
            add(
                {
                    "target": "4. Many daemons: PostgreSQL CPU per job at 4 daemons ≤ 1.1x "
                    "1 daemon's",
                    "figure": f"{fmt(four['postgres_cpu_ms_per_job'], 'ms')} vs "
                    f"{fmt(one['postgres_cpu_ms_per_job'], 'ms')} = {pg:.2f}x (all postgres "
                    f"processes; the daemons' own sessions: {own:.2f}x)",
                    "met": pg <= 1.1,
                }
            )
        add(
            {
                "target": "4. Many daemons: every job ran exactly once (no fault injected)",
                "figure": ", ".join(
                    f"{r['daemons']} daemon{'s' if r['daemons'] != 1 else ''}: "
                    f"{r['ran']:,} runs of {r['expected']:,} jobs, {r['distinct']:,} distinct"
                    for r in dm
                ),
                "met": all(r["exactly_once"] for r in dm),
            }
        )
    for text in TESTED_ELSEWHERE:
        add({"target": f"5./6. {text}", "figure": "a test in `.ci/run`, not perf/", "met": None})
    mem = scenarios.get("memory", {})
    mem_rows = mem.get("rows")
    if mem_rows:
        ours = [r for r in mem_rows if r["system"].startswith("kongtaskd")]
        sup = next((r for r in ours if r["process"] == "supervisor"), None)
        if sup:
            rss_keys = [k for k in sup if k.startswith("rss_") and k != "rss_growth"]
            worst = max(sup[k]["median"] for k in rss_keys)
            add(
                {
                    "target": "(issue 7) Supervisor RSS ≤ 40 MB (MiB here), idle and after every "
                    "checkpoint",
                    "figure": f"{worst:g} MiB at most ("
                    + ", ".join(f"{_stage(k[4:])}: {sup[k]['median']:g}" for k in rss_keys)
                    + ")",
                    "met": worst <= 40.0,
                }
            )
        kids = [r for r in ours if r["process"].startswith("child")]
        if kids:
            last = f"pss_after_{mem['checkpoints'][-1]}"
            values = [r[last]["median"] for r in kids if last in r]
            add(
                {
                    "target": "(issue 7) Per-child PSS reported",
                    "figure": f"{min(values):g}-{max(values):g} MiB per child after "
                    f"{mem['checkpoints'][-1]:,} jobs ({len(kids)} children; idle "
                    + ", ".join(f"{r['pss_idle']['median']:g}" for r in kids)
                    + ")",
                    "met": True,
                }
            )
        if ours and len(mem["checkpoints"]) >= 2:
            growth = max(r["rss_growth"]["median"] for r in ours)
            first, last_cp = mem["checkpoints"][-2], mem["checkpoints"][-1]
            add(
                {
                    "target": f"(issue 7) No RSS growth between the {first:,}th and the "
                    f"{last_cp:,}th job "
                    f"beyond noise (≤ {LEAK_NOISE_MIB:g} MiB per process)",
                    "figure": f"largest growth {growth:+g} MiB ("
                    + ", ".join(f"{r['process']}: {r['rss_growth']['median']:+g}" for r in ours)
                    + ")",
                    "met": growth <= LEAK_NOISE_MIB,
                }
            )
    cpu = scenarios.get("cpu", {}).get("rows")
    if cpu:
        # Judged with as many children as cores (the configuration this target is about);
        # the other rows are in section 4.
        best = next(
            (r for r in cpu if r["children"] == cores),
            max(cpu, key=lambda r: r["scaling"] or 0),
        )
        goal = 0.8 * cores
        add(
            {
                "target": f"(issue 7) CPU-heavy scaling ≥ 0.8 x cores ({goal:g} on {cores} cores)",
                "figure": f"{best['scaling']}x at {best['children']} children "
                f"({fmt(best['jobs_per_s'], 'jobs/s')})",
                "met": best["scaling"] >= goal if best["scaling"] is not None else None,
            }
        )
    bl = scenarios.get("backlog", {}).get("rows")
    for layout, note in (("ahead", "the issue's layout"), ("behind", "diagnostic")):
        ours = [
            r
            for r in bl or []
            if r["system"].startswith("kongtaskd") and r.get("layout", "ahead") == layout
        ]
        sizes = sorted({r["backlog"] for r in ours})
        if len(sizes) < 2:
            continue
        small = next(r for r in ours if r["backlog"] == sizes[0])
        big = next(r for r in ours if r["backlog"] == sizes[-1])
        ratio = big["jobs_per_s"]["median"] / small["jobs_per_s"]["median"]
        add(
            {
                "target": f"(issue 7) Backlog {sizes[-1]:,}: throughput within 20% of the "
                f"{sizes[0]:,} figure (layout '{layout}', {note}; see 5.)",
                "figure": f"{fmt(big['jobs_per_s'], 'jobs/s')} vs "
                f"{fmt(small['jobs_per_s'], 'jobs/s')} = {ratio:.0%}",
                "met": ratio >= 0.8,
            }
        )
    ss = scenarios.get("startstop", {}).get("rows")
    if ss:
        ours = next((r for r in ss if r["system"].startswith("kongtaskd")), None)
        rival = next((r for r in ss if not r["system"].startswith("kongtaskd")), None)
        if ours:
            add(
                {
                    "target": "(issue 7) Start to READY below graphile-worker's start-up",
                    "figure": f"{fmt(ours['exec_to_ready_s'], 's')}"
                    + (f" vs {fmt(rival['exec_to_ready_s'], 's')}" if rival else ""),
                    "met": (
                        ours["exec_to_ready_s"]["median"] < rival["exec_to_ready_s"]["median"]
                        if rival
                        else None
                    ),
                }
            )
    for row in rows:
        row["verdict"] = _verdict(row["met"])
    return rows


# ------------------------------------------------------------------------------------------
# Markdown
# ------------------------------------------------------------------------------------------
def markdown(report: dict[str, Any]) -> str:
    m, pg, sw = report["machine"], report["postgresql"], report["software"]
    out: list[str] = [
        f"# kongtaskd benchmark report ({report['mode']})",
        "",
        f"Generated {report['generated']} by `{report['command']}` "
        f"in {report['duration_s'] / 60:.1f} min.",
        "",
        "## Machine and software",
        "",
        f"* {m['cores']} cores used (`--cores`), {m['cpus_online']} online; {m['cpu_model']}; "
        f"{m['memory_gib']} GiB RAM; {m['kernel']}",
        f"* Load average before / after: {m['load_before']} / {m['load_after']} "
        "(other work may share this machine; figures are medians for that reason)",
        f"* PostgreSQL {pg['server_version']} on the same host; "
        + ", ".join(f"{k}={v}" for k, v in pg.items() if k != "server_version"),
        f"* kongtaskd {sw['kongtaskd']} (commit {sw['commit']}), Python {sw['python']}; "
        f"graphile-worker {sw['graphile_worker']} (npm), Node {sw['node']}",
        "",
        "## Method",
        "",
        *(
            [
                f"* Mode `{report['mode']}`: headline figures {report['plan']['runs']} runs, "
                f"others {report['plan']['extra_runs']} (CPU-heavy "
                f"{report['plan']['cpu_runs']}, memory {report['plan']['memory_runs']})."
            ]
            if "plan" in report
            else []
        ),
        *[f"* {line}" for line in report["method"]],
        "",
        "## Targets",
        "",
        "| target | figure (median of runs, min-max) | verdict |",
        "|---|---|---|",
        *[f"| {t['target']} | {t['figure']} | {t['verdict']} |" for t in report["targets"]],
        "",
        "Where the time goes for a missed target (profiles, written by hand next to the "
        "committed report): `perf/results/analysis.md`.",
        "",
    ]
    sc = report["scenarios"]
    for name, title, render in (
        ("throughput", "1. Throughput", _throughput_md),
        ("latency", "2. Latency", _latency_md),
        ("load", "2b. Latency under load", _load_md),
        ("queues", "3. Per-entity queues", _queues_md),
        ("daemons", "4. Many daemons", _daemons_md),
        ("backlog", "5. Backlog growth", _backlog_md),
        ("cpu", "6. CPU-heavy handlers", _cpu_md),
        ("memory", "7. Memory", _memory_md),
        ("startstop", "8. Start and stop", _startstop_md),
    ):
        if name not in sc:
            continue
        out += [f"## {title}", ""]
        if "load_1min" in sc[name]:
            before, after = sc[name]["load_1min"]
            out += [
                f"_{sc[name]['duration_s']:g} s; 1-minute load average {before:g} before, "
                f"{after:g} after ({report['machine']['cores']} cores)._",
                "",
            ]
        if "error" in sc[name]:
            out += [f"**Failed:** {sc[name]['error']}", ""]
            continue
        out += [*render(sc[name]), ""]
    return "\n".join(out)


def _throughput_md(s: dict[str, Any]) -> list[str]:
    lines = [
        "Pre-queued no-op jobs, `--once`, wall time from exec to exit (start-up included). "
        '"w/o start-up" subtracts the median exec-to-exit time on an empty queue, as '
        "graphile-worker's perfTest does. CPU is the daemon's whole process tree (wait4). "
        f"A run still going after {s.get('cap_s', 0):g} s is stopped there (capped: jobs "
        "done / seconds).",
        "",
        "| system | jobs | jobs/s | seconds | jobs/s w/o start-up | daemon CPU ms / 1000 jobs "
        "| empty-queue run (s) | capped runs |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in s["rows"]:
        lines.append(
            f"| {r['system']} | {r['jobs']:,} | {fmt(r['jobs_per_s'])} | {fmt(r['seconds'])} "
            f"| {fmt(r['jobs_per_s_without_startup'])} "
            f"| {fmt(r['daemon_cpu_ms_per_1000_jobs'])} | {fmt(r['empty_queue_seconds'])} "
            f"| {r.get('capped_runs', 0)} |"
        )
    return lines


def _latency_md(s: dict[str, Any]) -> list[str]:
    lines = [
        f"{s['jobs']} jobs added one by one, {s['interval_ms']:g} ms apart, to an idle daemon "
        f"({s['warmup_jobs']} warm-up jobs first, not counted). Milliseconds from the "
        "`add_job` COMMIT returning to the handler's first line (nearest-rank percentiles).",
        "",
        "| system | p50 | p90 | p99 | max |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in s["rows"]:
        lines.append(
            f"| {r['system']} | {fmt(r['p50'])} | {fmt(r['p90'])} | {fmt(r['p99'])} "
            f"| {fmt(r['max'])} |"
        )
    return lines


def _load_md(s: dict[str, Any]) -> list[str]:
    lines = [
        f"A running daemon works through {s['load_jobs']:,} pre-queued no-op jobs; once "
        f"{s['started_after']:,} are done, {s['samples']} latency jobs are added one by one, "
        f"{s['interval_ms']:g} ms apart, alternately of a better priority (-1) and of another "
        "task at the load's priority (0). Milliseconds from the `add_job` COMMIT returning "
        'to the handler\'s first line. "Load left" = no-op jobs still waiting when the last '
        "sample was added (0 means the load was over before the samples were).",
        "",
        "| system | sample job | p50 | p90 | p99 | max | load left |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in s["rows"]:
        lines.append(
            f"| {r['system']} | {r['kind']} | {fmt(r['p50'])} | {fmt(r['p90'])} "
            f"| {fmt(r['p99'])} | {fmt(r['max'])} | {fmt(r['load_left_after_samples'])} |"
        )
    return lines


def _queues_md(s: dict[str, Any]) -> list[str]:
    lines = [
        "Pre-queued no-op jobs in named queues (`queue_name`, round-robin); a continuously "
        "running daemon (graphile-worker's `--once` exits when a fetch finds only busy "
        "queues), exec to no job left; beside each, the same daemon on the same number of "
        "jobs without queues (interleaved). Idle queue rows are inserted straight into "
        "`_private_job_queues` (queues whose jobs are done, not cleaned up). Runs still "
        f"going after "
        f"{s['cap_s']:g} s are stopped (rate = jobs done / seconds).",
        "",
        "| layout | system | jobs | queues | idle queue rows | jobs/s | seconds "
        "| daemon CPU ms / 1000 jobs | capped runs |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in s["rows"]:
        lines.append(
            f"| {r['layout']} | {r['system']} | {r['jobs']:,} | {r['queues']:,} "
            f"| {r['idle_queue_rows']:,} | {fmt(r['jobs_per_s'])} | {fmt(r['seconds'])} "
            f"| {fmt(r['daemon_cpu_ms_per_1000_jobs'])} | {r['capped_runs']} |"
        )
    return lines


def _daemons_md(s: dict[str, Any]) -> list[str]:
    lines = [
        f"{s['jobs']:,} jobs whose handler inserts its id into a table (one insert, committed "
        f"by the child), run by 1 to 8 daemons (distinct pools, as on separate hosts) with "
        f"{s['total_children']} children in total, against one database. The daemons are "
        "started and READY first; the clock runs from the queueing COMMIT to the last id "
        "recorded and every job deleted (start-up excluded, as on separate hosts). CPU per "
        "job: the daemons' process trees (/proc), all PostgreSQL processes (postmaster, "
        "backends, WAL writer, checkpointer, autovacuum: /proc, live and reaped, minus the "
        "driver's own session) and, of those, the daemons' own sessions.",
        "",
        "| daemons | children each | jobs/s | seconds | daemons CPU ms/job | PostgreSQL CPU "
        "ms/job | daemons' sessions ms/job | runs / distinct / expected | exactly once |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in s["rows"]:
        lines.append(
            f"| {r['daemons']} | {r['children_each']} | {fmt(r['jobs_per_s'])} "
            f"| {fmt(r['seconds'])} | {fmt(r['daemon_cpu_ms_per_job'])} "
            f"| {fmt(r['postgres_cpu_ms_per_job'])} "
            f"| {fmt(r['postgres_backends_cpu_ms_per_job'])} "
            f"| {r['ran']:,} / {r['distinct']:,} / {r['expected']:,} "
            f"| {'yes' if r['exactly_once'] else '**no**'} |"
        )
    return lines


def _backlog_md(s: dict[str, Any]) -> list[str]:
    lines = [
        f"{s['measured_jobs']:,} ready no-op jobs queued after a backlog (half no-op jobs "
        "scheduled a day ahead, half ready jobs of a task no daemon here handles), "
        "VACUUM ANALYZE, `--once`; then latency (as in 2) on the same table. Layout "
        "`ahead`: the unhandled jobs come first in claim order (same priority, earlier "
        "run_at), so a claim walking graphile-worker's index steps over them; `behind`: "
        "they have priority 1 and come after the measured jobs (what remains is the "
        "table's size).",
        "",
        "| system | layout | backlog | jobs/s | ms per job | latency p50 | p99 | max |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in s["rows"]:
        lat = r["latency_ms"]
        lines.append(
            f"| {r['system']} | {r.get('layout', 'ahead')} | {r['backlog']:,} "
            f"| {fmt(r['jobs_per_s'])} "
            f"| {fmt(r['ms_per_job'])} | {fmt(lat['p50'])} | {fmt(lat['p99'])} "
            f"| {fmt(lat['max'])} |"
        )
    return lines


def _cpu_md(s: dict[str, Any]) -> list[str]:
    lines = [
        f"{s['jobs']} jobs, each burning {s['cpu_ms_per_job']} ms of CPU (thread CPU time) in pure "
        f"Python, `--once`. Scaling = jobs/s over the 1-child figure; ideal = "
        f"min(children, {s['cores']} cores).",
        "",
        "| children | jobs/s | scaling | ideal |",
        "|---:|---:|---:|---:|",
    ]
    for r in s["rows"]:
        lines.append(
            f"| {r['children']} | {fmt(r['jobs_per_s'])} | {r['scaling']}x | {r['ideal']}x |"
        )
    return lines


def _memory_md(s: dict[str, Any]) -> list[str]:
    stages = ["idle"] + [f"after_{c}" for c in s["checkpoints"]]
    names = [_stage(st) for st in stages]
    head = " | ".join(f"RSS {name} | PSS {name}" for name in names)
    lines = [
        "MiB, from /proc/PID/status (VmRSS) and /proc/PID/smaps_rollup (Pss). Idle = 1 s "
        "after READY; then jobs are queued up to each checkpoint and the queue is waited "
        "empty. Growth = RSS at the last checkpoint minus the one before.",
        "",
        f"| system | process | {head} | RSS growth |",
        "|---|---|" + "---:|" * (2 * len(stages) + 1),
    ]
    for r in s["rows"]:
        cells = " | ".join(f"{fmt(r[f'rss_{st}'])} | {fmt(r[f'pss_{st}'])}" for st in stages)
        lines.append(f"| {r['system']} | {r['process']} | {cells} | {fmt(r['rss_growth'])} |")
    return lines


def _startstop_md(s: dict[str, Any]) -> list[str]:
    lines = [
        "Seconds. Ready = kongtaskd's READY=1 (sd_notify) / graphile-worker's "
        '`pool:listen:success` event (its "Worker connected" moment); stop = SIGTERM to '
        "exit with an empty queue; once = `--once` on an empty queue, exec to exit.",
        "",
        "| system | exec → ready | SIGTERM → exit | --once, empty queue |",
        "|---|---:|---:|---:|",
    ]
    for r in s["rows"]:
        lines.append(
            f"| {r['system']} | {fmt(r['exec_to_ready_s'])} | {fmt(r['sigterm_to_exit_s'])} "
            f"| {fmt(r['once_empty_queue_s'])} |"
        )
    return lines


def write(report: dict[str, Any], directory: Path) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    as_json = directory / "report.json"
    as_md = directory / "report.md"
    as_json.write_text(json.dumps(report, indent=2) + "\n")
    as_md.write_text(markdown(report))
    return as_md, as_json
