"""kongtaskd for Django: ``INSTALLED_APPS += ["kongtaskd.contrib.django"]``.

What it gives (docs/django.md has the copy-paste lines):

* ``settings.KONGTASKD = {...}``: the YAML file's keys (:mod:`.conf`); the connection
  defaults to ``DATABASES["default"]``.
* ``python manage.py kongtaskd [--once] [--concurrency N] [--queue Q]``: the daemon, as a
  clean ``python -m kongtaskd`` exec'd with the settings (:mod:`.management.commands.kongtaskd`);
  ``manage.py kongtaskd migrate``.
* ``manage.py migrate`` installs and upgrades kongtaskd's schema (:mod:`.schema`).
* ``KongtaskdBackend``, a ``django.tasks`` backend (:mod:`.backend`), its daemon-side
  handler (:mod:`.worker`), and Django inside handler processes (:mod:`.runtime`).
* System checks ``kongtaskd.E001``-``E003`` (:mod:`.checks`).

Importing this package imports nothing of Django's task API; ``KongtaskdBackend`` is loaded
on first access, as Django's ``TASKS`` setting does.
"""

from __future__ import annotations

from typing import Any

__all__ = ["KongtaskdBackend"]


def __getattr__(name: str) -> Any:
    if name == "KongtaskdBackend":
        from kongtaskd.contrib.django.backend import KongtaskdBackend

        return KongtaskdBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
