"""Test an application's jobs against real PostgreSQL: a pytest plugin and its helpers.

Installed with kongtaskd, this module is a pytest plugin (entry point ``pytest11``), so an
application's suite gets the fixture ``kongtaskd_db`` with no import::

    def test_signup_sends_a_welcome(kongtaskd_db):
        with kongtaskd_db.connect() as conn:
            myapp.signup(conn, "a@example.com")      # calls kongtaskd.add_job(conn, ...)
        kongtaskd_db.assert_enqueued("send_welcome", payload={"to": "a@example.com"})
        assert kongtaskd_db.drain({"send_welcome": myapp.send_welcome}).failed == []

What ``kongtaskd_db`` is: a throwaway database per test, cloned (``CREATE DATABASE ...
TEMPLATE``, a file copy: milliseconds, not a migration) from a template that the first
test of the session migrates. A database, not a schema per test: an app's triggers and
functions call ``graphile_worker.add_job`` by its qualified name, which no ``search_path``
can redirect, so the queue keeps its real schema name (``graphile_worker``, or the option
``kongtaskd_schema``) in a database of its own. The app's own tables go into the template
through the ``kongtaskd_template_setup`` fixture (override it: it gets a psycopg2
connection to the template, after the migration, committed after it returns).

Where the server is: ``--kongtaskd-dsn``, else the ini option ``kongtaskd_dsn``, else the
environment variable ``KONGTASKD_TEST_DSN``: a role allowed to CREATE DATABASE.

Within a transaction instead (a Django ``TestCase``, a test that rolls back): call
``kongtaskd.run_jobs(connection, tasks)`` and :func:`assert_enqueued` with that connection;
both see what the transaction enqueued and commit nothing.

The plugin is inert until its fixture is used: importing it costs pytest and the standard
library only; kongtaskd's modules and psycopg2 load inside the fixtures.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from kongtaskd.inline import RunSummary

ENV_DSN = "KONGTASKD_TEST_DSN"
DEFAULT_SCHEMA = "graphile_worker"

#: The jobs as assert_enqueued compares them (graphile-worker's public ``jobs`` columns).
_JOBS_SQL = (
    "select jobs.id, tasks.identifier, jobs.payload::text, queues.queue_name, jobs.key,"
    " jobs.attempts from {schema}._private_jobs as jobs"
    " join {schema}._private_tasks as tasks on tasks.id = jobs.task_id"
    " left join {schema}._private_job_queues as queues on queues.id = jobs.job_queue_id"
    " order by jobs.id"
)


def jobs(conn: Any, schema: str = DEFAULT_SCHEMA) -> list[dict[str, Any]]:
    """Every job row visible to ``conn`` (any driver kongtaskd.add_job accepts, or a DSN),
    in its current transaction: ``{id, task, payload, queue, key, attempts}``."""
    from kongtaskd.drivers import quote_identifier, sync_target

    with sync_target(conn) as fetch:
        rows = fetch(_JOBS_SQL.format(schema=quote_identifier(schema)), {})
    return [
        {
            "id": row["id"],
            "task": row["identifier"],
            "payload": json.loads(row["payload"]),
            "queue": row["queue_name"],
            "key": row["key"],
            "attempts": row["attempts"],
        }
        for row in rows
    ]


_ANY = object()


def assert_enqueued(
    conn: Any,
    task: str,
    payload: Any = _ANY,
    *,
    count: int | None = None,
    schema: str = DEFAULT_SCHEMA,
) -> list[dict[str, Any]]:
    """Assert that ``conn`` sees a job of ``task`` (with exactly this ``payload``, if
    given; exactly ``count`` of them, if given). Returns the matching jobs; the
    AssertionError lists the jobs there are."""
    every = jobs(conn, schema)
    matching = [
        job
        for job in every
        if job["task"] == task and (payload is _ANY or job["payload"] == payload)
    ]
    wanted = f"task {task!r}" + ("" if payload is _ANY else f" with payload {payload!r}")
    if count is None and not matching:
        raise AssertionError(f"no job of {wanted} is enqueued; the jobs are: {_listed(every)}")
    if count is not None and len(matching) != count:
        raise AssertionError(
            f"{len(matching)} jobs of {wanted} are enqueued, expected {count}; "
            f"the jobs are: {_listed(every)}"
        )
    return matching


def _listed(every: list[dict[str, Any]]) -> str:
    if not every:
        return "none"
    return ", ".join(f"#{job['id']} {job['task']} {json.dumps(job['payload'])}" for job in every)


class QueueDatabase:
    """One test's throwaway database with kongtaskd's schema (the ``kongtaskd_db`` fixture)."""

    def __init__(self, dsn: str, schema: str) -> None:
        self.dsn = dsn
        self.schema = schema

    def connect(self) -> Any:
        """A new psycopg2 connection to it (``with`` commits on success, as psycopg2 does)."""
        import psycopg2

        return psycopg2.connect(self.dsn)

    def jobs(self, conn: Any = None) -> list[dict[str, Any]]:
        return jobs(self.dsn if conn is None else conn, self.schema)

    def assert_enqueued(
        self, task: str, payload: Any = _ANY, *, count: int | None = None, conn: Any = None
    ) -> list[dict[str, Any]]:
        """:func:`assert_enqueued` on committed jobs, or on what ``conn``'s transaction sees."""
        target = self.dsn if conn is None else conn
        return assert_enqueued(target, task, payload, count=count, schema=self.schema)

    def drain(
        self,
        tasks: Mapping[str, Callable[..., Any] | str],
        *,
        conn: Any = None,
        limit: int | None = None,
    ) -> RunSummary:
        """Run the ready jobs now (``kongtaskd.run_jobs``): committed per job, or inside
        ``conn``'s transaction when given."""
        from kongtaskd.inline import run_jobs

        target = self.dsn if conn is None else conn
        return run_jobs(target, tasks, limit=limit, schema=self.schema)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("kongtaskd")
    group.addoption(
        "--kongtaskd-dsn",
        default=None,
        help=f"PostgreSQL for the kongtaskd_db fixture (a role that may CREATE DATABASE); "
        f"default: the ini option kongtaskd_dsn, else ${ENV_DSN}",
    )
    parser.addini("kongtaskd_dsn", "PostgreSQL for the kongtaskd_db fixture", default="")
    parser.addini("kongtaskd_schema", "the queue's schema name", default=DEFAULT_SCHEMA)


def _server_dsn(config: pytest.Config) -> str:
    dsn = config.getoption("kongtaskd_dsn") or config.getini("kongtaskd_dsn") or ""
    dsn = dsn or os.environ.get(ENV_DSN, "")
    if not dsn:
        raise pytest.UsageError(
            "kongtaskd_db needs a PostgreSQL server: pass --kongtaskd-dsn, set the ini option "
            f"kongtaskd_dsn or the environment variable {ENV_DSN}"
        )
    return str(dsn)


def _admin(dsn: str) -> Any:
    import psycopg2

    conn = psycopg2.connect(dsn)
    conn.autocommit = True  # CREATE/DROP DATABASE cannot run in a transaction
    return conn


def _with_dbname(dsn: str, name: str) -> str:
    from psycopg2.extensions import make_dsn

    return make_dsn(dsn, dbname=name)


@pytest.fixture(scope="session")
def kongtaskd_template_setup() -> Callable[[Any], None]:
    """Override to put the app's tables, functions and triggers into the template."""
    return lambda conn: None


@pytest.fixture(scope="session")
def _kongtaskd_template(
    request: pytest.FixtureRequest, kongtaskd_template_setup: Callable[[Any], None]
) -> Iterator[tuple[str, str, str]]:
    """(server DSN, template database name, schema), migrated once per session."""
    from psycopg2 import sql

    from kongtaskd.schema import migrate

    server = _server_dsn(request.config)
    schema = str(request.config.getini("kongtaskd_schema") or DEFAULT_SCHEMA)
    name = f"kongtaskd_tmpl_{uuid.uuid4().hex[:12]}"
    admin = _admin(server)
    try:
        with admin.cursor() as cur:
            cur.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
        import psycopg2

        conn = psycopg2.connect(_with_dbname(server, name))
        try:
            migrate(conn, schema)
            kongtaskd_template_setup(conn)
            conn.commit()
        finally:
            conn.close()
        yield server, name, schema
    finally:
        with admin.cursor() as cur:
            cur.execute(sql.SQL("drop database if exists {}").format(sql.Identifier(name)))
        admin.close()


@pytest.fixture()
def kongtaskd_db(_kongtaskd_template: tuple[str, str, str]) -> Iterator[QueueDatabase]:
    """A throwaway database for this test, cloned from the migrated template."""
    from psycopg2 import sql

    server, template, schema = _kongtaskd_template
    name = f"kongtaskd_test_{uuid.uuid4().hex[:12]}"
    admin = _admin(server)
    try:
        with admin.cursor() as cur:
            cur.execute(
                sql.SQL("create database {} template {}").format(
                    sql.Identifier(name), sql.Identifier(template)
                )
            )
        yield QueueDatabase(_with_dbname(server, name), schema)
    finally:
        with admin.cursor() as cur:
            # WITH (FORCE): a connection the test left open must not keep the database.
            cur.execute(
                sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))
            )
        admin.close()
