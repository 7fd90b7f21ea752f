"""Dashboard page render times at 10k and 1M jobs: ``python perf/web_bench.py``.

Loads a realistic mix of jobs (:func:`load_jobs`: 20 tasks; 80 % ready, 10 % scheduled,
5 % retrying, 4 % permanently failed, 0.1 % running; a tenth in 2,000 named queues) with
``generate_series`` straight into graphile-worker's tables, once per size into a template
database, then times every page of a real ``kongtaskd web`` process against a clone
(``CREATE DATABASE ... TEMPLATE``). The cache is set to a millisecond so every request
runs its queries: these are the cold times one viewer per refresh interval pays. Writes
``perf/results/web.md`` and ``web.json``. The 1M test module (tests/acceptance/
test_web_million.py) uses the same loader.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg2
import yaml
from psycopg2 import sql
from psycopg2.extensions import make_dsn, parse_dsn

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "perf" / "results"

#: Pages timed, with a filter each that a bounded query must serve.
PAGES = (
    "/",
    "/jobs",
    "/jobs?task=t07",
    "/jobs?state=failed",
    "/jobs?task=t03&state=retrying&sort=attempts",
    "/jobs?q=timed+out",
    "/jobs?queue=q0042",
    "/jobs/{job}",
    "/daemons",
    "/queues",
    "/queues?held=1",
    "/cron",
)

LOAD_SQL = """
insert into graphile_worker._private_tasks (identifier)
  select 't' || lpad(n::text, 2, '0') from generate_series(0, 19) as n
  on conflict do nothing;
insert into graphile_worker._private_job_queues (queue_name)
  select 'q' || lpad(n::text, 4, '0') from generate_series(0, 1999) as n
  on conflict do nothing;
insert into graphile_worker._kongtaskd_heartbeats
  (pool_id, hostname, pid, version, concurrency, busy, jobs_done)
  values ('pool-webbench000000000001', 'bench-host', 4242, 'bench', 8, 1, 123456)
  on conflict do nothing;
insert into graphile_worker._private_jobs
  (task_id, job_queue_id, payload, priority, run_at, attempts, max_attempts, last_error,
   key, locked_at, locked_by)
select
  (select id from graphile_worker._private_tasks
   where identifier = 't' || lpad((n %% 20)::text, 2, '0')),
  case when n %% 10 = 0 then
    (select id from graphile_worker._private_job_queues
     where queue_name = 'q' || lpad(((n / 10) %% 2000)::text, 4, '0'))
  end,
  json_build_object('n', n, 'customer', 'c-' || (n %% 977)),
  (n %% 3) - 1,
  case
    when n %% 100 between 80 and 94 then now() + ((n %% 600) || ' seconds')::interval
    else now() - ((n %% 86400) || ' seconds')::interval
  end,
  case when n %% 100 between 90 and 94 then 2 when n %% 100 between 95 and 98 then 25 else 0 end,
  25,
  case when n %% 100 between 90 and 98 then
    'ConnectionError: partner API timed out after 30 s (job ' || n || E')\n(stack elided)'
  end,
  case when n %% 100 = 7 then 'key-' || n end,
  case when n %% 1000 = 999 then now() - interval '5 seconds' end,
  case when n %% 1000 = 999 then 'pool-webbench000000000001' end
from generate_series(1, %(total)s) as n;
"""


def load_jobs(dsn: str, total: int) -> None:
    """Migrate ``dsn`` and load ``total`` jobs of the mix above; VACUUM ANALYZE after."""
    from kongtaskd.schema import migrate

    conn = psycopg2.connect(dsn)
    try:
        migrate(conn)
        with conn, conn.cursor() as cur:
            cur.execute(LOAD_SQL, {"total": total})
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("VACUUM ANALYZE graphile_worker._private_jobs")
            cur.execute("VACUUM ANALYZE graphile_worker._private_job_queues")
    finally:
        conn.close()


def _admin(admin_dsn: str, statement: sql.Composable) -> None:
    conn = psycopg2.connect(admin_dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(statement)
    finally:
        conn.close()


def _with_db(admin_dsn: str, name: str) -> str:
    params = parse_dsn(admin_dsn)
    params["dbname"] = name
    return make_dsn(**params)


def template(admin_dsn: str, total: int, name: str) -> str:
    """A template database named ``name`` holding ``total`` jobs (made now)."""
    _admin(
        admin_dsn, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
    )
    _admin(admin_dsn, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = _with_db(admin_dsn, name)
    load_jobs(dsn, total)
    return dsn


def clone(admin_dsn: str, source: str, name: str) -> str:
    _admin(
        admin_dsn,
        sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
            sql.Identifier(name), sql.Identifier(source)
        ),
    )
    return _with_db(admin_dsn, name)


def drop(admin_dsn: str, name: str) -> None:
    _admin(
        admin_dsn, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(port: int, path: str) -> tuple[int, float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    started = time.perf_counter()
    conn.request("GET", path)
    response = conn.getresponse()
    response.read()
    elapsed = (time.perf_counter() - started) * 1000
    conn.close()
    return response.status, elapsed


def time_pages(dsn: str, *, repeats: int = 5) -> dict[str, dict[str, float]]:
    """Start ``kongtaskd web`` on ``dsn`` (cache of 1 ms) and time each page."""
    job = psycopg2.connect(dsn)
    with job, job.cursor() as cur:
        cur.execute(
            "select id from graphile_worker._private_jobs where last_error is not null "
            "order by id desc limit 1"
        )
        row = cur.fetchone()
    job.close()
    job_id = row[0] if row else 1
    directory = Path(tempfile.mkdtemp(prefix="kt-webbench-"))
    config = directory / "kongtask.yaml"
    config.write_text(
        yaml.safe_dump({"connection": dsn, "web": {"refresh": 0.001}, "log": {"level": "warning"}})
    )
    port = _free_port()
    environ = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "kongtaskd", "-c", str(config), "web", "--port", str(port)],
        env=environ,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                _get(port, "/static/style.css")
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("kongtaskd web did not start") from None
                time.sleep(0.1)
        found: dict[str, dict[str, float]] = {}
        for page in PAGES:
            path = page.format(job=job_id)
            status, _ = _get(port, path)  # warm PostgreSQL's buffers and the plan
            times = []
            for _ in range(repeats):
                status, elapsed = _get(port, path)
                if status >= 500:
                    raise RuntimeError(f"{path}: HTTP {status}")
                times.append(elapsed)
            found[page] = {
                "median_ms": round(statistics.median(times), 1),
                "max_ms": round(max(times), 1),
                "status": status,
            }
        return found
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--admin-dsn", default="host=127.0.0.1 port=5432 user=postgres dbname=postgres"
    )
    parser.add_argument("--sizes", default="10000,1000000")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    report: dict[str, object] = {"pages": {}}
    for size in (int(s) for s in args.sizes.split(",")):
        name = f"kt_webbench_{size}"
        started = time.perf_counter()
        dsn = template(args.admin_dsn, size, name)
        load_seconds = time.perf_counter() - started
        try:
            report["pages"][str(size)] = time_pages(dsn, repeats=args.repeats)  # type: ignore[index]
            report[f"load_seconds_{size}"] = round(load_seconds, 1)
        finally:
            drop(args.admin_dsn, name)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "web.json").write_text(json.dumps(report, indent=2) + "\n")
    sizes = list(report["pages"])  # type: ignore[arg-type]
    lines = [
        "# Dashboard page render times",
        "",
        "`python perf/web_bench.py` on this machine (2 cores, PostgreSQL 15): each page's",
        "queries run every request (cache 1 ms); median and max of "
        f"{args.repeats} requests after one warm-up, in ms, server side plus HTTP on loopback.",
        "Target: every page <= 200 ms at 1M jobs.",
        "",
        "| page | " + " | ".join(f"{int(s):,} jobs median / max" for s in sizes) + " |",
        "|---|" + "---|" * len(sizes),
    ]
    for page in PAGES:
        cells = [
            f"{report['pages'][s][page]['median_ms']} / {report['pages'][s][page]['max_ms']}"  # type: ignore[index]
            for s in sizes
        ]
        lines.append(f"| `{page}` | " + " | ".join(cells) + " |")
    (RESULTS / "web.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
