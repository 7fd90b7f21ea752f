"""``kongtaskd.run``: the daemon from a program (graphile-worker's "library mode").

The same supervisor as ``kongtaskd run`` (``supervisor.run``), in the calling process,
blocking until it is told to stop (SIGTERM/SIGINT, as the daemon) or, with ``once``, until
no job is ready. From the main thread only: the supervisor installs signal handlers.

``tasks=`` callables: the supervisor still imports no handler code, and none of them
travels to a child by pickling. The zygote, the process children fork from, is itself
forked from this one, so it inherits this process's memory: the callables are put into
the registry's ``@kongtaskd.task`` table before the supervisor starts, and the zygote's
``load_handlers`` finds them there as it finds decorated handlers. They are the objects the
program already imported (the supervisor process holds that code, unlike ``kongtaskd run``),
so a SIGHUP reload re-reads the configuration but cannot bring new code for them.
``"module:function"`` strings go into the ``tasks:`` mapping and are imported by the zygote.

In a threaded program: the supervisor forks the zygote from this process, and a fork copies
only the calling thread, so a lock another thread held stays locked forever in the copy;
Python 3.12+ warns (DeprecationWarning "This process is multi-threaded, use of fork() may
lead to deadlocks in the child"). Start ``kongtaskd.run`` before any thread, or run the
daemon as its own process.

Logging is the program's: nothing is configured here (``kongtaskd.logs.setup_logging``
gives the daemon's format).
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from kongtaskd import registry
from kongtaskd.config import Config, TaskSpec, load_config, load_config_mapping
from kongtaskd.errors import ConfigError

ConfigSource = Config | str | os.PathLike[str] | Mapping[str, Any]


def _load(source: ConfigSource) -> Callable[[], Config]:
    """How to read the configuration (again, at a SIGHUP)."""
    if isinstance(source, Config):
        return lambda: source
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        return lambda: load_config(path)
    if isinstance(source, Mapping):
        data = dict(source)
        return lambda: load_config_mapping(data, "kongtaskd.run(config)")
    raise TypeError(
        "kongtaskd.run: config must be a Config, a path to a YAML file or a dict of its keys,"
        f" got {type(source).__name__}"
    )


def _split(tasks: Mapping[str, Callable[..., Any] | str]) -> tuple[dict[str, str], dict[str, Any]]:
    specs: dict[str, str] = {}
    callables: dict[str, Any] = {}
    for identifier, handler in tasks.items():
        if not isinstance(identifier, str) or not identifier:
            raise TypeError(f"kongtaskd.run: task identifier {identifier!r} is not a string")
        if isinstance(handler, str):
            specs[identifier] = handler
        elif callable(handler):
            callables[identifier] = handler
        else:
            raise TypeError(
                f"kongtaskd.run: the handler of task {identifier!r} is a "
                f"{type(handler).__name__}, not a callable or 'module:function'"
            )
    return specs, callables


def run(
    config: ConfigSource,
    *,
    tasks: Mapping[str, Callable[..., Any] | str] | None = None,
    once: bool = False,
) -> int:
    """Run the daemon here until it stops; return its exit code (``kongtaskd.errors.ExitCode``).

    ``config``: a ``Config``, a YAML path, or a dict of the YAML keys (the same checks and
    messages). ``tasks`` adds handlers: identifier -> callable or ``"module:function"``.
    """
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError(
            "kongtaskd.run must be called from the main thread (it installs signal handlers)"
        )
    specs, callables = _split(tasks or {})
    read = _load(config)

    def complete() -> Config:
        loaded = read()
        if specs:
            merged = dict(loaded.tasks)
            merged.update({name: TaskSpec(name, spec) for name, spec in specs.items()})
            loaded = dataclasses.replace(loaded, tasks=merged)
        if not callables:
            loaded.require_tasks()
        return loaded

    first = complete()
    added: list[str] = []
    for identifier, func in callables.items():
        if identifier in first.tasks:
            raise ConfigError(
                f"kongtaskd.run: task {identifier!r} is given as a callable and also under 'tasks'"
            )
        if identifier not in registry._DECORATED:
            added.append(identifier)
        registry.task(identifier)(func)  # the zygote, forked from here, finds it there
    from kongtaskd.supervisor import run as supervise

    servers: list[Any] = []

    def with_database(loaded: Config) -> Config:
        """``connection: embedded[:PATH]``: that server, started (or reused) for this run."""
        if not loaded.is_embedded or loaded.connection is None:
            return loaded
        from kongtaskd.embedded import data_dir_of
        from kongtaskd.embedded import start as start_embedded

        data_dir = data_dir_of(loaded.connection)
        server = next((s for s in servers if s.data_dir == data_dir), None)
        if server is None:
            server = start_embedded(data_dir)
            servers.append(server)
        return dataclasses.replace(loaded, connection=server.uri)

    try:
        return supervise(with_database(first), once=once, reload=lambda: with_database(complete()))
    finally:
        for server in servers:
            server.close()
        for identifier in added:  # a later run in this process starts from a clean table
            registry._DECORATED.pop(identifier, None)
