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


def _verdict(met: bool | None) -> str:
    return {True: "met", False: "**missed**", None: "n/a"}[met]


# ------------------------------------------------------------------------------------------
# Targets
# ------------------------------------------------------------------------------------------
def targets(scenarios: dict[str, Any], cores: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    add = rows.append
    tp = scenarios.get("throughput", {}).get("rows")
    if tp:
        for jobs in sorted({r["jobs"] for r in tp}):
            ours = [r for r in tp if r["jobs"] == jobs and r["children"] is not None]
            theirs = [r for r in tp if r["jobs"] == jobs and r["children"] is None]
            best = max(ours, key=lambda r: r["jobs_per_s"]["median"]) if ours else None
            rival = max(theirs, key=lambda r: r["jobs_per_s"]["median"]) if theirs else None
            add(
                {
                    "target": f"Throughput, {jobs:,} jobs: kongtaskd at its best children count "
                    "≥ graphile-worker's best",
                    "figure": (
                        f"{fmt(best['jobs_per_s'], 'jobs/s')} ({best['children']} children)"
                        if best
                        else "n/a"
                    )
                    + (
                        f" vs {fmt(rival['jobs_per_s'], 'jobs/s')} ({rival['system']})"
                        if rival
                        else ""
                    ),
                    "met": (
                        best["jobs_per_s"]["median"] >= rival["jobs_per_s"]["median"]
                        if best and rival
                        else None
                    ),
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
                    "target": "Latency p50 ≤ graphile-worker's p50 (its better configuration)",
                    "figure": f"{fmt(ours['p50'], 'ms')}"
                    + (f" vs {fmt(rival['p50'], 'ms')} ({rival['system']})" if rival else ""),
                    "met": ours["p50"]["median"] <= rival["p50"]["median"] if rival else None,
                }
            )
            add(
                {
                    "target": "Latency p99 ≤ 6 ms",
                    "figure": fmt(ours["p99"], "ms"),
                    "met": ours["p99"]["median"] <= 6.0,
                }
            )
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
                    "target": "Supervisor RSS ≤ 40 MB (MiB here), idle and after every checkpoint",
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
                    "target": "Per-child PSS reported",
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
                    "target": f"No RSS growth between the {first:,}th and the {last_cp:,}th job "
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
                "target": f"CPU-heavy scaling ≥ 0.8 x cores ({goal:g} on {cores} cores)",
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
                "target": f"Backlog {sizes[-1]:,}: throughput within 20% of the "
                f"{sizes[0]:,} figure (layout '{layout}', {note}; see 3.)",
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
                    "target": "Start to READY below graphile-worker's start-up",
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
        ("backlog", "3. Backlog growth", _backlog_md),
        ("cpu", "4. CPU-heavy handlers", _cpu_md),
        ("memory", "5. Memory", _memory_md),
        ("startstop", "6. Start and stop", _startstop_md),
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
        "graphile-worker's perfTest does. CPU is the daemon's whole process tree (wait4).",
        "",
        "| system | jobs | jobs/s | seconds | jobs/s w/o start-up | daemon CPU ms / 1000 jobs "
        "| empty-queue run (s) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in s["rows"]:
        lines.append(
            f"| {r['system']} | {r['jobs']:,} | {fmt(r['jobs_per_s'])} | {fmt(r['seconds'])} "
            f"| {fmt(r['jobs_per_s_without_startup'])} "
            f"| {fmt(r['daemon_cpu_ms_per_1000_jobs'])} | {fmt(r['empty_queue_seconds'])} |"
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
