"""The enqueue API against a real graphile-worker schema: options, transactions, validation."""

from __future__ import annotations

import datetime as dt
import select
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.extensions
import pytest
from psycopg2 import sql
from psycopg2.extensions import parse_dsn

from kongtaskd import Job, JobSpec, add_job, add_jobs, remove_job
from kongtaskd.dsn import connect
from kongtaskd.enqueue import InvalidJobArgument, InvalidJobArgumentType
from tests.support import wait_for

NODE_CLI = (
    Path(__file__).resolve().parents[1]
    / "interop"
    / "node_modules"
    / "graphile-worker"
    / "dist"
    / "cli.js"
)


def migrate_schema(dsn: str, schema: str = "graphile_worker") -> None:
    """Install the schema with kongtaskd's migrate, or with the real graphile-worker.

    The fallback exists for while kongtaskd.schema was being written; either one yields
    graphile-worker 0.18.0's SQL functions, which is all the enqueue API relies on.
    """
    try:
        from kongtaskd.schema import migrate
    except ImportError:
        if not NODE_CLI.exists() or shutil.which("node") is None:
            pytest.fail("no way to install the schema: run `npm ci --prefix tests/interop`")
        params = parse_dsn(dsn)
        uri = (
            f"postgres://{params.get('user', 'postgres')}@{params.get('host', '127.0.0.1')}:"
            f"{params.get('port', '5432')}/{params['dbname']}"
        )
        subprocess.run(
            ["node", str(NODE_CLI), "--schema-only", "-c", uri, "--schema", schema],
            check=True,
            capture_output=True,
            timeout=60,
        )
        return
    conn = connect(dsn)
    try:
        migrate(conn, schema)
    finally:
        conn.close()


@pytest.fixture(scope="module")
def queue_dsn(dsn: str) -> str:
    """One migrated database for the module; tests use distinct task names and keys."""
    migrate_schema(dsn)
    return dsn


@pytest.fixture()
def conn(queue_dsn: str) -> Iterator[psycopg2.extensions.connection]:
    connection = psycopg2.connect(queue_dsn)
    yield connection
    connection.rollback()
    connection.close()


def fetch(dsn: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    """Run ``query`` on a connection of its own: sees only committed data."""
    with psycopg2.connect(dsn) as other, other.cursor() as cur:
        cur.execute(query, params)
        rows = cur.fetchall()
    other.close()
    return rows


def job_count(dsn: str, task: str) -> int:
    return int(
        fetch(dsn, "select count(*) from graphile_worker.jobs where task_identifier = %s", task)[0][
            0
        ]
    )


def test_defaults(conn: psycopg2.extensions.connection) -> None:
    before = dt.datetime.now(dt.timezone.utc)
    job = add_job(conn, "defaults_task")
    assert isinstance(job, Job)
    assert job.task_identifier == "defaults_task"
    assert job.payload == {}
    assert (job.queue_name, job.key, job.flags, job.last_error) == (None, None, None, None)
    assert (job.priority, job.attempts, job.max_attempts, job.revision) == (0, 0, 25, 0)
    assert job.locked_at is None and job.locked_by is None
    assert before - dt.timedelta(seconds=5) <= job.run_at <= before + dt.timedelta(seconds=5)


def test_every_option_round_trips_into_the_row(
    queue_dsn: str, conn: psycopg2.extensions.connection
) -> None:
    run_at = dt.datetime(2031, 5, 6, 7, 8, 9, 123000, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    payload = {"to": "a@b.example", "n": [1, 2.5, None, True], "ü": "ö"}
    job = add_job(
        conn,
        "all_options",
        payload,
        queue_name="mail",
        run_at=run_at,
        max_attempts=3,
        job_key="all-options-key",
        priority=-5,
        flags=["slow", "smtp"],
    )
    conn.commit()
    assert job.payload == payload
    assert job.queue_name == "mail"
    assert job.run_at == run_at
    assert (job.max_attempts, job.key, job.priority) == (3, "all-options-key", -5)
    assert job.flags == ["slow", "smtp"]
    (row,) = fetch(
        queue_dsn,
        """
        select tasks.identifier, queues.queue_name, jobs.payload, jobs.run_at,
               jobs.max_attempts, jobs.key, jobs.priority, jobs.flags
        from graphile_worker._private_jobs as jobs
        join graphile_worker._private_tasks as tasks on tasks.id = jobs.task_id
        left join graphile_worker._private_job_queues as queues on queues.id = jobs.job_queue_id
        where jobs.id = %s
        """,
        job.id,
    )
    assert row == (
        "all_options",
        "mail",
        payload,
        run_at,
        3,
        "all-options-key",
        -5,
        {"slow": True, "smtp": True},
    )


def test_caller_rollback_means_no_job(queue_dsn: str, conn: psycopg2.extensions.connection) -> None:
    add_job(conn, "rolled_back")
    assert conn.info.transaction_status == psycopg2.extensions.TRANSACTION_STATUS_INTRANS
    conn.rollback()
    assert job_count(queue_dsn, "rolled_back") == 0


def test_caller_commit_makes_the_job_visible(
    queue_dsn: str, conn: psycopg2.extensions.connection
) -> None:
    add_job(conn, "committed")
    # Not committed by add_job: another connection cannot see it yet.
    assert job_count(queue_dsn, "committed") == 0
    conn.commit()
    assert job_count(queue_dsn, "committed") == 1


def test_dsn_opens_commits_and_closes(queue_dsn: str) -> None:
    job = add_job(queue_dsn, "via_dsn", {"x": 1})
    assert job_count(queue_dsn, "via_dsn") == 1
    # The connection it opened is gone again (its application_name identifies it).
    wait_for(
        lambda: (
            not fetch(
                queue_dsn,
                "select 1 from pg_stat_activity where application_name = 'kongtaskd' "
                "and datname = current_database()",
            )
        ),
        timeout=5,
        what="add_job's own connection to close",
    )
    assert job.payload == {"x": 1}


def test_adding_notifies_workers(queue_dsn: str) -> None:
    listener = psycopg2.connect(queue_dsn)
    listener.autocommit = True
    try:
        with listener.cursor() as cur:
            cur.execute('LISTEN "jobs:insert"')
        add_job(queue_dsn, "notified")

        def notified() -> bool:
            if select.select([listener], [], [], 0.05)[0]:
                listener.poll()
            return bool(listener.notifies)

        wait_for(notified, timeout=5, what="a jobs:insert notification")
        assert '"count":1' in listener.notifies[0].payload
    finally:
        listener.close()


def test_job_key_modes(conn: psycopg2.extensions.connection) -> None:
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)
    first = add_job(conn, "keyed", {"v": 1}, job_key="key-modes", run_at=later)
    replaced = add_job(conn, "keyed", {"v": 2}, job_key="key-modes")
    assert replaced.id == first.id
    assert (replaced.payload, replaced.revision) == ({"v": 2}, 1)
    assert replaced.run_at < later
    preserved = add_job(
        conn, "keyed", {"v": 3}, job_key="key-modes", job_key_mode="preserve_run_at", run_at=later
    )
    assert preserved.run_at == replaced.run_at
    assert preserved.payload == {"v": 3}
    deduped = add_job(conn, "keyed", {"v": 4}, job_key="key-modes", job_key_mode="unsafe_dedupe")
    assert deduped.id == first.id
    assert deduped.payload == {"v": 3}
    # As in graphile-worker, a mode without a key is accepted and changes nothing.
    assert add_job(conn, "keyed", job_key_mode="unsafe_dedupe").key is None


def test_add_jobs(queue_dsn: str, conn: psycopg2.extensions.connection) -> None:
    run_at = dt.datetime(2032, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    jobs = add_jobs(
        conn,
        [
            JobSpec("bulk_a", {"n": 1}),
            JobSpec("bulk_b", [1, 2], queue_name="bulk", priority=3, flags=["f"]),
            JobSpec("bulk_a", None, run_at=run_at, max_attempts=2, job_key="bulk-key"),
        ],
    )
    # graphile-worker's add_jobs() returns rows in its join's order, not the specs' order.
    by_task = sorted(jobs, key=lambda job: (job.task_identifier, job.key or ""))
    assert [job.task_identifier for job in by_task] == ["bulk_a", "bulk_a", "bulk_b"]
    plain, keyed, queued = by_task
    assert plain.payload == {"n": 1} and plain.key is None
    assert (keyed.payload, keyed.run_at, keyed.max_attempts) == ({}, run_at, 2)
    assert keyed.key == "bulk-key"
    assert (queued.payload, queued.queue_name, queued.priority) == ([1, 2], "bulk", 3)
    assert queued.flags == ["f"]
    conn.rollback()
    assert job_count(queue_dsn, "bulk_a") == 0
    assert add_jobs(conn, []) == []


def test_add_jobs_preserve_run_at_and_batch_payloads(conn: psycopg2.extensions.connection) -> None:
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1)
    (first,) = add_jobs(conn, [JobSpec("batch", [1], job_key="batch-key", run_at=later)])
    (second,) = add_jobs(
        conn, [JobSpec("batch", [2], job_key="batch-key")], job_key_preserve_run_at=True
    )
    assert second.id == first.id
    assert second.run_at == later
    # graphile-worker's batch jobs: array payloads on one key are concatenated.
    assert second.payload == [1, 2]


def test_add_jobs_via_dsn_commits(queue_dsn: str) -> None:
    add_jobs(queue_dsn, [JobSpec("bulk_dsn"), JobSpec("bulk_dsn")])
    assert job_count(queue_dsn, "bulk_dsn") == 2


def test_remove_job(queue_dsn: str, conn: psycopg2.extensions.connection) -> None:
    job = add_job(conn, "removable", job_key="remove-me")
    removed = remove_job(conn, "remove-me")
    assert removed is not None and removed.id == job.id
    assert removed.task_identifier == "removable"
    assert remove_job(conn, "remove-me") is None
    assert remove_job(conn, "never-existed") is None


def test_remove_job_on_a_running_job_stops_its_retries(
    conn: psycopg2.extensions.connection,
) -> None:
    job = add_job(conn, "running", job_key="running-key", max_attempts=5)
    with conn.cursor() as cur:
        cur.execute(
            "update graphile_worker._private_jobs set locked_at = now(), locked_by = 'pool-x', "
            "attempts = 1 where id = %s",
            (job.id,),
        )
    stopped = remove_job(conn, "running-key")
    assert stopped is not None and stopped.id == job.id
    assert stopped.key is None and stopped.attempts == stopped.max_attempts == 5


def test_remove_job_via_dsn(queue_dsn: str) -> None:
    add_job(queue_dsn, "removable_dsn", job_key="remove-dsn")
    assert remove_job(queue_dsn, "remove-dsn") is not None
    assert job_count(queue_dsn, "removable_dsn") == 0


def test_other_schema_names_are_quoted(database_factory: Callable[[], str]) -> None:
    dsn = database_factory()
    schema = 'Queue "Jobs"'
    migrate_schema(dsn, schema)
    job = add_job(dsn, "elsewhere", {"a": 1}, queue_name="q", schema=schema)
    assert remove_job(dsn, "nope", schema=schema) is None
    assert add_jobs(dsn, [JobSpec("elsewhere")], schema=schema)[0].task_identifier == "elsewhere"
    with psycopg2.connect(dsn) as other, other.cursor() as cur:
        cur.execute(sql.SQL("select count(*) from {}.jobs").format(sql.Identifier(schema)))
        (count,) = cur.fetchone()
    other.close()
    assert count == 2 and job.queue_name == "q"


def test_missing_schema_is_the_database_error(conn: psycopg2.extensions.connection) -> None:
    with pytest.raises(psycopg2.errors.InvalidSchemaName):
        add_job(conn, "x", schema="no_such_schema")


# --- validation happens before any database work ------------------------------------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(params=["closed connection", "unreachable dsn"])
def unusable(request: pytest.FixtureRequest, queue_dsn: str) -> Any:
    """Something add_job cannot use: if validation touched it, the error would differ."""
    if request.param == "closed connection":
        closed = psycopg2.connect(queue_dsn)
        closed.close()
        return closed
    return f"host=127.0.0.1 port={_closed_port()} dbname=x user=x connect_timeout=2"


@pytest.mark.parametrize(
    ("args", "options", "error", "message"),
    [
        (("",), {}, InvalidJobArgument, "identifier must not be empty"),
        (("t" * 129,), {}, InvalidJobArgument, "identifier must be at most 128 characters"),
        ((5,), {}, InvalidJobArgumentType, "identifier must be a string, got int"),
        (("t", {1, 2}), {}, InvalidJobArgumentType, "payload is not JSON-serialisable: "),
        (
            ("t", {"x": float("nan")}),
            {},
            InvalidJobArgument,
            "payload['x'] is not JSON-serialisable: nan is not a JSON number",
        ),
        (("t",), {"queue_name": 7}, InvalidJobArgumentType, "queue_name must be a string or None"),
        (("t",), {"queue_name": "q" * 129}, InvalidJobArgument, "queue_name must be at most 128"),
        (
            ("t",),
            {"run_at": dt.datetime(2030, 1, 1)},
            InvalidJobArgument,
            "run_at must be timezone-aware, got naive 2030-01-01T00:00:00",
        ),
        (("t",), {"run_at": "2030-01-01"}, InvalidJobArgumentType, "run_at must be a timezone"),
        (("t",), {"max_attempts": 0}, InvalidJobArgument, "max_attempts must be between 1 and"),
        (("t",), {"max_attempts": 40000}, InvalidJobArgument, "max_attempts must be between"),
        (("t",), {"max_attempts": True}, InvalidJobArgumentType, "max_attempts must be an int"),
        (("t",), {"priority": 32768}, InvalidJobArgument, "priority must be between -32768"),
        (("t",), {"priority": 1.5}, InvalidJobArgumentType, "priority must be an integer"),
        (("t",), {"job_key": ""}, InvalidJobArgument, "job_key must not be empty"),
        (("t",), {"job_key": "k" * 513}, InvalidJobArgument, "job_key must be at most 512"),
        (("t",), {"job_key_mode": "merge"}, InvalidJobArgument, "job_key_mode must be one of"),
        (("t",), {"flags": "slow"}, InvalidJobArgumentType, "flags must be a list of strings"),
        (("t",), {"flags": ["ok", 3]}, InvalidJobArgumentType, "flags[1] must be a string"),
        (("t",), {"schema": ""}, InvalidJobArgument, "schema must not be empty"),
    ],
)
def test_add_job_validates_before_touching_the_database(
    unusable: Any, args: tuple[Any, ...], options: dict[str, Any], error: type, message: str
) -> None:
    with pytest.raises(error) as caught:
        add_job(unusable, *args, **options)
    assert str(caught.value).startswith(message), str(caught.value)
    # The API promises ValueError / TypeError, whatever our subclasses are called.
    assert isinstance(caught.value, (ValueError, TypeError))


def test_payload_error_names_the_offending_type(unusable: Any) -> None:
    with pytest.raises(TypeError, match="Object of type set is not JSON serializable"):
        add_job(unusable, "t", {"tags": {"a"}})


def test_add_jobs_validates_each_spec_before_touching_the_database(unusable: Any) -> None:
    with pytest.raises(ValueError, match=r"^specs\[1\]\.priority must be between"):
        add_jobs(unusable, [JobSpec("ok"), JobSpec("bad", priority=99999)])
    with pytest.raises(TypeError, match=r"^specs\[0\] must be a JobSpec, got dict"):
        add_jobs(unusable, [{"identifier": "x"}])  # type: ignore[list-item]


def test_remove_job_validates_before_touching_the_database(unusable: Any) -> None:
    with pytest.raises(ValueError, match=r"^job_key must not be empty"):
        remove_job(unusable, "")


def test_wrong_target_type() -> None:
    with pytest.raises(TypeError, match="conn_or_dsn must be a psycopg2 or psycopg 3 connection"):
        add_job(42, "t")  # type: ignore[arg-type]


def test_naive_local_time_is_refused(queue_dsn: str) -> None:
    with pytest.raises(ValueError, match=r"pass e\.g\. datetime\.now"):
        add_job(queue_dsn, "t", run_at=dt.datetime.now())
