"""``manage.py check``: a ``KONGTASKD`` setting the daemon would refuse (``kongtaskd.E001``)
and kongtaskd ``TASKS`` backends whose database is not PostgreSQL or whose OPTIONS are wrong
(``kongtaskd.E002``, ``E003``)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core import checks

from kongtaskd.errors import ConfigError

BACKEND_PATH = "kongtaskd.contrib.django.KongtaskdBackend"
_BACKEND_PATHS = (BACKEND_PATH, "kongtaskd.contrib.django.backend.KongtaskdBackend")


def check_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    from kongtaskd.contrib.django import conf

    found: list[checks.CheckMessage] = []
    try:
        conf.load()
    except ConfigError as error:
        found.append(checks.Error(error.message, id="kongtaskd.E001"))
    backends = getattr(settings, "TASKS", None) or {}
    ours = [alias for alias, entry in backends.items() if entry.get("BACKEND") in _BACKEND_PATHS]
    if ours:
        from kongtaskd.contrib.django._compat import task_backends
        from kongtaskd.contrib.django.backend import backend_problems

        for alias in ours:
            found.extend(backend_problems(task_backends[alias]))
    return found
