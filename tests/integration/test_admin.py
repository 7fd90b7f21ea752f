"""kongtaskd.admin against a real PostgreSQL: jobs list/retry/fail/remove/reschedule, status,
cleanup, and the files `init` writes.

One migrated database serves the module; every test starts from empty queue tables.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.extensions
import pytest
import yaml

from kongtaskd import add_job, admin, starter
from kongtaskd.config import KEYS, Section, load_config
from kongtaskd.errors import ConfigError, DatabaseError
from kongtaskd.queries import source
from kongtaskd.schema import migrate

S = "graphile_worker"
POOL = "pool-0123456789abcdef01"
OTHER = "pool-fedcba9876543210fe"


@pytest.fixture(scope="module")
def queue_dsn(dsn: str) -> str:
    conn = psycopg2.connect(dsn)
    try:
        migrate(conn, S)
    finally:
        conn.close()
    return dsn


@pytest.fixture()
def conn(queue_dsn: str) -> Iterator[psycopg2.extensions.connection]:
    """A connection to empty queue tables."""
    connection = psycopg2.connect(queue_dsn)
    with connection, connection.cursor() as cur:
        cur.execute(
            "truncate graphile_worker._private_jobs, graphile_worker._private_job_queues, "
            "graphile_worker._private_tasks, graphile_worker._kongtaskd_heartbeats"
        )
    yield connection
    connection.close()


def run(conn: psycopg2.extensions.connection, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with conn, conn.cursor() as cur:
        cur.execute(query, params)
        return cur.fetchall() if cur.description else []


def add(conn: psycopg2.extensions.connection, task: str = "t", **options: Any) -> int:
    with conn:
        return add_job(conn, task, options.pop("payload", None), **options).id


def set_job(conn: psycopg2.extensions.connection, job_id: int, assignments: str) -> None:
    """Put a job in a state by hand (tests only; assignments are literals of the test)."""
    run(conn, f"update graphile_worker._private_jobs set {assignments} where id = %s", job_id)


def lock(
    conn: psycopg2.extensions.connection, job_id: int, by: str = POOL, age: str = "1 second"
) -> None:
    run(
        conn,
        "update graphile_worker._private_jobs set locked_by = %s, locked_at = now() - %s::interval "
        "where id = %s",
        by,
        age,
        job_id,
    )


def beat(
    conn: psycopg2.extensions.connection,
    pool_id: str = POOL,
    *,
    age: str = "1 second",
    busy: int = 1,
    concurrency: int = 4,
) -> None:
    run(
        conn,
        "insert into graphile_worker._kongtaskd_heartbeats (pool_id, hostname, pid, version, "
        "concurrency, busy, jobs_done, started_at, last_beat_at) values "
        "(%s, 'host-a', 4242, '0.1.0', %s, %s, 17, now() - interval '1 hour', "
        "now() - %s::interval)",
        pool_id,
        concurrency,
        busy,
        age,
    )


def row_of(conn: psycopg2.extensions.connection, job_id: int) -> dict[str, Any] | None:
    with conn, conn.cursor() as cur:
        cur.execute(
            "select *, run_at <= now() as due from graphile_worker._private_jobs where id = %s",
            (job_id,),
        )
        found = cur.fetchone()
        names = [column.name for column in cur.description or ()]
    return dict(zip(names, found, strict=True)) if found else None


# --- jobs list ------------------------------------------------------------------------------


def test_list_derives_each_state(conn: psycopg2.extensions.connection) -> None:
    ready = add(conn, "a")
    scheduled = add(conn, "a", run_at=dt.datetime(2031, 1, 1, tzinfo=dt.timezone.utc))
    retrying = add(conn, "b", queue_name="q")
    set_job(conn, retrying, "attempts = 2, last_error = 'Boom: once'")
    failed = add(conn, "b", max_attempts=3)
    set_job(conn, failed, "attempts = 3, last_error = 'Boom: thrice'")
    locked = add(conn, "c")
    lock(conn, locked)

    listing = admin.list_jobs(conn, S)
    states = {job.id: job.state for job in listing.jobs}
    assert states == {
        ready: "ready",
        scheduled: "scheduled",
        retrying: "retrying",
        failed: "failed",
        locked: "locked",
    }
    assert [job.id for job in listing.jobs] == sorted(states)  # oldest first
    assert listing.total == 5
    assert all(job.payload is None for job in listing.jobs)  # not asked for


def test_list_filters_limit_and_payload(conn: psycopg2.extensions.connection) -> None:
    first = add(conn, "mail", payload={"to": "x"}, queue_name="q1", flags=["slow"])
    add(conn, "mail", queue_name="q2")
    other = add(conn, "report", run_at=dt.datetime(2031, 1, 1, tzinfo=dt.timezone.utc))
    retrying = add(conn, "report")
    set_job(conn, retrying, "attempts = 1, last_error = 'x', run_at = now() + interval '1 h'")
    failed = add(conn, "mail", max_attempts=1)
    set_job(conn, failed, "attempts = 1, last_error = 'y'")
    locked = add(conn, "mail")
    lock(conn, locked)

    def ids(**filters: Any) -> list[int]:
        return [job.id for job in admin.list_jobs(conn, S, **filters).jobs]

    assert ids(task="report") == [other, retrying]
    assert ids(queue="q1") == [first]
    assert ids(task="mail", queue="q2") == [first + 1]
    assert ids(only="failed") == [retrying, failed]
    assert ids(only="locked") == [locked]
    assert ids(only="scheduled") == [other, retrying]
    assert ids(task="nothing") == []

    limited = admin.list_jobs(conn, S, limit=2)
    assert [job.id for job in limited.jobs] == [first, first + 1]
    assert limited.total == 6
    assert len(admin.list_jobs(conn, S, limit=None).jobs) == 6

    (job,) = admin.list_jobs(conn, S, queue="q1", with_payload=True).jobs
    assert job.payload == {"to": "x"}
    assert job.flags == ["slow"]
    with pytest.raises(ValueError, match="only must be one of"):
        admin.list_jobs(conn, S, only="done")


def test_list_table_is_aligned_one_line_per_job_in_utc(
    conn: psycopg2.extensions.connection,
) -> None:
    add(
        conn, "short", run_at=dt.datetime(2031, 1, 1, 12, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    )
    failing = add(conn, "a_much_longer_task_name", queue_name="queue\nwith newline")
    long_error = "ValueError: " + "x" * 200 + "\n\nTraceback (most recent call last):\n  ..."
    set_job(conn, failing, f"attempts = 1, last_error = '{long_error}'")

    listing = admin.list_jobs(conn, S)
    text = admin.format_jobs(listing)
    lines = text.splitlines()
    assert len(lines) == 3
    header = lines[0]
    for column in ("TASK", "QUEUE", "STATE", "RUN AT", "LAST ERROR"):
        start = header.index(column)
        for line in lines[1:]:
            # Every cell of a column starts where its header does (left-aligned columns);
            # trailing empty cells are cut.
            assert len(line) <= start or line[start - 2 : start] == "  ", (column, line)
    assert "2031-01-01T10:00:00Z" in text
    assert "queue with newline" in text
    error_cell = lines[2][header.index("LAST ERROR") :]
    assert error_cell.startswith("ValueError: xxx") and error_cell.endswith("...")
    assert len(error_cell) == admin.ERROR_COLUMN_WIDTH

    assert admin.format_jobs(admin.list_jobs(conn, S, task="none")) == "no jobs match"
    more = admin.format_jobs(admin.list_jobs(conn, S, limit=1))
    assert more.splitlines()[-1].startswith("(showing 1 of 2 jobs")


def test_json_stream_is_the_array_to_json_writes(conn: psycopg2.extensions.connection) -> None:
    empty = io.StringIO()
    assert admin.write_jobs_json(conn, S, empty) == admin.Written(0, 0)
    assert empty.getvalue() == admin.to_json([]) + "\n"
    ids = [add(conn, "mail", payload={"n": n, "text": 'ünï\n"q"'}) for n in range(5)]
    set_job(conn, ids[1], "attempts = 1, last_error = E'Boom\\nTraceback'")

    # A batch of 2 crosses batch boundaries twice; the text is the one to_json makes.
    out = io.StringIO()
    assert admin.write_jobs_json(conn, S, out, batch=2) == admin.Written(5, 5)
    listed = admin.list_jobs(conn, S, limit=None, with_payload=True)
    assert out.getvalue() == admin.to_json(listed.jobs) + "\n"
    assert [job["id"] for job in json.loads(out.getvalue())] == ids

    capped = io.StringIO()
    written = admin.write_jobs_json(conn, S, capped, limit=3, batch=2)
    assert written == admin.Written(3, 5) and written.capped
    assert [job["id"] for job in json.loads(capped.getvalue())] == ids[:3]
    exact = admin.write_jobs_json(conn, S, io.StringIO(), limit=5)
    assert exact == admin.Written(5, 5) and not exact.capped
    only_failed = io.StringIO()
    assert admin.write_jobs_json(conn, S, only_failed, only="failed") == admin.Written(1, 1)


def test_list_and_count_statements_filter_alike() -> None:
    """admin_count_jobs.sql counts what admin_list_jobs.sql lists: same where clause."""

    def where(name: str) -> str:
        text = source(name)
        body = text[text.index("\nwhere ") :]
        return body.split("\norder by")[0].strip()

    assert where("admin_list_jobs") == where("admin_count_jobs")


def test_list_json_round_trips(conn: psycopg2.extensions.connection) -> None:
    job_id = add(conn, "mail", payload={"n": [1, 2]}, job_key="k1")
    listing = admin.list_jobs(conn, S, with_payload=True)
    (parsed,) = json.loads(admin.to_json(listing.jobs))
    assert parsed["id"] == job_id
    assert parsed["payload"] == {"n": [1, 2]}
    assert parsed["key"] == "k1"
    assert parsed["state"] == "ready"
    moment = dt.datetime.fromisoformat(parsed["run_at"])
    assert moment.utcoffset() == dt.timedelta(0)
    assert moment == listing.jobs[0].run_at


# --- jobs retry / fail / remove / reschedule ------------------------------------------------


def test_retry_makes_a_permanently_failed_job_runnable(
    conn: psycopg2.extensions.connection,
) -> None:
    job_id = add(
        conn, "mail", max_attempts=3, run_at=dt.datetime(2031, 1, 1, tzinfo=dt.timezone.utc)
    )
    set_job(conn, job_id, "attempts = 3, last_error = 'SMTPError: refused'")

    result = admin.retry_jobs(conn, S, [job_id])

    assert result.changed == [job_id] and result.complete
    assert result.summary() == f"retried job {job_id}"
    assert result.problems() is None
    row = row_of(conn, job_id)
    assert row is not None
    assert (row["attempts"], row["max_attempts"], row["is_available"], row["due"]) == (
        0,
        3,
        True,
        True,
    )
    assert row["last_error"] == "SMTPError: refused"  # kept as the record of the failure
    # Claimable as a worker claims: available, due, unlocked.
    claimed = run(conn, "select (graphile_worker.kongtaskd_get_job(%s, array['mail'])).id", POOL)
    assert claimed == [(job_id,)]


def test_action_reports_missing_and_running_ids_after_doing_the_rest(
    conn: psycopg2.extensions.connection,
) -> None:
    done = add(conn)
    running = add(conn)
    lock(conn, running)
    result = admin.retry_jobs(conn, S, [done, 9_999_998, running, 9_999_999, done])
    assert result.changed == [done]
    assert result.missing == [9_999_998, 9_999_999]
    assert list(result.running) == [running]
    problems = result.problems()
    assert problems is not None
    assert problems.startswith("jobs 9999998, 9999999 do not exist; ")
    assert f"job {running} is running (locked by {POOL} since " in problems
    assert problems.endswith("), not retried")
    assert "\n" not in problems
    single = admin.remove_jobs(conn, S, [9_999_997])
    assert single.problems() == "job 9999997 does not exist"
    assert single.summary() is None


def test_jobs_of_a_live_kongtaskd_pool_are_never_touched_however_old_the_lock(
    conn: psycopg2.extensions.connection,
) -> None:
    long_job = add(conn)
    lock(conn, long_job, POOL, age="5 hours")
    beat(conn, POOL)  # alive
    abandoned = add(conn)
    lock(conn, abandoned, OTHER, age="5 hours")  # no heartbeat: graphile-worker's 4 h rule

    result = admin.retry_jobs(conn, S, [long_job, abandoned], stale_after=60)
    assert list(result.running) == [long_job]
    assert result.changed == [abandoned]
    # reschedule_jobs does not release a stale lock: say so.
    assert list(result.still_locked) == [abandoned]
    summary = result.summary()
    assert summary is not None and "keeps its stale lock by " + OTHER in summary

    # Once the pool's heartbeat is stale, it counts as dead like any other.
    run(
        conn,
        "update graphile_worker._kongtaskd_heartbeats set last_beat_at = now() - interval '2 min'",
    )
    assert admin.fail_jobs(conn, S, [long_job], stale_after=60).changed == [long_job]


def test_fail_remove_and_reschedule(conn: psycopg2.extensions.connection) -> None:
    a, b, c = add(conn), add(conn), add(conn, max_attempts=5)
    assert admin.fail_jobs(conn, S, [a], message="gave up").changed == [a]
    assert admin.fail_jobs(conn, S, [b]).changed == [b]
    row_a, row_b = row_of(conn, a), row_of(conn, b)
    assert row_a is not None and row_b is not None
    assert (row_a["attempts"], row_a["last_error"]) == (25, "gave up")
    assert row_b["last_error"] == "Manually marked as failed"

    assert admin.remove_jobs(conn, S, [a, b]).summary() == f"removed jobs {a}, {b}"
    assert row_of(conn, a) is None and row_of(conn, b) is None

    when = dt.datetime(2031, 3, 4, 5, 6, 7, tzinfo=dt.timezone(dt.timedelta(hours=-3)))
    assert admin.reschedule_jobs(conn, S, [c], run_at=when).changed == [c]
    row = row_of(conn, c)
    assert row is not None and (row["run_at"], row["priority"]) == (when, 0)
    assert admin.reschedule_jobs(conn, S, [c], priority=-7).changed == [c]
    row = row_of(conn, c)
    assert row is not None and (row["run_at"], row["priority"]) == (when, -7)
    with pytest.raises(ValueError, match="timezone-aware"):
        admin.reschedule_jobs(conn, S, [c], run_at=dt.datetime(2031, 1, 1))
    with pytest.raises(ValueError, match="positive integers"):
        admin.remove_jobs(conn, S, [0])


def test_running_job_is_not_removed(conn: psycopg2.extensions.connection) -> None:
    job_id = add(conn)
    lock(conn, job_id, OTHER)
    result = admin.remove_jobs(conn, S, [job_id])
    assert result.changed == [] and list(result.running) == [job_id]
    assert row_of(conn, job_id) is not None


def test_missing_schema_is_one_clear_line(conn: psycopg2.extensions.connection) -> None:
    with pytest.raises(DatabaseError, match=r"^schema nowhere holds no graphile-worker queue \("):
        admin.list_jobs(conn, "nowhere")
    with pytest.raises(DatabaseError, match="run 'kongtaskd migrate' first"):
        admin.retry_jobs(conn, "nowhere", [1])
    with pytest.raises(DatabaseError, match="run 'kongtaskd migrate' first"):
        admin.status(conn, "nowhere")
    # The connection is still usable afterwards (the failed transaction was rolled back).
    assert admin.list_jobs(conn, S).jobs == []


# --- status ---------------------------------------------------------------------------------


def test_status_pools_holders_and_counts(conn: psycopg2.extensions.connection) -> None:
    beat(conn, POOL, busy=1, concurrency=4)
    beat(conn, OTHER, age="10 minutes", busy=2, concurrency=2)
    held = add(conn, "mail", queue_name="q")
    lock(conn, held, POOL)
    run(
        conn,
        "update graphile_worker._private_job_queues set locked_by = %s, locked_at = now()",
        POOL,
    )
    add(conn, "mail", queue_name="q")
    add(conn, "mail", run_at=dt.datetime(2031, 1, 1, tzinfo=dt.timezone.utc))
    graphile_job = add(conn, "report")
    lock(conn, graphile_job, "pool-000000000000000000", age="5 hours")
    failed = add(conn, "report", max_attempts=1)
    set_job(conn, failed, "attempts = 1, last_error = 'x'")

    report = admin.status(conn, S, stale_after=60)

    assert report.heartbeats
    pools = {pool.pool_id: pool for pool in report.pools}
    live, dead = pools[POOL], pools[OTHER]
    assert (live.busy, live.idle, live.concurrency, live.locked_jobs) == (1, 3, 4, 1)
    assert (live.hostname, live.pid, live.version, live.jobs_done) == ("host-a", 4242, "0.1.0", 17)
    assert not live.stale and dead.stale
    assert 3590 < live.uptime_seconds < 3700
    assert 0 < live.seconds_since_beat < 60 < dead.seconds_since_beat
    (holder,) = report.other_lock_holders
    assert (holder.locked_by, holder.jobs, holder.queues, holder.expired) == (
        "pool-000000000000000000",
        1,
        0,
        True,
    )
    tasks = {counts.name: counts for counts in report.tasks}
    assert dataclasses.astuple(tasks["mail"])[1:] == (1, 1, 1, 0, 3)
    assert dataclasses.astuple(tasks["report"])[1:] == (0, 0, 1, 1, 2)
    (queue,) = report.queues
    assert (queue.name, queue.ready, queue.locked, queue.total, queue.locked_by) == (
        "q",
        1,
        1,
        2,
        POOL,
    )
    assert dataclasses.astuple(report.totals)[1:] == (1, 1, 2, 1, 5)

    parsed = json.loads(admin.to_json(report))
    assert {pool["pool_id"] for pool in parsed["pools"]} == {POOL, OTHER}
    assert parsed["totals"]["total"] == 5
    assert dt.datetime.fromisoformat(parsed["now"]).utcoffset() == dt.timedelta(0)

    text = admin.format_status(report)
    assert re.search(rf"^  {POOL}\s+1\s+3\s+\d+\s+1\s+host-a\s+4242\s.*\slive$", text, re.M)
    assert re.search(rf"^  {OTHER}\s.*\sSTALE$", text, re.M)
    assert "  pool-000000000000000000 (no heartbeat: graphile-worker?) holding 1 job since " in text
    assert "total: 1 ready, 1 scheduled, 2 locked, 1 failed" in text


def test_status_without_heartbeat_table(
    database_factory: Callable[[], str],
) -> None:
    """A schema only graphile-worker migrated has no heartbeat table: status still works."""
    dsn = database_factory()
    connection = psycopg2.connect(dsn)
    try:
        migrate(connection, "nobeats")
        run(connection, "drop table nobeats._kongtaskd_heartbeats")
        job_id = add(connection, "t", schema="nobeats")
        run(
            connection,
            "update nobeats._private_jobs set locked_by = %s, locked_at = now()",
            POOL,
        )
        report = admin.status(connection, "nobeats")
        assert not report.heartbeats and report.pools == []
        assert [h.locked_by for h in report.other_lock_holders] == [POOL]
        assert "no heartbeat table" in admin.format_status(report)
        # The job actions work there too (no live-pool check possible, none needed).
        assert list(admin.retry_jobs(connection, "nobeats", [job_id]).running) == [job_id]
    finally:
        connection.close()


def test_status_of_an_empty_queue(conn: psycopg2.extensions.connection) -> None:
    report = admin.status(conn, S)
    assert report.pools == [] and report.tasks == [] and report.queues == []
    text = admin.format_status(report)
    assert "(none)" in text and "(no jobs)" in text


# --- cleanup --------------------------------------------------------------------------------


def test_cleanup_each_kind(conn: psycopg2.extensions.connection) -> None:
    add(conn, "used", queue_name="used_q")
    dead = add(conn, "only_failed", queue_name="failed_q", max_attempts=1)
    set_job(conn, dead, "attempts = 1, last_error = 'x'")
    dead_locked = add(conn, "used", max_attempts=1)
    set_job(conn, dead_locked, "attempts = 1")
    lock(conn, dead_locked, age="5 hours")
    # Lowered max_attempts below attempts: just as permanently failed.
    lowered = add(conn, "used")
    set_job(conn, lowered, "attempts = 4, max_attempts = 3")
    gone = add(conn, "gone", queue_name="gone_q")
    admin.remove_jobs(conn, S, [gone])
    run(
        conn,
        "insert into graphile_worker._private_tasks (identifier) values ('kept'), ('unused')",
    )
    run(
        conn,
        "insert into graphile_worker._private_job_queues (queue_name, locked_by, locked_at) "
        "values ('held_q', %s, now())",
        POOL,
    )

    nothing = admin.cleanup(conn, S)
    assert nothing == admin.CleanupReport(None, None, None)

    report = admin.cleanup(conn, S, permafailed=True)
    assert report == admin.CleanupReport(2, None, None)
    assert row_of(conn, dead) is None and row_of(conn, lowered) is None
    assert row_of(conn, dead_locked) is not None

    report = admin.cleanup(conn, S, tasks=True, keep_tasks=["kept"])
    assert report.task_identifiers == ["gone", "only_failed", "unused"]
    tasks = {r[0] for r in run(conn, "select identifier from graphile_worker._private_tasks")}
    assert tasks == {"used", "kept"}

    report = admin.cleanup(conn, S, queues=True)
    assert report.queues == ["failed_q", "gone_q"]
    queues = {r[0] for r in run(conn, "select queue_name from graphile_worker._private_job_queues")}
    assert queues == {"used_q", "held_q"}

    assert admin.format_cleanup(admin.CleanupReport(1, ["a"], [])) == (
        "deleted 1 permanently failed job\n"
        "deleted 1 unused task identifier: a\n"
        "deleted 0 unused queues"
    )


def test_cleanup_in_one_run_collects_what_failed_jobs_used(
    conn: psycopg2.extensions.connection,
) -> None:
    dead = add(conn, "only_failed", queue_name="failed_q", max_attempts=1)
    set_job(conn, dead, "attempts = 1")
    report = admin.cleanup(conn, S, tasks=True, queues=True, permafailed=True)
    assert report == admin.CleanupReport(1, ["only_failed"], ["failed_q"])


# --- init -----------------------------------------------------------------------------------


def test_starter_config_lists_every_key_with_its_default(tmp_path: Path) -> None:
    text = starter.render_config()
    top = {line.split(":", 1)[0] for line in text.splitlines() if re.match(r"^\w+:", line)}
    assert top == {key.name for key in KEYS}
    for key in KEYS:
        if isinstance(key.type, Section):
            for sub in key.type.keys:
                assert re.search(rf"^(# )?  {sub.name}: ", text, re.M), sub.name
        for word in key.doc.split()[:3]:
            assert word in text
    # Every value is the default, except the two that wire up the example handler.
    path = tmp_path / starter.CONFIG_FILE
    path.write_text(text)
    loaded = load_config(path, environ={})
    defaults = load_config(None, environ={})
    different = {
        field.name
        for field in dataclasses.fields(loaded)
        if getattr(loaded, field.name) != getattr(defaults, field.name)
    }
    assert different == {
        "tasks",
        "python_path",
        "source",
        "base_dir",
        "locations",
        "python_path_where",
    }
    data = yaml.safe_load(text)
    assert data["tasks"] == {starter.EXAMPLE_TASK: f"tasks:{starter.EXAMPLE_TASK}"}


def test_init_writes_a_config_that_loads_and_names_the_handler(tmp_path: Path) -> None:
    target = tmp_path / "new" / "project"
    written = starter.init_project(target)
    assert written == [target / starter.CONFIG_FILE, target / starter.HANDLERS_FILE]
    config = load_config(target / starter.CONFIG_FILE, environ={})
    config.require_tasks()
    assert config.python_path == (str(target),)
    handler = config.tasks[starter.EXAMPLE_TASK].handler
    module, function = handler.split(":")
    assert (target / f"{module}.py").is_file()
    source = (target / starter.HANDLERS_FILE).read_text()
    assert f"def {function}(payload: Any, ctx: Any) -> None:" in source
    compile(source, str(target / starter.HANDLERS_FILE), "exec")


def test_init_never_overwrites(tmp_path: Path) -> None:
    (tmp_path / starter.HANDLERS_FILE).write_text("# mine\n")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(tmp_path / 'tasks.py'))}: already"):
        starter.init_project(tmp_path)
    assert not (tmp_path / starter.CONFIG_FILE).exists()  # nothing written at all
    assert (tmp_path / starter.HANDLERS_FILE).read_text() == "# mine\n"
    a_file = tmp_path / "file"
    a_file.write_text("")
    with pytest.raises(ConfigError, match="not a directory"):
        starter.init_project(a_file)
