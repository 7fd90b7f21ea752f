"""``manage.py kongtaskd``: the daemon as a clean ``python -m kongtaskd run``, exec'd.

``manage.py`` has imported the project (settings, apps, models) before a command runs. A
supervisor started in that process would hold the app's code, and a SIGHUP could never load
new code; so the command checks the configuration here, where errors can name
``settings.KONGTASKD``, writes it as a YAML file and replaces itself (``os.execv``, same pid,
so systemd and signals see one process) with ``python -m kongtaskd run --config FILE``.
The supervisor then never imports Django; the process that imports handlers runs
``django.setup()`` after its fork (DJANGO_SETTINGS_MODULE and ``django_settings`` are set).

The file is private (0600, in a 0700 directory of this user) and holds no password: a
password of the connection travels in PGPASSWORD, in the exec'd process's environment,
readable by this user only. The file stays while the daemon runs (SIGHUP re-reads it, so a
reload picks up new handler code; changed settings need a restart) and is removed by the
next start once its pid is gone.

Django queues: the daemon runs one kongtaskd task identifier per Django queue
(``django.tasks:<queue>``, see :mod:`.backend`), so ``--queue NAME`` limits it to those
queues: jobs of other queues are not claimed at all and wait for a daemon that runs them.
Default: every queue of every kongtaskd ``TASKS`` backend.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from django.conf import settings
from psycopg2 import ProgrammingError
from psycopg2.extensions import make_dsn, parse_dsn

from kongtaskd.config import Config
from kongtaskd.contrib.django import conf
from kongtaskd.contrib.django.checks import _BACKEND_PATHS
from kongtaskd.embedded import is_embedded
from kongtaskd.errors import ConfigError

_PREFIX = "kongtaskd-django-"
#: The daemon-side module of this package; importing it runs django.setup().
WORKER_MODULE = "kongtaskd.contrib.django.worker"


def kongtaskd_backends() -> dict[str, Any]:
    """alias -> backend instance, for the kongtaskd backends of ``settings.TASKS``."""
    entries = getattr(settings, "TASKS", None) or {}
    ours = [alias for alias, entry in entries.items() if entry.get("BACKEND") in _BACKEND_PATHS]
    if not ours:
        return {}
    from kongtaskd.contrib.django._compat import task_backends

    return {alias: task_backends[alias] for alias in ours}


def django_queues(asked: Sequence[str] = ()) -> list[str]:
    """The Django queue names this daemon runs: ``asked`` (``--queue``), checked against the
    backends' QUEUES, else all of them."""
    backends = kongtaskd_backends()
    if not backends:
        if asked:
            raise ConfigError("--queue: settings.TASKS has no kongtaskd backend")
        return []
    configured: set[str] = set()
    for alias, backend in backends.items():
        if not backend.queues and not asked:
            raise ConfigError(
                f"settings.TASKS[{alias!r}]: QUEUES is empty (any queue name): name the "
                "queues this daemon runs with --queue"
            )
        configured |= set(backend.queues)
    unknown = [name for name in asked if configured and name not in configured]
    if unknown:
        raise ConfigError(
            f"--queue: {', '.join(map(repr, unknown))} is not a queue of a kongtaskd backend "
            f"(QUEUES: {', '.join(sorted(configured))})"
        )
    return sorted(set(asked) if asked else configured)


def daemon_config(
    queues: Sequence[str] = (),
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> tuple[Config, dict[str, Any]]:
    """The checked configuration and the YAML mapping the exec'd daemon reads."""
    from kongtaskd.contrib.django.backend import HANDLER, task_identifier

    bridge = {task_identifier(name): HANDLER for name in django_queues(queues)}
    user_tasks = conf.kongtaskd_setting().get("tasks") or {}
    if isinstance(user_tasks, Mapping):
        for identifier in user_tasks:
            if identifier in bridge:
                raise ConfigError(
                    f"{conf.SOURCE}: tasks.{identifier}: this identifier is the django.tasks "
                    "handler's; name the task differently"
                )
        # The bridge first: the child resolves it before any app handler, and importing it
        # sets Django up (kongtaskd.contrib.django.worker).
        tasks: Any = {**bridge, **user_tasks}
    else:
        tasks = user_tasks  # not a mapping: the loader's message names the key
    # Importing the worker module sets Django up; task_modules are imported in order (after
    # the tasks mapping), so decorated handler modules find the app registry ready even
    # without a django.tasks backend (whose handler, first in tasks, does it earlier).
    modules = conf.kongtaskd_setting().get("task_modules") or []
    if isinstance(modules, list) and WORKER_MODULE not in modules:
        modules = [WORKER_MODULE, *modules]
    extra = {"tasks": tasks, "task_modules": modules}
    config = conf.load(overrides, environ=environ, extra=extra)
    config.require_tasks()
    if not config.django_settings:
        raise ConfigError(
            "manage.py kongtaskd needs DJANGO_SETTINGS_MODULE (settings.configure() cannot "
            "be repeated in the daemon's processes)"
        )
    data = conf.kongtaskd_setting()
    data.update(extra)
    data["connection"] = config.connection
    data["django_settings"] = config.django_settings
    # Relative paths resolved here (against BASE_DIR): the file lives elsewhere.
    data["python_path"] = list(config.python_path)
    if config.crontab_file is not None:
        data["crontab_file"] = str(config.crontab_file)
    return config, data


def split_password(dsn: str | None) -> tuple[str | None, str | None]:
    """(the connection string without its password, the password)."""
    if not dsn or is_embedded(dsn):
        return dsn, None
    try:
        params = parse_dsn(dsn)
    except ProgrammingError:
        return dsn, None  # the loader accepted it; libpq will say what is wrong
    password = params.pop("password", None)
    if password is None:
        return dsn, None
    return make_dsn(**params), password


def _private_dir() -> Path:
    directory = Path(tempfile.gettempdir()) / f"{_PREFIX}{os.getuid()}"
    directory.mkdir(mode=0o700, exist_ok=True)
    if directory.stat().st_uid != os.getuid() or directory.stat().st_mode & 0o077:
        raise ConfigError(f"{directory}: not a private directory of this user; remove it")
    return directory


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_config(data: Mapping[str, Any]) -> Path:
    """The daemon's YAML file (0600), named by this pid (kept by the exec); removes the
    files of earlier daemons that are gone."""
    directory = _private_dir()
    for old in directory.glob("*.yaml"):
        try:
            pid = int(old.stem)
        except ValueError:
            continue
        if pid != os.getpid() and not _alive(pid):
            old.unlink(missing_ok=True)
    path = directory / f"{os.getpid()}.yaml"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write("# Written by manage.py kongtaskd from settings.KONGTASKD; do not edit.\n")
        yaml.safe_dump(dict(data), file, sort_keys=False)
    return path


def invocation(
    queues: Sequence[str] = (),
    *,
    once: bool = False,
    concurrency: int | None = None,
    log_level: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> tuple[list[str], dict[str, str], Path]:
    """argv, environment and config file of the daemon ``manage.py kongtaskd`` execs."""
    environ = dict(os.environ if environ is None else environ)
    overrides = {"concurrency": concurrency, "log.level": log_level}
    config, data = daemon_config(queues, overrides, environ)
    connection, password = split_password(data["connection"])
    data["connection"] = connection
    if password is not None:
        environ["PGPASSWORD"] = password
    environ["DJANGO_SETTINGS_MODULE"] = str(config.django_settings)
    # manage.py's directory is sys.path[0] here; `python -m` would put the cwd there.
    project = sys.path[0] or os.getcwd()
    environ["PYTHONPATH"] = os.pathsep.join(
        [project, *filter(None, environ.get("PYTHONPATH", "").split(os.pathsep))]
    )
    path = write_config(data)
    argv = [sys.executable, "-m", "kongtaskd", "run", "--config", str(path)]
    if once:
        argv.append("--once")
    if concurrency is not None:
        argv += ["--concurrency", str(concurrency)]
    if log_level is not None:
        argv += ["--log-level", log_level]
    return argv, environ, path


def exec_daemon(argv: list[str], environ: Mapping[str, str]) -> None:
    """Replace this process with the daemon (returns only if exec fails, by raising)."""
    from django.db import connections

    connections.close_all()  # our own sessions: closed properly, not inherited
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(argv[0], argv, dict(environ))
