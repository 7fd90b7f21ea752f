"""A daemon whose connection is a pooler in transaction mode (the common first attempt with
PgBouncer) is refused at start with one line saying why and what to set: its LISTEN would
hear nothing. Through a pooler in session mode it runs. A real PgBouncer, started here."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

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


def test_a_transaction_pooler_as_the_connection_is_refused_with_what_to_set(
    fresh_dsn: str, tmp_path: Path
) -> None:
    dsn = fresh_dsn
    prepare_database(dsn)
    with pgbouncer(dsn, pool_mode="transaction") as pooled:
        config = write_config(tmp_path, pooled)
        with Daemon(config) as daemon:
            code = daemon.wait(timeout=60)
            log = daemon.log()
    assert code == ExitCode.USAGE, log
    (line,) = [line for line in log.splitlines() if "NOTIFY sent to this connection" in line]
    assert "pooler in transaction mode" in line and "`connection`" in line, line


def jobs_left(dsn: str) -> int:
    return int(query(dsn, "select count(*) from graphile_worker.jobs")[0][0])


def test_a_session_pooler_runs_jobs(fresh_dsn: str, tmp_path: Path) -> None:
    dsn = fresh_dsn
    prepare_database(dsn)
    (job,) = query(dsn, "select id from graphile_worker.add_job('noop', '{}'::json)")[0]
    with pgbouncer(dsn, pool_mode="session", pool_size=8) as pooled:
        config = write_config(tmp_path, pooled)
        with Daemon(config) as daemon:
            daemon.wait_ready()
            wait_for(lambda: jobs_left(dsn) == 0, timeout=30, what=f"job {job} through the pooler")
            assert daemon.stop() == 0
