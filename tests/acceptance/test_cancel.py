"""Cancelling jobs (issue #16): `kongtaskd jobs cancel` and kongtaskd.cancel_job against real
daemons, real children, real signals and real PostgreSQL.

Nothing here waits on a sleep or asserts a duration: tests wait for rows the handlers
write (``kt_cancel_seen``) and for the job row's final state. The cancel-to-interrupt
latency is printed (``-s`` shows it) for the report, never asserted.
"""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest

import kongtaskd
from kongtaskd.cancel import CancelError
from kongtaskd.errors import ExitCode
from tests.acceptance.test_cli import kongtaskd as run_cli
from tests.acceptance.test_cli_admin import add, job, one_line_error
from tests.fixtures.handlers import CANCEL_SEEN_TABLE
from tests.support import wait_for
from tests.support.daemon import Daemon, prepare_database, query, write_config
from tests.support.graphile import start_graphile

CANCELLED = re.compile(r"^cancelled by (\S+) at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$")


@pytest.fixture(scope="module")
def db(database_factory: Callable[[], str]) -> str:
    dsn = database_factory()
    prepare_database(dsn)
    query(dsn, CANCEL_SEEN_TABLE)
    return dsn


@pytest.fixture()
def clean(db: str) -> str:
    query(
        db,
        "truncate graphile_worker._private_jobs, graphile_worker._private_job_queues, "
        "graphile_worker._kongtaskd_cancels, public.kt_runs, public.kt_cancel_seen",
    )
    return db


@pytest.fixture()
def daemon(clean: str, tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    started: list[Daemon] = []

    def start(**overrides: Any) -> Daemon:
        config = write_config(tmp_path, clean, concurrency=1, **overrides)
        d = Daemon(config)
        started.append(d)
        d.wait_ready()
        return d

    yield start
    for d in started:
        d.close()


def seen(dsn: str, job_id: int) -> list[tuple[str, str | None, Any]]:
    return [
        (row[0], row[1], row[2])
        for row in query(
            dsn,
            "select what, message, at from public.kt_cancel_seen where job_id = %s order by at",
            (job_id,),
        )
    ]


def wait_seen(dsn: str, job_id: int, what: str, timeout: float = 30.0) -> tuple[Any, ...]:
    wait_for(lambda: any(w == what for w, _, _ in seen(dsn, job_id)), timeout=timeout)
    return next(row for row in seen(dsn, job_id) if row[0] == what)


def wait_let_go(dsn: str, job_id: int, timeout: float = 30.0) -> dict[str, Any]:
    """The job's row once no worker holds it any more."""
    wait_for(lambda: (row := job(dsn, job_id)) is not None and row["locked_by"] is None, timeout)
    row = job(dsn, job_id)
    assert row is not None
    return row


def cancel_committed_at(dsn: str, job_id: int, by: str) -> Any:
    """Cancel through the Python API on our own connection; the commit's time (db clock)."""
    conn = psycopg2.connect(dsn)
    try:
        with conn:
            cancelled = kongtaskd.cancel_job(conn, job_id, by=by)
            with conn.cursor() as cur:
                cur.execute("select clock_timestamp()")
                (at,) = cur.fetchone()
        assert cancelled.running and cancelled.interrupted, cancelled
        return at
    finally:
        conn.close()


def assert_cancelled_for_good(row: dict[str, Any], who: str | None = None) -> str:
    assert row["attempts"] >= row["max_attempts"], row  # never claimed again
    match = CANCELLED.match(row["last_error"] or "")
    assert match, row["last_error"]
    if who is not None:
        assert match.group(1) == who
    return str(row["last_error"])


def test_cancel_a_running_job_interrupts_its_handler(
    clean: str, daemon: Callable[..., Daemon]
) -> None:
    d = daemon()
    dsn = clean
    job_id = add(dsn, "cancellable", {"sleep": 60})
    wait_seen(dsn, job_id, "started")
    child = seen(dsn, job_id)[0]
    result = run_cli("jobs", "cancel", "--connection", dsn, str(job_id))
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert f"cancelled job {job_id}: cancelled by " in result.stdout
    assert "which interrupts it now" in result.stdout
    _, message, _ = wait_seen(dsn, job_id, "interrupted")
    row = wait_let_go(dsn, job_id)
    last_error = assert_cancelled_for_good(row)
    assert message == last_error  # the handler's JobInterrupted carries the cancel message
    assert child is not None
    # Not retried: the job stays, failed, and the same child (it lives on) runs the next job.
    follow = add(dsn, "remember")
    wait_for(lambda: query(dsn, "select 1 from public.kt_runs where job_id = %s", (follow,)))
    again = job(dsn, job_id)
    assert again is not None and again["last_error"] == last_error
    assert again["attempts"] == row["attempts"] and again["locked_by"] is None
    assert [w for w, _, _ in seen(dsn, job_id)] == ["started", "interrupted"]
    assert "job interrupted" not in d.log()  # no SIGTERM: the cancel's own path


def test_an_async_handler_is_interrupted_and_the_next_one_runs_on_a_fresh_loop(
    clean: str, daemon: Callable[..., Daemon]
) -> None:
    daemon()
    dsn = clean
    job_id = add(dsn, "cancellable_async", {"sleep": 60})
    wait_seen(dsn, job_id, "started")
    cancel_committed_at(dsn, job_id, "async-test")
    _, message, _ = wait_seen(dsn, job_id, "interrupted")
    assert_cancelled_for_good(wait_let_go(dsn, job_id), "async-test")
    assert message is not None and message.startswith("cancelled by async-test at ")
    follow = add(dsn, "remember_async")
    wait_for(lambda: query(dsn, "select 1 from public.kt_runs where job_id = %s", (follow,)))
    assert [w for w, _, _ in seen(dsn, job_id)] == ["started", "interrupted"]


def test_a_handler_the_cancel_cannot_reach_is_killed_after_the_kill_grace(
    clean: str, daemon: Callable[..., Daemon]
) -> None:
    d = daemon()
    dsn = clean
    job_id = add(dsn, "deaf", {"sleep": 60})
    wait_seen(dsn, job_id, "started")
    cancel_committed_at(dsn, job_id, "kill-test")
    row = wait_let_go(dsn, job_id, timeout=45)  # CHILD_KILL_GRACE (5 s) after the cancel
    assert_cancelled_for_good(row, "kill-test")
    assert [w for w, _, _ in seen(dsn, job_id)] == ["started"]
    assert "was killed by signal SIGKILL while running job" in d.log()
    follow = add(dsn, "remember")  # a new child took its place
    wait_for(lambda: query(dsn, "select 1 from public.kt_runs where job_id = %s", (follow,)))


def test_latency_from_commit_to_interrupt(clean: str, daemon: Callable[..., Daemon]) -> None:
    """Three cancels of running jobs; the latency (database clock) is printed, not asserted."""
    daemon()
    dsn = clean
    latencies = []
    for _ in range(3):
        job_id = add(dsn, "cancellable", {"sleep": 60})
        wait_seen(dsn, job_id, "started")
        committed = cancel_committed_at(dsn, job_id, "latency-test")
        _, _, at = wait_seen(dsn, job_id, "interrupted")
        latencies.append((at - committed).total_seconds())
        assert_cancelled_for_good(wait_let_go(dsn, job_id), "latency-test")
    print(
        f"\ncancel commit -> JobInterrupted recorded: {[f'{s * 1000:.0f} ms' for s in latencies]}"
    )


def test_ctx_cancelled_with_a_grace_and_a_handler_that_returns(
    clean: str, daemon: Callable[..., Daemon]
) -> None:
    daemon(cancel_grace=30)
    dsn = clean
    job_id = add(dsn, "polite")
    wait_seen(dsn, job_id, "started")
    cancel_committed_at(dsn, job_id, "grace-test")
    wait_seen(dsn, job_id, "saw cancelled")
    row = wait_let_go(dsn, job_id)
    assert_cancelled_for_good(row, "grace-test")  # it returned, and still failed for good
    assert [w for w, _, _ in seen(dsn, job_id)] == ["started", "saw cancelled"]
    assert not query(dsn, "select 1 from public.kt_runs where job_id = %s", (job_id,))


def test_a_reconnecting_daemon_still_acts_on_the_cancel(
    clean: str, daemon: Callable[..., Daemon]
) -> None:
    """The cancel commits while the daemon's supervisor has no connection (so no LISTEN and
    the NOTIFY is lost); checked in the cancel's own transaction, retried if it reconnected
    too fast. It reads the record once it is back."""
    d = daemon()
    dsn = clean
    job_id = add(dsn, "cancellable", {"sleep": 60})
    wait_seen(dsn, job_id, "started")
    supervisors = (
        "select pid from pg_stat_activity where datname = current_database() "
        "and application_name = 'kongtaskd supervisor'"
    )
    conn = psycopg2.connect(dsn)
    try:
        for _attempt in range(50):
            with conn.cursor() as cur:
                # Signalled, not waited for by pg_terminate_backend's timeout: that waits in
                # steps of 100 ms, longer than the supervisor's first reconnect back-off.
                cur.execute(f"select array_agg(pid) from ({supervisors}) as s")
                (ended,) = cur.fetchone()
                cur.execute(
                    "select pg_terminate_backend(pid) from unnest(%s::int[]) as pid", (ended,)
                )
                for _ in range(2000):
                    # pg_stat_activity is read once per transaction unless told otherwise.
                    cur.execute(
                        "select pg_stat_clear_snapshot();"
                        " select count(*) from pg_stat_activity where pid = any(%s::int[])",
                        (ended,),
                    )
                    if cur.fetchone()[0] == 0:
                        break
                    time.sleep(0.001)
                kongtaskd.cancel_job(conn, job_id, by="reconnect-test")
                cur.execute(
                    f"select pg_stat_clear_snapshot(); select count(*) from ({supervisors}) as s"
                )
                (listening,) = cur.fetchone()
            if listening == 0:
                conn.commit()
                break
            conn.rollback()
        else:
            pytest.fail("the supervisor reconnected before every attempt's commit")
    finally:
        conn.close()
    wait_seen(dsn, job_id, "interrupted")
    assert_cancelled_for_good(wait_let_go(dsn, job_id), "reconnect-test")
    wait_for(lambda: "database connection re-established" in d.log())


def test_cancel_a_queued_job_then_retry_and_remove(clean: str) -> None:
    dsn = clean
    job_id = add(dsn, "remember", run_at="2099-01-01T00:00:00Z")
    before = job(dsn, job_id)
    assert before is not None
    result = run_cli("jobs", "cancel", "--connection", dsn, str(job_id))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"cancelled job {job_id}: cancelled by ")
    row = job(dsn, job_id)
    assert row is not None
    assert_cancelled_for_good(row)
    assert row["run_at"] == before["run_at"] and row["locked_by"] is None
    assert not query(dsn, "select 1 from graphile_worker._kongtaskd_cancels")  # no record
    # `jobs list` shows it failed, `jobs retry` revives it, `jobs remove` deletes it.
    listed = run_cli("jobs", "list", "--connection", dsn, "--failed")
    assert str(job_id) in listed.stdout and "cancelled by" in listed.stdout
    assert run_cli("jobs", "retry", "--connection", dsn, str(job_id)).returncode == 0
    revived = job(dsn, job_id)
    assert revived is not None and revived["attempts"] == 0
    assert run_cli("jobs", "remove", "--connection", dsn, str(job_id)).returncode == 0
    assert job(dsn, job_id) is None


def test_bad_input(clean: str) -> None:
    dsn = clean
    good = add(dsn, "remember", run_at="2099-01-01T00:00:00Z")
    failed = add(dsn, "remember", run_at="2099-01-01T00:00:00Z")
    query(
        dsn,
        "update graphile_worker._private_jobs set attempts = max_attempts, "
        "last_error = 'boom' where id = %s",
        (failed,),
    )
    # Unknown id (also: a job that just finished is gone) and already permanently failed:
    # one line naming them, exit 1, the good id still cancelled, the failed one unchanged.
    result = run_cli("jobs", "cancel", "--connection", dsn, str(good), "999999", str(failed))
    line = one_line_error(result, ExitCode.FAILURE)
    assert "job 999999 does not exist" in line
    assert f"job {failed} is already permanently failed, not cancelled" in line
    assert result.stdout.startswith(f"cancelled job {good}: ")
    failed_row = job(dsn, failed)
    assert failed_row is not None and failed_row["last_error"] == "boom"
    # Not a job id at all: a usage error before any connection.
    assert "ID" in one_line_error(run_cli("jobs", "cancel", "--connection", dsn, "x1"), 2)
    # The API: one clear exception naming the id; bad arguments are ValueErrors.
    with pytest.raises(CancelError, match=r"job 999999 does not exist"):
        kongtaskd.cancel_job(dsn, 999999)
    with pytest.raises(CancelError, match=rf"job {failed} is already permanently failed"):
        kongtaskd.cancel_job(dsn, failed)
    with pytest.raises(ValueError, match="positive integers"):
        kongtaskd.cancel_job(dsn, 0)
    with pytest.raises(ValueError, match="non-empty string"):
        kongtaskd.cancel_job(dsn, good, by=" ")


GATED_FAILURE = """\
const fs = require("fs");
module.exports = async (payload) => {
  while (!fs.existsSync(payload.gate)) {
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  throw new Error("boom from graphile-worker");
};
"""


@pytest.mark.interop
def test_a_job_a_graphile_worker_holds_is_failed_for_good_when_its_worker_fails_it(
    clean: str, tmp_path: Path
) -> None:
    dsn = clean
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "gated.js").write_text(GATED_FAILURE)
    (tmp_path / "package.json").write_text('{"type": "commonjs"}')
    gate = tmp_path / "gate"
    job_id = add(dsn, "gated", {"gate": str(gate)})
    worker = start_graphile(["--jobs", "1"], dsn, cwd=tmp_path)
    try:

        def locked_by() -> str | None:
            if worker.poll() is not None:
                raise AssertionError(f"graphile-worker exited: {worker.communicate()}")
            row = job(dsn, job_id)
            return row["locked_by"] if row else None

        holder = wait_for(locked_by, timeout=30, what="graphile-worker to claim the job")
        result = run_cli("jobs", "cancel", "--connection", dsn, str(job_id))
        assert result.returncode == 0, result.stderr
        assert f"it is held by {holder}" in result.stdout and "is not interrupted" in result.stdout
        gate.write_text("")  # now its worker fails it, with its own error and back-off
        row = wait_let_go(dsn, job_id)
        assert_cancelled_for_good(row)  # the cancel's message, not "boom", and no retry
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.communicate(timeout=30)
