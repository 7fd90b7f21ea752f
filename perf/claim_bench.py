"""The claim alone: milliseconds per call, as the supervisor (or a SQL consumer) runs it.

    python perf/claim_bench.py                        # kongtaskd/sql/settle.sql
    python perf/claim_bench.py --sql old.sql --sql kongtaskd/sql/settle.sql --rounds 7
    python perf/claim_bench.py --caller get_job --workload backlog --backlog 1000000
    python perf/claim_bench.py --workload backlog --backlog 1000000 --caps compare

Three workloads (``--workload``):

* ``drain``: ``--jobs`` no-op jobs spread over ``--tasks`` task identifiers (one priority,
  one add_jobs call), then claim ``--size`` and complete the previous claim's jobs in the
  same call until the queue is empty: the supervisor's steady state under load.
* ``idle``: one job is queued before each claim of ``--size``, which also completes the
  previous one: the latency path of an idle daemon.
* ``backlog``: ``idle`` with ``--backlog`` jobs the claim cannot take in front of ours in
  graphile-worker's (priority, run_at) order: ready jobs of another task
  (``--layout ahead``) or more urgent jobs of ours due tomorrow (``--layout later``).

Two callers (``--caller``):

* ``settle`` (default): the supervisor's statement, each ``--sql`` file PREPAREd with the
  supervisor's parameter types and a generic plan;
* ``get_job``: ``kongtaskd_get_job`` as a psql user calls it, one job per call (``--size``
  calls per turn, completions by ``kongtaskd_complete_job`` first), the current function
  against kongtaskd migration 1's version (installed beside it as ``kongtaskd_get_job_m1``).

Each round builds a fresh database (``--dsn`` must be allowed to create databases) and runs
every variant in turn, with ``synchronous_commit = off`` (commits do not wait for the disk);
the report is the median over rounds of each variant's mean (drain) or median (idle,
backlog) time per call. Used for perf/results/analysis.md.

``--caps compare`` (kongtaskd migration 6) runs the settle statement three ways in each
round: ``before`` (migration 3's claim, installed beside the current one, without
migration 6's index of locked jobs: what an uncapped claim cost before caps existed),
``caps off`` (the current claim, every task written with "no cap", as daemons do) and
``caps on`` (every task of ours, and the backlog's task, with a concurrency cap and a
rate that never bind, so the claim does all of a capped claim's work: lock, count,
refill, spend). Results: perf/results/caps.md.

``--queues`` (kongtaskd migration 8) drains named-queue workloads with ``--claimers``
concurrent claimer processes (each its own connection, as separate daemons), comparing
``before`` (migration 6's claim, installed beside the current one as kongtaskd_claim_m6)
with ``current``, each in a fresh database, the order alternating by round (A,B,B,A,...):

* ``none``: ``--jobs`` jobs in no queue (the baseline the others are held against);
* ``distinct``: ``--jobs`` jobs, each in a queue of its own (a queue per entity);
* ``idle``: ``--jobs`` jobs in no queue beside ``--idle`` queue rows whose jobs are done;
* ``hot``: ``--hot`` queues of ``--jobs / --hot`` jobs each, inserted queue by queue (the
  jobs of one queue consecutive in run_at order).

    python perf/claim_bench.py --queues distinct --jobs 100000 --size 100 --claimers 4

Per variant: jobs/s (wall, first claim to drained), claims, jobs per claim, ms per claim,
and PostgreSQL CPU per job (utime+stime of the claimers' backends, from /proc).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import psycopg2
import psycopg2.extensions
from benchlib import Server

from kongtaskd import queries, settle
from kongtaskd.schema.files import bind, load_migrations

Cursor = psycopg2.extensions.cursor
#: One call: complete `done`, claim up to `size` of `tasks`; the ids claimed.
Claim = Callable[[Cursor, list[int], list[int], int], list[int]]

CLAIM_TYPES = f"({', '.join(settle.PARAM_TYPES)})"  # declared once, in kongtaskd/settle.py
POOL = "pool-claim-bench"
DEFAULT_SQL = Path(__file__).resolve().parent.parent / "kongtaskd" / "sql" / "settle.sql"
#: Our tasks are t0..tN; the backlog of another task is this one.
OTHER_TASK = "other"


def prepare_file(cur: Cursor, path: Path, name: str) -> None:
    """PREPARE a statement file with settle.sql's parameters, as ``name``."""
    body = queries.bind_schema(
        queries.expand_includes(path.read_text("utf-8")),
        "graphile_worker",
        cur.connection,
        with_parameters=False,
    )
    cur.execute(f"PREPARE {name} {CLAIM_TYPES} AS {body}")


def settle_claim(cur: Cursor, path: Path, name: str) -> Claim:
    prepare_file(cur, path, name)

    def claim(cur: Cursor, done: list[int], tasks: list[int], size: int) -> list[int]:
        cur.execute(
            f"EXECUTE {name} ({', '.join(['%s'] * 14)})",
            (done, [], [], [], POOL, tasks, None, size, [], [], False, 0, 0, False),
        )
        return [row[1] for row in cur.fetchall() if row[0] == "claimed"]

    return claim


def install_claim_m3(cur: Cursor) -> None:
    """kongtaskd migration 3's kongtaskd_claim (no caps, no pauses), beside the current one."""
    text = load_migrations("kongtaskd")[2].text
    start = text.index("create function {{schema}}.kongtaskd_claim(")
    end = text.index("-- kongtaskd_get_job keeps its signature")
    body = text[start:end].replace("kongtaskd_claim(", "kongtaskd_claim_m3(", 1)
    cur.execute(bind(body, '"graphile_worker"', with_parameters=False))


def write_caps(cur: Cursor, capped: bool) -> None:
    """Every task's caps row, as daemons write them: none, or caps that never bind."""
    cur.execute(
        "insert into graphile_worker._kongtaskd_task_caps"
        " (task_id, concurrency, rate_limit, rate_seconds, tokens, written_by)"
        " select id, %s, %s, %s, coalesce(%s, 0), 'bench' from graphile_worker._private_tasks"
        " on conflict (task_id) do update set concurrency = excluded.concurrency,"
        " rate_limit = excluded.rate_limit, rate_seconds = excluded.rate_seconds,"
        " tokens = excluded.tokens, tokens_at = now()",
        (1_000_000, 1_000_000_000, 1, 1_000_000_000) if capped else (None, None, None, None),
    )


LOCKED_INDEX = (
    "create index if not exists _kongtaskd_jobs_locked on graphile_worker._private_jobs"
    " (task_id) where locked_at is not null"
)


def install_get_job_m1(cur: Cursor) -> None:
    """kongtaskd migration 1's kongtaskd_get_job, beside the current one."""
    text = load_migrations("kongtaskd")[0].text
    start = text.index("create function {{schema}}.kongtaskd_get_job(")
    end = text.index("create function", start + 1)
    body = text[start:end].replace("kongtaskd_get_job(", "kongtaskd_get_job_m1(", 1)
    cur.execute(bind(body, '"graphile_worker"', with_parameters=False))


def get_job_claim(function: str) -> Claim:
    def claim(cur: Cursor, done: list[int], tasks: list[int], size: int) -> list[int]:
        if done:
            cur.execute(
                "select count(graphile_worker.kongtaskd_complete_job(%s, id)) from unnest(%s) id",
                (POOL, done),
            )
        cur.execute(
            "select array(select identifier from graphile_worker._private_tasks"
            " where id = any(%s))",
            (tasks,),
        )
        (identifiers,) = cur.fetchone()
        claimed: list[int] = []
        for _ in range(size):
            cur.execute(f"select (graphile_worker.{function}(%s, %s)).id", (POOL, identifiers))
            (job_id,) = cur.fetchone()
            if job_id is None:
                break
            claimed.append(job_id)
        return claimed

    return claim


def backend_cpu_seconds(cur: Cursor) -> float:
    """CPU time the server process of this connection has used (Linux, same machine).

    Steadier than wall time on a shared machine: waiting for a core, or for the disk, does
    not count."""
    cur.execute("select pg_backend_pid()")
    (pid,) = cur.fetchone()
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_round(
    dsn: str, files: list[Path], args: argparse.Namespace
) -> dict[str, tuple[float, float]]:
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    cur = conn.cursor()
    # The claim's own cost, not the disk's: without this, each call's commit waits for a WAL
    # flush, which on a shared machine varies more than the claim costs.
    cur.execute("SET synchronous_commit = off")
    claims: dict[str, Claim] = {}
    #: Per variant, what to do to the database before it runs (caps comparison).
    setup: dict[str, Callable[[], None]] = {}
    if args.caps == "compare":
        cur.execute("SET plan_cache_mode = force_generic_plan")
        install_claim_m3(cur)
        m3 = Path(f"/tmp/claim_bench_m3_{os.getpid()}.sql")
        text = DEFAULT_SQL.read_text("utf-8")
        m3.write_text(text.replace("kongtaskd_claim(", "kongtaskd_claim_m3("))
        claims["before (migration 3 claim)"] = settle_claim(cur, m3, "c_m3")
        m3.unlink()
        claims["caps off"] = settle_claim(cur, DEFAULT_SQL, "c_off")
        claims["caps on"] = settle_claim(cur, DEFAULT_SQL, "c_on")
        setup["before (migration 3 claim)"] = lambda: cur.execute(
            "drop index graphile_worker._kongtaskd_jobs_locked"
        )
        setup["caps off"] = lambda: (cur.execute(LOCKED_INDEX), write_caps(cur, False))
        setup["caps on"] = lambda: (cur.execute(LOCKED_INDEX), write_caps(cur, True))
    elif args.caller == "settle":
        cur.execute("SET plan_cache_mode = force_generic_plan")  # as the supervisor does
        for n, path in enumerate(files):
            label = path.name if path.name not in claims else str(path)
            claims[label] = settle_claim(cur, path, f"c{n}")
    else:
        install_get_job_m1(cur)
        claims["kongtaskd_get_job (migration 1)"] = get_job_claim("kongtaskd_get_job_m1")
        claims["kongtaskd_get_job (current)"] = get_job_claim("kongtaskd_get_job")
    if args.workload == "backlog":
        add_backlog(cur, args)
    results: dict[str, tuple[float, float]] = {}
    for label, claim in claims.items():
        if label in setup:
            setup[label]()
        cpu = backend_cpu_seconds(cur)
        if args.workload == "drain":
            ms, calls = drain(cur, claim, args)
        else:
            ms, calls = idle(cur, claim, args)
        results[label] = (ms, (backend_cpu_seconds(cur) - cpu) * 1e6 / calls)
    conn.close()
    return results


def our_task_ids(cur: Cursor) -> list[int]:
    cur.execute(
        "select coalesce(array_agg(id), '{}') from graphile_worker._private_tasks"
        " where identifier <> %s",
        (OTHER_TASK,),
    )
    return list(cur.fetchone()[0])


def add_backlog(cur: Cursor, args: argparse.Namespace) -> None:
    """Jobs no claim of ours can take, ahead of ours in (priority, run_at) order."""
    task, priority, run_at = {
        "ahead": (OTHER_TASK, 0, "now() - interval '1 hour'"),
        "later": ("t0", -1, "now() + interval '1 day'"),
    }[args.layout]
    cur.execute(
        "insert into graphile_worker._private_tasks (identifier) values (%s)"
        " on conflict do nothing",
        (task,),
    )
    cur.execute(
        "insert into graphile_worker._private_jobs (task_id, payload, priority, run_at)"
        f" select t.id, '{{}}', %s, {run_at} + n * interval '1 ms'"
        " from graphile_worker._private_tasks t, generate_series(1, %s) n"
        " where t.identifier = %s",
        (priority, args.backlog, task),
    )
    cur.execute("VACUUM ANALYZE graphile_worker._private_jobs")
    # Write the backlog out now: otherwise the checkpoint that the load sets off writes it
    # back while the first variant is measured, whose commits then wait on a busy disk.
    cur.execute("CHECKPOINT")


def drain(cur: Cursor, claim: Claim, args: argparse.Namespace) -> tuple[float, int]:
    """Mean ms per call, and the calls made."""
    cur.execute(
        "select graphile_worker.add_jobs(array("
        " select row('t' || (n %% %s), '{}'::json, null, null, null, null, null, null)"
        "::graphile_worker.job_spec from generate_series(1, %s) as n))",
        (args.tasks, args.jobs),
    )
    cur.execute("VACUUM ANALYZE graphile_worker._private_jobs")
    tasks = our_task_ids(cur)
    done: list[int] = []
    calls = 0
    started = time.perf_counter()
    while True:
        done = claim(cur, done, tasks, args.size)
        calls += 1
        if not done:
            break
    return (time.perf_counter() - started) * 1000 / calls, calls


def idle(cur: Cursor, claim: Claim, args: argparse.Namespace) -> tuple[float, int]:
    """Median ms per call, and the calls made (queueing included in the CPU count)."""
    cur.execute("select graphile_worker.add_job('t0', '{}')")
    tasks = our_task_ids(cur)
    done = claim(cur, [], tasks, args.size)
    times = []
    for _ in range(args.jobs):
        cur.execute("select graphile_worker.add_job('t0', '{}')")
        started = time.perf_counter()
        done = claim(cur, done, tasks, args.size)
        times.append(time.perf_counter() - started)
    claim(cur, done, tasks, 0)
    return statistics.median(times) * 1000, len(times)


QUEUE_WORKLOADS = ("none", "distinct", "idle", "hot")


def install_claim_m6(cur: Cursor) -> None:
    """kongtaskd migration 6's kongtaskd_claim (locks every available queue row), beside."""
    text = load_migrations("kongtaskd")[5].text
    start = text.index("create or replace function {{schema}}.kongtaskd_claim(")
    body = text[start:].replace("kongtaskd_claim(", "kongtaskd_claim_m6(", 1)
    cur.execute(bind(body, '"graphile_worker"', with_parameters=False))


def fill_queues(cur: Cursor, args: argparse.Namespace) -> None:
    """The workload's rows, inserted directly (as add_jobs would leave them)."""
    cur.execute("insert into graphile_worker._private_tasks (identifier) values ('t0')")
    jobs = "graphile_worker._private_jobs (task_id, job_queue_id, payload, run_at)"
    start = "now() - interval '1 hour'"
    if args.queues in ("none", "idle"):
        cur.execute(
            f"insert into {jobs} select t.id, null, '{{}}', {start} + n * interval '1 us'"
            " from graphile_worker._private_tasks t, generate_series(1, %s) n",
            (args.jobs,),
        )
    if args.queues == "idle":
        cur.execute(
            "insert into graphile_worker._private_job_queues (queue_name)"
            " select 'idle-' || n from generate_series(1, %s) n",
            (args.idle,),
        )
    if args.queues in ("distinct", "hot"):
        queues = args.jobs if args.queues == "distinct" else args.hot
        cur.execute(
            "insert into graphile_worker._private_job_queues (queue_name)"
            " select 'q-' || n from generate_series(1, %s) n",
            (queues,),
        )
        # Job n belongs to queue (n - 1) / per_queue: queue by queue in run_at order.
        per_queue = args.jobs // queues
        cur.execute(
            f"insert into {jobs} select t.id, q.id, '{{}}', {start} + n * interval '1 us'"
            " from graphile_worker._private_tasks t, generate_series(0, %s - 1) n"
            " join graphile_worker._private_job_queues q"
            " on q.queue_name = 'q-' || (n / %s + 1)",
            (queues * per_queue, per_queue),
        )
    cur.execute("VACUUM ANALYZE graphile_worker._private_jobs")
    cur.execute("VACUUM ANALYZE graphile_worker._private_job_queues")
    cur.execute("CHECKPOINT")


def backend_cpu(pids: list[int]) -> float:
    """utime+stime seconds of these server processes (Linux, same machine)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def claimer(
    dsn: str, sql_path: Path, size: int, start: object, out: object, pid_out: object
) -> None:
    """One claimer process: claim `size`, complete the previous claim, until drained."""
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute("SET synchronous_commit = off")
    cur.execute("SET plan_cache_mode = force_generic_plan")
    claim_rows: list[int] = []
    claim_ms: list[float] = []
    more_count = 0
    name = "c_q"
    prepare_file(cur, sql_path, name)
    cur.execute("select pg_backend_pid()")
    backend = cur.fetchone()[0]
    pid_out.put(backend)  # type: ignore[attr-defined]
    tasks = our_task_ids(cur)
    start.wait()  # type: ignore[attr-defined]
    cpu = backend_cpu([backend])
    done: list[int] = []
    while True:
        began = time.perf_counter()
        # As many parameters as the statement declares (later ones: off / none).
        params = (done, [], [], [], f"{POOL}-{os.getpid()}", tasks, None, size, [], [], False)
        params += (0, 0, False)[: len(settle.PARAM_TYPES) - len(params)]
        cur.execute(f"EXECUTE {name} ({', '.join(['%s'] * len(params))})", params)
        rows = cur.fetchall()
        claim_ms.append((time.perf_counter() - began) * 1000)
        done = [row[1] for row in rows if row[0] == "claimed"]
        more_count += any(row[0] == "more" for row in rows)
        claim_rows.append(len(done))
        if not done:
            cur.execute("select exists (select from graphile_worker._private_jobs)")
            if not cur.fetchone()[0]:
                break
            time.sleep(0.001)  # others hold the rest: as a daemon would wait for its turn
    # Read before closing: the backend exits with the connection.
    cpu = backend_cpu([backend]) - cpu
    conn.close()
    out.put((claim_rows, claim_ms, more_count, cpu))  # type: ignore[attr-defined]


def queue_variant(server: Server, sql_path: Path, args: argparse.Namespace) -> dict[str, float]:
    """One drain of the queue workload by --claimers processes, in a fresh database."""
    with server.database("kongtaskd") as dsn:
        conn = psycopg2.connect(dsn)
        conn.autocommit = True
        cur = conn.cursor()
        install_claim_m6(cur)
        fill_queues(cur, args)
        ctx = multiprocessing.get_context("fork")
        start, out, pid_out = ctx.Event(), ctx.Queue(), ctx.Queue()
        procs = [
            ctx.Process(target=claimer, args=(dsn, sql_path, args.size, start, out, pid_out))
            for _ in range(args.claimers)
        ]
        for proc in procs:
            proc.start()
        for _ in procs:
            pid_out.get()  # connected and prepared
        began = time.perf_counter()
        start.set()
        results = [out.get() for _ in procs]
        wall = time.perf_counter() - began
        cpu = sum(r[3] for r in results)
        for proc in procs:
            proc.join()
        conn.close()
    rows = [n for r in results for n in r[0]]
    ms = [t for r in results for t in r[1]]
    jobs = sum(rows)
    useful = [n for n in rows if n]
    return {
        "jobs/s": jobs / wall,
        "claims": len(rows),
        "rows/claim": statistics.mean(useful) if useful else 0.0,
        "ms/claim": statistics.mean(ms),
        "more": sum(r[2] for r in results),
        "pg us/job": cpu * 1e6 / max(jobs, 1),
    }


def queue_bench(args: argparse.Namespace) -> None:
    m6 = Path(f"/tmp/claim_bench_m6_{os.getpid()}.sql")
    m6.write_text(DEFAULT_SQL.read_text("utf-8").replace("kongtaskd_claim(", "kongtaskd_claim_m6("))
    variants = {"before (migration 6 claim)": m6, "current": DEFAULT_SQL}
    if args.only:
        variants = {k: v for k, v in variants.items() if k.startswith(args.only)}
    per: dict[str, list[dict[str, float]]] = {label: [] for label in variants}
    server = Server(args.dsn)
    try:
        for round_no in range(args.rounds):
            order = list(variants) if round_no % 2 == 0 else list(reversed(variants))
            for label in order:
                per[label].append(queue_variant(server, variants[label], args))
    finally:
        m6.unlink()
    shape = {"idle": f" idle={args.idle}", "hot": f" hot={args.hot}"}.get(args.queues, "")
    print(
        f"queues {args.queues}: jobs={args.jobs} size={args.size} claimers={args.claimers}"
        f"{shape} rounds={args.rounds} (medians)"
    )
    for label, runs in per.items():
        medians = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
        figures = ", ".join(
            f"{key} {value:.0f}" if key in ("claims", "more") else f"{key} {value:.2f}"
            for key, value in medians.items()
        )
        every = " ".join(f"{run['jobs/s']:.0f}" for run in runs)
        print(f"  {label}: {figures} (jobs/s by round: {every})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sql", type=Path, action="append", help="settle statement file(s)")
    parser.add_argument("--caller", choices=("settle", "get_job"), default="settle")
    parser.add_argument("--workload", choices=("drain", "idle", "backlog"), default="drain")
    parser.add_argument("--jobs", type=int, default=30_000, help="jobs (drain) or claims")
    parser.add_argument("--size", type=int, default=64, help="jobs asked for per claim")
    parser.add_argument("--tasks", type=int, default=1, help="task identifiers (drain)")
    parser.add_argument("--backlog", type=int, default=100_000, help="jobs (backlog)")
    parser.add_argument("--layout", choices=("ahead", "later"), default="ahead")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--caps",
        choices=("as-is", "compare"),
        default="as-is",
        help="compare: before caps / caps off / caps on (settle caller only)",
    )
    parser.add_argument("--queues", choices=QUEUE_WORKLOADS, help="named-queue drain")
    parser.add_argument("--claimers", type=int, default=1, help="concurrent claimers (queues)")
    parser.add_argument("--idle", type=int, default=500_000, help="idle queue rows (idle)")
    parser.add_argument("--hot", type=int, default=1_000, help="queues (hot)")
    parser.add_argument("--only", help="one variant (queues): before / current")
    parser.add_argument("--dsn", default="host=127.0.0.1 port=5432 user=postgres dbname=postgres")
    args = parser.parse_args()
    if args.queues:
        queue_bench(args)
        return
    files = args.sql or [DEFAULT_SQL]
    per_variant: dict[str, list[float]] = {}
    cpu_per_variant: dict[str, list[float]] = {}
    server = Server(args.dsn)
    for _ in range(args.rounds):
        with server.database("kongtaskd") as dsn:  # fresh, migrated, dropped afterwards
            for label, (ms, cpu_us) in run_round(dsn, files, args).items():
                per_variant.setdefault(label, []).append(ms)
                cpu_per_variant.setdefault(label, []).append(cpu_us)
    backlog = f" backlog={args.backlog} layout={args.layout}" if args.workload == "backlog" else ""
    print(
        f"{args.caller} {args.workload}: jobs={args.jobs} size={args.size} tasks={args.tasks}"
        + backlog
    )
    for label, values in per_variant.items():
        runs = " ".join(f"{v:.3f}" for v in values)
        cpu = statistics.median(cpu_per_variant[label])
        print(
            f"  {label}: median {statistics.median(values):.3f} ms per call ({runs});"
            f" server CPU {cpu:.0f} us per call"
        )


if __name__ == "__main__":
    main()
