"""Django in a forked handler process (runtime.py), and kongtaskd's schema under
`manage.py migrate` (a post_migrate hook, so a later kongtaskd migration still arrives)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable

import pytest

from kongtaskd.schema.files import load_migrations
from tests.support.daemon import query

#: Python 3.12 warns about fork() in a process with threads. The only other thread a test
#: process of this directory has is asgiref's idle sync_to_async executor (left by the
#: aenqueue test); it holds no lock the child uses.
pytestmark = pytest.mark.filterwarnings(
    "ignore:This process .* is multi-threaded, use of fork:DeprecationWarning"
)


def _in_fork(body: Callable[[], dict[str, object]]) -> dict[str, object]:
    """Run ``body`` in a forked child (ending in os._exit, as kongtaskd's children do) and
    return what it reported as JSON through a pipe."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(read_end)
        try:
            report = body()
        except BaseException as error:
            report = {"error": f"{type(error).__name__}: {error}"}
        os.write(write_end, json.dumps(report).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    return json.loads(data)


def _backend_pid() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("select pg_backend_pid()")
        return int(cursor.fetchone()[0])


def test_a_forked_child_discards_the_inherited_connection_and_opens_its_own(
    django_dsn: str,
) -> None:
    from kongtaskd.contrib.django import runtime

    runtime.setup()
    parent_pid = _backend_pid()

    def child() -> dict[str, object]:
        runtime.before_job()
        own = _backend_pid()
        runtime.after_job()
        return {"pid": own}

    report = _in_fork(child)
    assert "error" not in report, report
    # Its own session, not the parent's socket.
    assert report["pid"] != parent_pid
    # The parent's session survived the child (no Terminate was sent on it, nor a query
    # interleaved on its socket).
    assert _backend_pid() == parent_pid
    alive = query(django_dsn, "select count(*) from pg_stat_activity where pid = %s", [parent_pid])
    assert alive == [(1,)]


def test_after_job_closes_connections_past_conn_max_age_and_keeps_persistent_ones(
    django_dsn: str,
) -> None:
    from django.db import connection

    from kongtaskd.contrib.django import runtime

    def run_job_with(max_age: int | None) -> dict[str, object]:
        runtime.before_job()  # first: drops the parent's connection without closing it
        connection.settings_dict["CONN_MAX_AGE"] = max_age  # this child's settings only
        runtime.before_job()
        first = _backend_pid()
        runtime.after_job()
        open_after = connection.connection is not None
        runtime.before_job()
        second = _backend_pid()
        runtime.after_job()
        return {"open_after": open_after, "same_session": first == second}

    _backend_pid()  # the parent holds an open connection, which the child inherits
    assert _in_fork(lambda: run_job_with(0)) == {"open_after": False, "same_session": False}
    assert _in_fork(lambda: run_job_with(None)) == {"open_after": True, "same_session": True}
    _backend_pid()  # and still has it


def _kongtaskd_level(dsn: str) -> list[int]:
    rows = query(dsn, "select id from graphile_worker._kongtaskd_migrations order by id")
    return [row[0] for row in rows]


def _index_exists(dsn: str) -> bool:
    rows = query(dsn, "select to_regclass('graphile_worker._kongtaskd_jobs_ready') is not null")
    return bool(rows[0][0])


def _downgrade_to_kongtaskd_migration_1(dsn: str) -> None:
    """The database as an older kongtaskd release left it: only its migration 1 applied."""
    import psycopg2

    from kongtaskd.schema import migrate

    query(dsn, "drop schema graphile_worker cascade")
    conn = psycopg2.connect(dsn)
    try:
        migrate(conn, kongtaskd_target=1)
    finally:
        conn.close()
    assert _kongtaskd_level(dsn) == [1]


#: Every kongtaskd migration this release has.
ALL_KONGTASKD = [m.number for m in load_migrations("kongtaskd")]


def test_manage_py_migrate_installs_and_upgrades_the_schema(django_dsn: str) -> None:
    from django.core.management import call_command

    # The session's `migrate` installed everything.
    assert _kongtaskd_level(django_dsn) == ALL_KONGTASKD
    _downgrade_to_kongtaskd_migration_1(django_dsn)
    assert not _index_exists(django_dsn)
    # Django has nothing left to do, kongtaskd's migrator still runs and applies the rest.
    call_command("migrate", verbosity=0)
    assert _kongtaskd_level(django_dsn) == ALL_KONGTASKD
    assert _index_exists(django_dsn)


def test_manage_py_kongtaskd_migrate_upgrades_too(django_dsn: str) -> None:
    from io import StringIO

    from django.core.management import call_command

    _downgrade_to_kongtaskd_migration_1(django_dsn)
    out = StringIO()
    call_command("kongtaskd", "migrate", stdout=out)
    assert out.getvalue().strip() == (
        f"schema graphile_worker is up to date (applied kongtaskd migrations 2-{ALL_KONGTASKD[-1]})"
    )
    assert _index_exists(django_dsn)


@pytest.mark.parametrize("alias", ["other"])
def test_migrate_of_another_database_does_not_touch_kongtaskd(alias: str) -> None:
    from kongtaskd.contrib.django.schema import migrate_after_django

    # A receiver call for another alias returns before connecting anywhere.
    assert migrate_after_django(None, using=alias) is None
