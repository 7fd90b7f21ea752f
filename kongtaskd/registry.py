"""Task identifiers -> handler callables.

Two ways to name a handler, both resolved in a zygote (``zygote.py``), the process the
children fork from (the supervisor never imports user code, so a crashing import cannot
take it down, and a reload whose code does not import is refused):

* the ``tasks:`` mapping of the config: ``identifier: "package.module:function"``;
* the ``@kongtaskd.task("identifier")`` decorator in a module listed in ``task_modules:``;
  it may carry fleet-wide caps too (``concurrency=3, rate="10/s"``), checked with the
  config's rules (``config.parse_concurrency``/``parse_rate``) when the decorator runs. The
  zygote reports them (``decorated_caps``) so the supervisor writes them, never importing
  the module itself.
"""

from __future__ import annotations

import importlib
import sys
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from kongtaskd.errors import TaskImportError

if TYPE_CHECKING:
    from kongtaskd.config import Rate

Handler = Callable[..., Any]
F = TypeVar("F", bound=Handler)

#: Filled by @task as decorated modules are imported: identifier -> (callable, where).
_DECORATED: dict[str, tuple[Handler, str]] = {}
#: The caps @task gave, of the identifiers that have any: identifier -> (concurrency, rate).
_CAPS: dict[str, tuple[int | None, Rate | None]] = {}

MAX_IDENTIFIER_LENGTH = 128  # graphile-worker's CHECK on _private_tasks.identifier


def task(
    identifier: str, *, concurrency: int | None = None, rate: str | None = None
) -> Callable[[F], F]:
    """Register the decorated function as the handler of ``identifier``.

    The module must be listed in ``task_modules:`` so the child imports it. ``concurrency``
    and ``rate`` are the task's fleet-wide caps, as under ``tasks:`` (a ``tasks:`` entry's
    own values win over them); bad ones raise ValueError here, at decoration time.
    """
    if not isinstance(identifier, str) or not identifier:
        raise ValueError("kongtaskd.task() needs a non-empty task identifier string")
    if len(identifier) > MAX_IDENTIFIER_LENGTH:
        raise ValueError(f"task identifier longer than {MAX_IDENTIFIER_LENGTH} characters")
    caps = _checked_caps(identifier, concurrency, rate)

    def register(func: F) -> F:
        where = f"{func.__module__}:{func.__qualname__}"
        previous = _DECORATED.get(identifier)
        if previous is not None and previous[1] != where:
            raise ValueError(
                f"task {identifier!r} is registered twice: by {previous[1]} and by {where}"
            )
        _DECORATED[identifier] = (func, where)
        if caps is not None:
            _CAPS[identifier] = caps
        else:
            _CAPS.pop(identifier, None)
        return func

    return register


def _checked_caps(
    identifier: str, concurrency: object, rate: object
) -> tuple[int | None, Rate | None] | None:
    """The decorator's caps, checked by the config's own rules (one definition of what a
    cap may be), or None without any; ValueError naming the task and the argument."""
    if concurrency is None and rate is None:
        return None
    # Imported here: ``import kongtaskd`` (the enqueue API) does not pay for the config.
    from kongtaskd.config import Invalid, parse_concurrency, parse_rate

    try:
        cap = None if concurrency is None else parse_concurrency(concurrency, "concurrency")
        limit = None if rate is None else parse_rate(rate, "rate")
    except Invalid as exc:
        raise ValueError(f"@kongtaskd.task({identifier!r}): {exc}") from None
    return cap, limit


def decorated_caps(identifiers: Iterable[str]) -> dict[str, tuple[int | None, Rate | None]]:
    """The caps ``@task`` gave these identifiers (only those that have any)."""
    return {name: _CAPS[name] for name in identifiers if name in _CAPS}


def resolve(spec: str, *, identifier: str = "") -> Handler:
    """Import ``"package.module:function"`` (the function may be dotted: ``Class.method``)."""
    label = f"task {identifier!r}: " if identifier else ""
    module_name, sep, attr_path = spec.partition(":")
    if not sep or not module_name or not attr_path:
        raise TaskImportError(f"{label}handler {spec!r} is not of the form 'module:function'")
    module = import_module(module_name, label)
    target: Any = module
    for part in attr_path.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise TaskImportError(
                f"{label}module {module_name!r} has no attribute {attr_path!r}"
            ) from None
    if not callable(target):
        raise TaskImportError(f"{label}{spec!r} is not callable")
    return target  # type: ignore[no-any-return]


def import_module(name: str, label: str = "") -> Any:
    try:
        return importlib.import_module(name)
    except Exception as exc:  # any failure of user code at import time is a config problem
        if isinstance(exc, SyntaxError):  # its str() repeats file and line, in brackets
            detail = f"{type(exc).__name__}: {exc.msg}"
        else:
            detail = f"{type(exc).__name__}: {exc}"
        where = fault_location(exc)
        at = f" at {where}" if where else ""
        raise TaskImportError(f"{label}cannot import module {name!r}{at}: {detail}") from exc


def fault_location(exc: BaseException) -> str:
    """``file:line`` of what broke an import: the syntax error's, else the innermost frame of
    user code (not importlib's, not ours); "" when the module itself was not found."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{exc.filename}:{exc.lineno}" if exc.lineno else exc.filename
    machinery = (str(Path(importlib.__file__).parent), __file__)
    frames = [
        frame
        for frame in traceback.extract_tb(exc.__traceback__)
        if not frame.filename.startswith("<") and not frame.filename.startswith(machinery)
    ]
    if not frames:
        return ""
    return f"{frames[-1].filename}:{frames[-1].lineno}"


def load_handlers(
    tasks: Mapping[str, str],
    task_modules: Sequence[str] = (),
    python_path: Sequence[str | Path] = (),
) -> dict[str, Handler]:
    """Import every configured handler and return identifier -> callable.

    ``tasks`` maps identifiers to ``module:function`` specs; ``task_modules`` are imported
    so their ``@task`` decorators run. An identifier named both ways must name the same
    function.
    """
    for entry in reversed(list(python_path)):
        path = str(entry)
        if path not in sys.path:
            sys.path.insert(0, path)
    handlers: dict[str, Handler] = {}
    for identifier, spec in tasks.items():
        handlers[identifier] = resolve(spec, identifier=identifier)
    for module_name in task_modules:
        import_module(module_name)
    for identifier, (func, where) in _DECORATED.items():
        existing = handlers.get(identifier)
        if existing is not None and existing is not func:
            raise TaskImportError(
                f"task {identifier!r} is named in 'tasks' and also registered by @task in {where}"
            )
        handlers[identifier] = func
    if not handlers:
        raise TaskImportError(
            "no task handlers: name some under 'tasks:' or list modules under 'task_modules:'"
        )
    return handlers


def check_caps_only(caps_only: Mapping[str, str], handlers: Mapping[str, Handler]) -> None:
    """A ``tasks:`` entry without a handler caps a task some module registers; one whose
    task none does is a mistake (a typo, a module missing from ``task_modules``): raise
    TaskImportError naming the key and where it was set. ``caps_only``: identifier ->
    ``file:line`` of its entry."""
    for identifier, where in caps_only.items():
        if identifier not in handlers:
            at = f"{where}: " if where else ""
            raise TaskImportError(
                f"{at}tasks.{identifier}: a cap on a task this daemon does not run: no module "
                f"of task_modules registers {identifier!r} with @kongtaskd.task"
            )
