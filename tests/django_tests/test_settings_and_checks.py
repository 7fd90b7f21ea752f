"""settings.KONGTASKD through the YAML loader, the DSN from DATABASES, and `manage.py check`."""

from __future__ import annotations

import pytest

from kongtaskd import redact
from kongtaskd.errors import ConfigError


def test_the_setting_takes_the_yaml_keys_with_their_messages(django_dsn: str) -> None:
    from django.test import override_settings

    from kongtaskd.contrib.django import conf

    with override_settings(KONGTASKD={"concurrency": 3, "log": {"format": "json"}}):
        config = conf.load(environ={})
    assert (config.concurrency, config.log.format) == (3, "json")
    with override_settings(KONGTASKD={"metrics": {"port": 0}}), pytest.raises(ConfigError) as error:
        conf.load(environ={})
    assert error.value.message == (
        "settings.KONGTASKD: metrics.port: expected an integer between 1 and 65535, got 0"
    )
    with override_settings(KONGTASKD={"concurency": 3}), pytest.raises(ConfigError) as error:
        conf.load(environ={})
    assert error.value.message == (
        "settings.KONGTASKD: unknown key 'concurency' (did you mean 'concurrency'?)"
    )
    not_a_dict = override_settings(KONGTASKD=["concurrency"])
    with not_a_dict, pytest.raises(ConfigError, match=r"^settings.KONGTASKD: expected a dict"):
        conf.load(environ={})


def test_the_connection_defaults_to_databases_default(django_dsn: str) -> None:
    import psycopg2
    from django.test import override_settings

    from kongtaskd.contrib.django import conf

    config = conf.load(environ={})
    conn = psycopg2.connect(config.dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("select current_database()")
            assert cur.fetchone()[0] == psycopg2.extensions.parse_dsn(django_dsn)["dbname"]
    finally:
        conn.close()
    assert config.django_settings == "tests.django_tests.settings"
    # KONGTASKD["connection"] wins (a direct session where DATABASES points at a pooler).
    with override_settings(KONGTASKD={"connection": "host=/nowhere dbname=direct"}):
        assert conf.load(environ={}).connection == "host=/nowhere dbname=direct"


def test_a_databases_password_is_a_secret(django_dsn: str) -> None:
    from kongtaskd.contrib.django import conf

    dsn = conf.database_dsn("with_password")
    assert "pw-Zq81-never-shown" in dsn
    assert "pw-Zq81-never-shown" not in redact.scrub(f"connecting with {dsn}")


def test_a_database_that_is_not_postgresql_is_refused(django_dsn: str) -> None:
    from kongtaskd.contrib.django import conf

    with pytest.raises(ConfigError) as error:
        conf.database_dsn("sqlite")
    assert error.value.message == (
        "settings.DATABASES['sqlite']: ENGINE is 'django.db.backends.sqlite3'; "
        "kongtaskd needs PostgreSQL"
    )


def test_manage_py_check_reports_a_misconfigured_setting(django_dsn: str) -> None:
    from django.core.management import call_command
    from django.core.management.base import SystemCheckError
    from django.test import override_settings

    call_command("check")  # the test settings are fine
    with override_settings(KONGTASKD={"concurrency": 0}), pytest.raises(SystemCheckError) as error:
        call_command("check")
    assert (
        "(kongtaskd.E001) settings.KONGTASKD: concurrency: expected an integer between 1 and "
        "1024, got 0" in str(error.value)
    )


def test_check_reports_a_backend_whose_database_is_not_postgresql(django_dsn: str) -> None:
    from kongtaskd.contrib.django.backend import KongtaskdBackend, backend_problems

    backend = KongtaskdBackend(
        "sqlite_tasks", {"OPTIONS": {"database": "sqlite", "max_atempts": 3}}
    )
    messages = [(m.id, m.msg) for m in backend_problems(backend)]
    assert messages == [
        (
            "kongtaskd.E003",
            "settings.TASKS['sqlite_tasks']: unknown OPTIONS key 'max_atempts' "
            "(known: database, max_attempts)",
        ),
        (
            "kongtaskd.E002",
            "settings.TASKS['sqlite_tasks']: database 'sqlite' is sqlite; kongtaskd needs "
            "PostgreSQL",
        ),
    ]
    assert backend_problems(KongtaskdBackend("ok", {})) == []


def test_manage_py_check_reports_a_backend_on_another_database(django_dsn: str) -> None:
    from django.core.management import call_command
    from django.core.management.base import SystemCheckError
    from django.test import override_settings

    backend = {
        "BACKEND": "kongtaskd.contrib.django.KongtaskdBackend",
        "OPTIONS": {"database": "sqlite"},
    }
    with override_settings(TASKS={"default": backend}), pytest.raises(SystemCheckError) as error:
        call_command("check")
    text = str(error.value)
    expected = (
        "(kongtaskd.E002) settings.TASKS['default']: database 'sqlite' is sqlite; kongtaskd "
        "needs PostgreSQL"
    )
    assert text.count(expected) == 1, text
