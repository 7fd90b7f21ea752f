"""Django set up in the test process, on a throwaway database of this session.

The settings module is :mod:`tests.django_tests.settings`; its database comes from
``KT_DJANGO_DB``, set here before Django reads the settings. ``manage.py``-style runs of the
same project (``python -m django ...`` in a subprocess) get the same environment from
:func:`django_env`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.conftest import create_database, drop_database

SETTINGS = "tests.django_tests.settings"


@pytest.fixture(scope="session")
def django_dsn(admin_dsn: str) -> Iterator[str]:
    """The session's database, migrated by Django (and so by kongtaskd's post_migrate)."""
    import django
    from django.core.management import call_command

    dsn = create_database(admin_dsn, prefix="kt_django")
    saved = {name: os.environ.get(name) for name in ("KT_DJANGO_DB", "DJANGO_SETTINGS_MODULE")}
    os.environ["KT_DJANGO_DB"] = dsn
    os.environ["DJANGO_SETTINGS_MODULE"] = SETTINGS
    django.setup()
    # Read once; daemons other tests of this process start must not inherit them.
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name)
        else:
            os.environ[name] = value
    call_command("migrate", verbosity=0)
    yield dsn
    from django.db import connections

    connections.close_all()
    drop_database(admin_dsn, dsn)


@pytest.fixture()
def django_env(django_dsn: str) -> dict[str, str]:
    """The environment of a ``python -m django`` run of the test project."""
    environ = dict(os.environ)
    environ.pop("DATABASE_URL", None)
    environ.pop("NOTIFY_SOCKET", None)
    environ["KT_DJANGO_DB"] = django_dsn
    environ["DJANGO_SETTINGS_MODULE"] = SETTINGS
    return environ


@pytest.fixture()
def clean_queue(django_dsn: str) -> Iterator[None]:
    """No jobs and no notes before and after the test."""
    from tests.support.daemon import query

    def clean() -> None:
        query(django_dsn, "delete from graphile_worker._private_jobs")
        query(django_dsn, "delete from testapp_note")

    clean()
    yield
    clean()
