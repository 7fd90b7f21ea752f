"""``settings.KONGTASKD`` -> a checked :class:`~kongtaskd.config.Config`, and the libpq
connection string of a ``DATABASES`` entry.

``KONGTASKD`` takes the YAML file's keys, checked by the same loader with the same messages,
which name ``settings.KONGTASKD`` where a file's messages name the file and line. Relative
paths (``python_path``, ``crontab_file``) are relative to ``settings.BASE_DIR`` when it is
set, else to the current directory. The environment and its precedence are the YAML file's
(``KONGTASK_*`` over the setting; ``DATABASE_URL`` over ``connection``).

``connection`` defaults to ``DATABASES["default"]``, turned into a libpq string from the
fields both of Django's PostgreSQL drivers (psycopg2 and psycopg 3) read: NAME, USER,
PASSWORD, HOST, PORT and those OPTIONS that are libpq keywords (sslmode, service, ...); the
password is registered as a secret. Set ``KONGTASKD["connection"]`` when ``DATABASES``
points at a pooler: the supervisor's LISTEN needs a direct session.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS
from psycopg2.extensions import make_dsn

from kongtaskd import redact
from kongtaskd.config import Config, load_config_mapping
from kongtaskd.errors import ConfigError

#: The setting's name, and how messages name it.
SETTING = "KONGTASKD"
SOURCE = f"settings.{SETTING}"

#: libpq connection keywords Django passes through OPTIONS to the driver and that mean the
#: same to libpq; the others (pool, isolation_level, server_side_binding, assume_role,
#: cursor_factory) are Django's or a driver's own and have no libpq meaning.
LIBPQ_OPTIONS = frozenset(
    {
        "application_name",
        "channel_binding",
        "connect_timeout",
        "gssencmode",
        "keepalives",
        "keepalives_count",
        "keepalives_idle",
        "keepalives_interval",
        "options",
        "passfile",
        "requirepeer",
        "service",
        "sslcert",
        "sslcrl",
        "sslkey",
        "sslmode",
        "sslpassword",
        "sslrootcert",
        "target_session_attrs",
        "tcp_user_timeout",
    }
)

_POSTGRESQL_ENGINES = ("django.db.backends.postgresql", "django.contrib.gis.db.backends.postgis")


def kongtaskd_setting() -> dict[str, Any]:
    """``settings.KONGTASKD`` as a plain dict ({} when unset)."""
    value = getattr(settings, SETTING, None)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(
            f"{SOURCE}: expected a dict of kongtaskd configuration keys, got {type(value).__name__}"
        )
    return dict(value)


def database_dsn(alias: str = DEFAULT_DB_ALIAS) -> str:
    """The libpq connection string of ``DATABASES[alias]``; its password is a secret."""
    where = f"settings.DATABASES[{alias!r}]"
    from django.db import connections

    if alias not in connections:
        raise ConfigError(f"{where}: no such database; set {SOURCE}['connection'] instead")
    # The connection's own settings dict: the test runner points it at the test database.
    entry = connections[alias].settings_dict
    engine = entry.get("ENGINE", "")
    if engine not in _POSTGRESQL_ENGINES:
        raise ConfigError(f"{where}: ENGINE is {engine!r}; kongtaskd needs PostgreSQL")
    params: dict[str, str] = {}
    for field, keyword in (("NAME", "dbname"), ("USER", "user"), ("PASSWORD", "password")):
        if entry.get(field):
            params[keyword] = str(entry[field])
    if entry.get("HOST"):
        params["host"] = str(entry["HOST"])
    if entry.get("PORT"):
        params["port"] = str(entry["PORT"])
    for key, value in (entry.get("OPTIONS") or {}).items():
        if key in LIBPQ_OPTIONS and value is not None:
            params[key] = str(value)
    redact.register_secret(params.get("password"), params.get("sslpassword"))
    return make_dsn(**params) if params else ""


def base_dir() -> Path:
    """Where relative paths of the setting are relative to."""
    configured = getattr(settings, "BASE_DIR", None)
    return Path(configured) if configured else Path.cwd()


def settings_module() -> str | None:
    """The settings module the daemon's children must set up (None: settings.configure())."""
    from django.conf import UserSettingsHolder

    if os.environ.get("DJANGO_SETTINGS_MODULE"):
        return os.environ["DJANGO_SETTINGS_MODULE"]
    # Under override_settings the module's Settings sits below one holder per override.
    holder: Any = getattr(settings, "_wrapped", None)
    while isinstance(holder, UserSettingsHolder):
        holder = holder.default_settings
    return getattr(holder, "SETTINGS_MODULE", None)


def load(
    overrides: Mapping[str, Any] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
    resolve_connection: bool = True,
) -> Config:
    """The checked configuration of ``settings.KONGTASKD`` (raises a one-line ConfigError).

    ``extra`` adds keys on top of the setting (the daemon command's handler entries);
    ``overrides`` are flag values as for :func:`kongtaskd.config.load_config`.
    ``resolve_connection`` False leaves an unset ``connection`` unset instead of deriving it
    from ``DATABASES["default"]`` (for callers that need other keys only).
    """
    data = kongtaskd_setting()
    data.update(extra or {})
    if data.get("connection") is None and resolve_connection:
        # The one place the daemon's connection is chosen from Django's settings. A
        # pooled DATABASES entry cannot carry LISTEN: the fleet issue's (#13) pooler
        # detection belongs here, on the string returned, before the daemon uses it.
        data["connection"] = database_dsn()
    if data.get("django_settings") is None and settings_module():
        data["django_settings"] = settings_module()
    return load_config_mapping(
        data, SOURCE, base_dir=base_dir(), overrides=overrides, environ=environ
    )
