"""Children through a real PgBouncer (Debian's package, started here on a free port).

* ``connection`` pointing at a pooler in transaction mode (the common first attempt) is
  refused at start with one line saying why and what to set (``child_connection``), also
  with ``--once``: its LISTEN would hear nothing and its PREPAREs would vanish.
* ``child_connection`` through PgBouncer in transaction mode: 8 children on 4 server
  connections run 1,000 jobs whose handlers insert through ``ctx.connection``, each once;
  children queue in PgBouncer, none fails a job.
* PgBouncer dropping a child that waited longer than ``query_wait_timeout``: the child
  reconnects and loads again; the job runs once.
* a ``child_connection`` to another database is refused at start, naming the key.
* through a pooler in session mode a single DSN runs.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import psycopg2
import pytest
from psycopg2.extensions import make_dsn, parse_dsn

from kongtaskd.errors import ExitCode
from tests.support import wait_for
from tests.support.daemon import Daemon, prepare_database, query, write_config
from tests.support.pgbouncer import BINARY, pgbouncer

pytestmark = [
    pytest.mark.skipif(
        not (shutil.which("pgbouncer") or os.path.exists(BINARY)),
        reason="pgbouncer is not installed (.ci/run installs it)",
    ),
    pytest.mark.skipif(
        os.environ.get("KONGTASK_TEST_EMBEDDED") == "1",
        reason="the embedded server listens on a socket only; one PostgreSQL pass suffices",
    ),
]


def refusal(log: str) -> str:
    (line,) = [line for line in log.splitlines() if "NOTIFY sent to this connection" in line]
    return line


@pytest.mark.parametrize("once", [False, True], ids=["run", "once"])
def test_a_transaction_pooler_as_the_connection_is_refused_with_what_to_set(
    once: bool, fresh_dsn: str, tmp_path: Path
) -> None:
    dsn = fresh_dsn
    prepare_database(dsn)
    query(dsn, "select graphile_worker.add_job('remember', '{}'::json)")
    with pgbouncer(dsn, pool_mode="transaction") as pooled:
        config = write_config(tmp_path, str(pooled))
        with Daemon(config, *(["--once"] if once else [])) as daemon:
            code = daemon.wait(timeout=60)
            log = daemon.log()
    assert code == ExitCode.USAGE, log
    line = refusal(log)
    assert "pooler in transaction mode" in line and "`connection`" in line, line
    assert "`child_connection`" in line, line
    assert "prepared statement" not in log, log
    assert query(dsn, "select count(*) from public.kt_runs") == [(0,)]


def jobs_left(dsn: str) -> int:
    return int(query(dsn, "select count(*) from graphile_worker.jobs")[0][0])


def server_connections(monitor: psycopg2.extensions.connection) -> tuple[int, int]:
    """(jobs left, client backends on this database but the monitor's own)."""
    with monitor.cursor() as cur:
        cur.execute(
            "select (select count(*) from graphile_worker.jobs), count(*) "
            "from pg_stat_activity where datname = current_database() "
            "and backend_type = 'client backend' and pid <> pg_backend_pid()"
        )
        left, backends = cur.fetchone()
    return int(left), int(backends)


def test_eight_children_through_four_pooled_server_connections_run_each_job_once(
    fresh_dsn: str, tmp_path: Path
) -> None:
    dsn = fresh_dsn
    prepare_database(dsn)
    count = 1000
    query(
        dsn,
        "select count(graphile_worker.add_job('remember', json_build_object('n', n))) "
        "from generate_series(1, %s) as n",
        (count,),
    )
    with pgbouncer(dsn, pool_mode="transaction", pool_size=4) as pooled:
        config = write_config(tmp_path, dsn, concurrency=8, child_connection=str(pooled))
        with Daemon(config) as daemon:
            daemon.wait_ready()
            # One monitoring connection for the whole run: a connection closed a moment ago
            # can linger in pg_stat_activity while its backend exits, and would be counted.
            monitor = psycopg2.connect(dsn)
            monitor.autocommit = True
            peak = 0

            def drained() -> bool:
                # 8 children and a supervisor, but at most 4 server connections from the
                # pooler and the supervisor's own, once the run is under way (the start-up
                # check's backends may still be exiting at first).
                nonlocal peak
                left, backends = server_connections(monitor)
                if left < count * 9 // 10:
                    peak = max(peak, backends)
                return left == 0

            try:
                wait_for(drained, timeout=180, interval=0.05, what=f"{count} pooled jobs")
            finally:
                monitor.close()
            children = len(daemon.children())
            assert daemon.stop() == 0
            log = daemon.log()
    runs = query(dsn, "select job_id, attempts from public.kt_runs")
    assert len(runs) == count, log
    assert len({job_id for job_id, _ in runs}) == count, "a job ran twice"
    assert {attempts for _, attempts in runs} == {1}, "a job failed an attempt"
    assert children == 8, log
    assert 1 <= peak <= 1 + 4, f"{peak} server connections for 8 children and a supervisor"
    assert "prepared statement" not in log and " ERROR " not in log, log


def test_a_child_dropped_by_query_wait_timeout_loads_again_and_runs_the_job_once(
    fresh_dsn: str, tmp_path: Path
) -> None:
    dsn = fresh_dsn
    prepare_database(dsn)
    with pgbouncer(dsn, pool_size=1, query_wait_timeout=0.5) as pooled:
        config = write_config(tmp_path, dsn, concurrency=1, child_connection=str(pooled))
        with Daemon(config) as daemon:
            daemon.wait_ready()
            # Hold the pooler's one server connection in a transaction, so the child's load
            # waits in PgBouncer's queue until PgBouncer drops it (several times).
            blocker = psycopg2.connect(pooled)
            try:
                with blocker.cursor() as cur:
                    cur.execute("select 1")
                # A small payload: for direct children its row would travel with the
                # dispatch; pooled children always load their rows, so the load (which rides
                # out the drops) is what waits, not the handler's insert (a drop there would
                # cost an attempt: kt_runs would say attempt 2).
                ((job_id,),) = query(
                    dsn, "select id from graphile_worker.add_job('remember', '{}'::json)"
                )
                wait_for(
                    lambda: pooled.log_text().count("closing because: query_wait_timeout") >= 2,
                    timeout=30,
                    what="PgBouncer dropping the waiting child twice",
                )
                assert query(dsn, "select count(*) from public.kt_runs") == [(0,)]
            finally:
                blocker.close()
            wait_for(lambda: jobs_left(dsn) == 0, timeout=60, what=f"job {job_id}")
            assert daemon.stop() == 0
            log = daemon.log()
    assert query(dsn, "select job_id, attempts from public.kt_runs") == [(job_id, 1)], log
    assert "prepared statement" not in log, log


def test_a_child_connection_to_another_database_is_refused_naming_the_key(
    fresh_dsn: str, database_factory, tmp_path: Path
) -> None:
    dsn = fresh_dsn
    prepare_database(dsn)
    other = database_factory()
    config = write_config(tmp_path, dsn, child_connection=other)
    with Daemon(config) as daemon:
        code = daemon.wait(timeout=60)
        log = daemon.log()
    assert code == ExitCode.USAGE, log
    (line,) = [line for line in log.splitlines() if "child_connection:" in line]
    assert "different databases" in line, line


def test_an_unreachable_child_connection_is_refused_naming_the_key(
    fresh_dsn: str, tmp_path: Path
) -> None:
    dsn = fresh_dsn
    prepare_database(dsn)
    params = parse_dsn(dsn)
    params["port"] = "1"  # nothing listens there
    config = write_config(tmp_path, dsn, child_connection=make_dsn(**params))
    with Daemon(config) as daemon:
        code = daemon.wait(timeout=60)
        log = daemon.log()
    assert code != ExitCode.OK, log
    assert any(line.startswith("kongtaskd: child_connection: ") for line in log.splitlines()), log


def test_a_session_pooler_runs_jobs(fresh_dsn: str, tmp_path: Path) -> None:
    dsn = fresh_dsn
    prepare_database(dsn)
    (job,) = query(dsn, "select id from graphile_worker.add_job('noop', '{}'::json)")[0]
    with pgbouncer(dsn, pool_mode="session", pool_size=8) as pooled:
        config = write_config(tmp_path, str(pooled))
        with Daemon(config) as daemon:
            daemon.wait_ready()
            wait_for(lambda: jobs_left(dsn) == 0, timeout=30, what=f"job {job} through the pooler")
            assert daemon.stop() == 0
