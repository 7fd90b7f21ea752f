"""Shared fixtures: a real PostgreSQL server and a fresh database per test module.

Where the server comes from, first match wins:

1. ``KONGTASK_TEST_DSN``: any libpq URI/DSN of a role that may create databases.
2. The local server at 127.0.0.1:5432 (as ``postgres``, then as the current user).
3. testcontainers' PostgreSQL, where a Docker engine answers.

If none answers, the suite fails with a message that says how to point it at a server.
Every test module gets a database of its own, created empty and dropped afterwards, so
no test depends on what an earlier run left.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import psycopg2
import pytest
from psycopg2 import sql
from psycopg2.extensions import make_dsn, parse_dsn

LOCAL_CANDIDATES = (
    "host=127.0.0.1 port=5432 user=postgres dbname=postgres connect_timeout=3",
    "host=127.0.0.1 port=5432 dbname=postgres connect_timeout=3",
)


def _can_connect(dsn: str) -> bool:
    try:
        psycopg2.connect(dsn).close()
    except psycopg2.Error:
        return False
    return True


def _from_testcontainers() -> tuple[str, object] | None:
    try:
        from testcontainers.postgres import PostgresContainer  # type: ignore[import-untyped]
    except ImportError:
        return None
    try:
        container = PostgresContainer("postgres:15-alpine", driver=None)
        container.start()
    except Exception:  # no Docker engine, no image: fall through to the clear failure
        return None
    url = container.get_connection_url()
    return url, container


@pytest.fixture(scope="session")
def admin_dsn() -> Iterator[str]:
    """DSN of a role that can create and drop databases on the test server."""
    explicit = os.environ.get("KONGTASK_TEST_DSN")
    if explicit:
        if not _can_connect(explicit):
            pytest.fail(f"KONGTASK_TEST_DSN is set but no server answers there: {explicit!r}")
        yield explicit
        return
    for candidate in LOCAL_CANDIDATES:
        if _can_connect(candidate):
            yield candidate
            return
    found = _from_testcontainers()
    if found is not None:
        url, container = found
        try:
            yield url
        finally:
            container.stop()  # type: ignore[attr-defined]
        return
    pytest.fail(
        "no PostgreSQL server for the tests: set KONGTASK_TEST_DSN to a DSN of a role that "
        "may create databases, start a server at 127.0.0.1:5432 "
        "(pg_ctlcluster --skip-systemctl-redirect 15 main start), or run where Docker is "
        "available for testcontainers",
        pytrace=False,
    )


def create_database(admin: str, prefix: str = "kt_test") -> str:
    """Create a fresh, empty database and return a DSN pointing at it."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    conn = psycopg2.connect(admin)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    finally:
        conn.close()
    params = parse_dsn(admin)
    params["dbname"] = name
    return make_dsn(**params)


def drop_database(admin: str, dsn: str) -> None:
    name = parse_dsn(dsn)["dbname"]
    conn = psycopg2.connect(admin)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
    finally:
        conn.close()


@pytest.fixture(scope="module")
def database_factory(admin_dsn: str) -> Iterator[object]:
    """Call it to get further fresh databases inside one module; all are dropped at the end."""
    made: list[str] = []

    def make() -> str:
        dsn = create_database(admin_dsn)
        made.append(dsn)
        return dsn

    yield make
    for dsn in made:
        drop_database(admin_dsn, dsn)


@pytest.fixture(scope="module")
def dsn(database_factory) -> str:  # type: ignore[no-untyped-def]
    """A fresh empty database for this test module."""
    return database_factory()


@pytest.fixture()
def fresh_dsn(database_factory) -> str:  # type: ignore[no-untyped-def]
    """A fresh empty database for this one test."""
    return database_factory()
