"""Cron: graphile-worker's crontab syntax, tick maths in a time zone, and the scheduler.

Syntax (graphile-worker 0.18's, so one crontab file can serve Node and Python daemons)::

    # minute hour day-of-month month day-of-week task ?options {payload}
    0 4 * * 1-5 cleanup ?id=weekday_cleanup&fill=2h&max=3&queue=maint&priority=-1 {days: 7}

* Time fields: numbers, ``a-b`` ranges, ``*`` and ``*/n``, and comma lists of those.
  Day-of-week is 0-6 from Sunday, 7 is Sunday too. Steps on ranges (``1-30/5``) and names
  (``MON``) are not graphile-worker syntax and are rejected, so a crontab accepted here
  also works in a Node worker. When day-of-month and day-of-week are both restricted, a
  day matching either runs (the classic cron OR rule); "restricted" means "does not cover
  every value", as in graphile-worker.
* Options (query-string syntax): ``id`` (default: the task; must be unique), ``fill``
  (backfill window, e.g. ``1d2h``), ``max`` (max_attempts), ``queue``, ``priority``,
  ``jobKey``, ``jobKeyMode`` (``replace`` or ``preserve_run_at``).
* Payload: one JSON5 object on the line. The job's payload is that object plus
  ``"_cron": {"ts": "<tick, ISO 8601 UTC with milliseconds>", "backfilled": <bool>}``,
  byte for byte what graphile-worker sends.

Every fault is a :class:`~kongtaskd.errors.ConfigError` naming the line, e.g.
``/etc/kongtask.yaml: crontab line 3: minute field '61' is out of range 0-59``. A few
faults graphile-worker lets through are errors here too, because they can only be
mistakes: a line that can never fire (``0 0 31 2 *``), ``jobKeyMode`` without ``jobKey``,
an empty ``jobKey``, and numbers the database would refuse (``max=0``, ``priority=40000``).

Time zones (``timezone:``; graphile-worker knows only UTC). A tick is a UTC minute; it
fires a schedule when the wall-clock time of that minute in the zone matches. Daylight
saving time changes bend that rule in two places, the way Vixie cron and cronie do:

* Schedules whose hour field is every hour (``30 * * * *``, ``*/5 * * * *``) follow the
  clock in real time: in a repeated hour (autumn) they run in both passes, and a skipped
  hour (spring) has nothing of theirs to make up. ``0 * * * *`` runs once every real hour
  through both changes.
* Every other schedule runs once per wall-clock day, as written: a wall-clock time that
  is skipped runs at the first instant after the gap (02:30 on a spring-forward day runs
  at 03:00 new time, once), and a repeated one runs at its first occurrence only (01:30
  on a fall-back day runs at 01:30 summer time, not again an hour later).

``_cron.ts`` and ``last_execution`` are always the tick's UTC instant. Daemons that share
a crontab identifier must use the same time zone, and graphile-worker's is UTC: with
different zones they would schedule different instants, each of which passes the gate.

Exactly once across the fleet (``sql/cron_schedule.sql``): each tick is one statement that
upserts ``_private_known_crontabs.last_execution`` forward and calls ``add_job`` only for
the identifiers whose row it moved, the same gate graphile-worker uses; so kongtaskd
daemons and Node workers on one database never double-fire a tick. At start,
identifiers the table has never seen are registered (``known_since`` = now, never
backfilled); for known ones, ticks within their ``fill`` window and after
``coalesce(last_execution, known_since)`` are scheduled with ``backfilled: true``, oldest
first, before any live tick (later ticks would move ``last_execution`` past them).

The scheduler never blocks the supervisor's loop for long: :meth:`CronScheduler.run_due`
does at most :data:`MAX_STATEMENTS_PER_CALL` statements and scans at most
:data:`MAX_MINUTES_PER_CALL` minutes, and :meth:`CronScheduler.next_due` says when to call
it next (in the past while backfill or catch-up remains). A late call catches up every
minute it missed, as graphile-worker's late timer does; so does a reconnect, because the
scheduler resumes from the first tick it has not done yet (graphile-worker, restarting its
cron after an error, would skip those ticks unless ``fill`` covers them).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import difflib
import functools
import json
import logging
import math
import re
import time
import unicodedata
import zoneinfo
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from psycopg2.extensions import connection as Connection

from kongtaskd.config import Config
from kongtaskd.enqueue import (
    MAX_IDENTIFIER_LENGTH,
    MAX_JOB_KEY_LENGTH,
    MAX_QUEUE_NAME_LENGTH,
    SMALLINT_MAX,
    SMALLINT_MIN,
)
from kongtaskd.errors import ConfigError
from kongtaskd.queries import statement

__all__ = [
    "CronItem",
    "CronScheduler",
    "Json5Error",
    "fire_times",
    "load_crontab",
    "next_fire_time",
    "parse_crontab",
    "parse_json5",
]

log = logging.getLogger("kongtaskd.cron")

MINUTE = dt.timedelta(minutes=1)
UTC = dt.timezone.utc

#: Upper bound of database statements one ``run_due`` call makes (each schedules one tick,
#: a millisecond or two); a long backfill is spread over many supervisor turns instead of
#: stalling dispatch.
MAX_STATEMENTS_PER_CALL = 20
#: Upper bound of minutes one ``run_due`` call examines (pure Python, a few microseconds
#: each); a catch-up after days asleep or a week-long ``fill`` also takes several turns.
MAX_MINUTES_PER_CALL = 1440
#: ``next_due`` looks this far ahead for the next minute something fires; beyond that it
#: asks to be called at the horizon, which costs one empty scan.
LOOKAHEAD_MINUTES = 60
#: Seconds after a minute boundary at which ``next_due`` asks to be called, so a timer
#: that wakes a hair early still lands in the new minute (graphile-worker adds 1 ms).
EPSILON = 0.005

# graphile-worker's patterns (cronConstants.js), rewritten.
_TASK = re.compile(r"[_a-zA-Z][_a-zA-Z0-9:/_-]*\Z")
_ID = re.compile(r"[_a-zA-Z][-_a-zA-Z0-9]*\Z")
_FILL = re.compile(r"(?:[0-9]+[smhdw])+\Z")
_FILL_PART = re.compile(r"([0-9]+)([smhdw])")
_UNSIGNED = re.compile(r"[0-9]+\Z")
_SIGNED = re.compile(r"-?[0-9]+\Z")
_QUEUE = re.compile(r"[-a-zA-Z0-9_:]+\Z")
_FIELD_CHARS = re.compile(r"[0-9*/,-]+\Z")
_NUMBER = re.compile(r"([0-9]+)\Z")
_RANGE = re.compile(r"([0-9]+)-([0-9]+)\Z")
_WILDCARD = re.compile(r"\*(?:/([0-9]+))?\Z")
_COMMAND = re.compile(r"(\S+)(?:\s+(.*))?\Z", re.DOTALL)
_NUMBER_LITERAL = re.compile(r"(0|[1-9][0-9]*)?(\.[0-9]*)?([eE][+-]?[0-9]+)?")

_FILL_UNITS = {
    "s": dt.timedelta(seconds=1),
    "m": MINUTE,
    "h": dt.timedelta(hours=1),
    "d": dt.timedelta(days=1),
    "w": dt.timedelta(weeks=1),
}
_OPTIONS = ("id", "fill", "max", "queue", "priority", "jobKey", "jobKeyMode")
_CRONTAB_JOB_KEY_MODES = ("replace", "preserve_run_at")

# (name, low, high) of the five time fields; day-of-week's 7 is folded to 0 (Sunday).
_FIELDS = (
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day-of-month", 1, 31),
    ("month", 1, 12),
    ("day-of-week", 0, 6),
)
# Longest month length (leap years included), for the "can never fire" check.
_MONTH_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


class _LineError(Exception):
    """A fault on one crontab line; the caller adds where the line is."""


# ======================================================================================
# JSON5 (the payload)
# ======================================================================================


class Json5Error(ValueError):
    def __init__(self, message: str, position: int) -> None:
        super().__init__(f"{message} at column {position + 1}")


def parse_json5(text: str) -> Any:
    """Parse JSON5 text: JSON plus comments, trailing commas, unquoted keys, single quotes,
    hex and signed numbers, leading/trailing decimal points, line continuations.

    Numbers come back as JavaScript would print them: ``1.0`` and ``1e3`` are ints. NaN
    and Infinity are refused, because a job payload is stored as JSON, which has neither.
    (The grammar is small and fixed; a dependency for it would be more to keep than this.)
    """
    parser = _Json5(text)
    parser.skip_space()
    value = parser.value()
    parser.skip_space()
    if parser.pos < len(text):
        raise Json5Error(f"unexpected {parser.shown()} after the value", parser.pos)
    return value


_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
_LINE_BREAKS = "\n\r\u2028\u2029"


class _Json5:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def shown(self) -> str:
        char = self.peek()
        return repr(char) if char else "end of input"

    def skip_space(self) -> None:
        text = self.text
        while self.pos < len(text):
            char = text[self.pos]
            if char.isspace() or char == "\ufeff":
                self.pos += 1
            elif text.startswith("//", self.pos):
                while self.pos < len(text) and text[self.pos] not in _LINE_BREAKS:
                    self.pos += 1
            elif text.startswith("/*", self.pos):
                end = text.find("*/", self.pos + 2)
                if end < 0:
                    raise Json5Error("unterminated /* comment", self.pos)
                self.pos = end + 2
            else:
                return

    def value(self) -> Any:
        char = self.peek()
        if char == "{":
            return self.object()
        if char == "[":
            return self.array()
        if char in ("'", '"'):
            return self.string()
        if char and (char in "+-." or char.isdigit()):
            return self.number()
        for word, result in (("true", True), ("false", False), ("null", None)):
            if self.text.startswith(word, self.pos) and not self.continues(len(word)):
                self.pos += len(word)
                return result
        if self.text.startswith(("Infinity", "NaN"), self.pos):
            raise Json5Error("NaN and Infinity cannot be stored in a JSON payload", self.pos)
        raise Json5Error(f"unexpected {self.shown()}", self.pos)

    def continues(self, length: int) -> bool:
        """Whether an identifier character follows a keyword (``nullable`` is not null)."""
        end = self.pos + length
        return end < len(self.text) and _identifier_char(self.text[end])

    def object(self) -> dict[str, Any]:
        self.pos += 1
        result: dict[str, Any] = {}
        while True:
            self.skip_space()
            if self.peek() == "}":
                self.pos += 1
                return result
            key = self.key()
            self.skip_space()
            if self.peek() != ":":
                raise Json5Error(f"expected ':' after key {key!r}, got {self.shown()}", self.pos)
            self.pos += 1
            self.skip_space()
            result[key] = self.value()
            self.skip_space()
            if self.peek() == ",":
                self.pos += 1
            elif self.peek() != "}":
                raise Json5Error(f"expected ',' or '}}', got {self.shown()}", self.pos)

    def key(self) -> str:
        char = self.peek()
        if char in ("'", '"'):
            return self.string()
        if char and (char.isalpha() or char in "$_"):
            start = self.pos
            while self.pos < len(self.text) and _identifier_char(self.text[self.pos]):
                self.pos += 1
            return self.text[start : self.pos]
        raise Json5Error(f"expected a key, got {self.shown()}", self.pos)

    def array(self) -> list[Any]:
        self.pos += 1
        result: list[Any] = []
        while True:
            self.skip_space()
            if self.peek() == "]":
                self.pos += 1
                return result
            result.append(self.value())
            self.skip_space()
            if self.peek() == ",":
                self.pos += 1
            elif self.peek() != "]":
                raise Json5Error(f"expected ',' or ']', got {self.shown()}", self.pos)

    def string(self) -> str:
        quote = self.text[self.pos]
        start = self.pos
        self.pos += 1
        parts: list[str] = []
        text = self.text
        while True:
            if self.pos >= len(text):
                raise Json5Error("unterminated string", start)
            char = text[self.pos]
            if char == quote:
                self.pos += 1
                return "".join(parts)
            if char in "\n\r":
                raise Json5Error("line break inside a string", self.pos)
            if char != "\\":
                parts.append(char)
                self.pos += 1
                continue
            self.pos += 1
            escape = self.peek()
            if not escape:
                raise Json5Error("unterminated string", start)
            self.pos += 1
            if escape in _ESCAPES:
                parts.append(_ESCAPES[escape])
            elif escape == "x":
                parts.append(chr(self.hex_digits(2)))
            elif escape == "u":
                parts.append(chr(self.hex_digits(4)))
            elif escape == "0" and not self.peek().isdigit():
                parts.append("\0")
            elif escape.isdigit():
                raise Json5Error(f"invalid escape '\\{escape}'", self.pos - 2)
            elif escape == "\r":
                if self.peek() == "\n":  # a line continuation: the break is dropped
                    self.pos += 1
            elif escape in _LINE_BREAKS:
                pass
            else:
                parts.append(escape)  # \' \" \\ \/ and any other character stand for themselves

    def hex_digits(self, count: int) -> int:
        digits = self.text[self.pos : self.pos + count]
        if len(digits) != count or any(c not in "0123456789abcdefABCDEF" for c in digits):
            raise Json5Error(f"expected {count} hex digits", self.pos)
        self.pos += count
        return int(digits, 16)

    def number(self) -> int | float:
        start = self.pos
        text = self.text
        sign = 1
        if text[self.pos] in "+-":
            sign = -1 if text[self.pos] == "-" else 1
            self.pos += 1
        if text.startswith(("Infinity", "NaN"), self.pos):
            raise Json5Error("NaN and Infinity cannot be stored in a JSON payload", start)
        if text.startswith(("0x", "0X"), self.pos):
            self.pos += 2
            digits_start = self.pos
            while self.pos < len(text) and text[self.pos] in "0123456789abcdefABCDEF":
                self.pos += 1
            if self.pos == digits_start:
                raise Json5Error("expected hex digits after '0x'", self.pos)
            return sign * int(text[digits_start : self.pos], 16)
        match = _NUMBER_LITERAL.match(text, self.pos)
        assert match is not None  # every group is optional: it always matches
        whole, fraction, exponent = match.groups()
        if not whole and (not fraction or fraction == "."):
            raise Json5Error("invalid number", start)
        literal = match.group(0)
        self.pos += len(literal)
        if self.peek().isdigit():
            raise Json5Error("leading zeros are not allowed in numbers", start)
        if fraction or exponent:
            number = float(literal) * sign
            if math.isinf(number):
                raise Json5Error("number too large for a JSON payload", start)
            # JavaScript has one number type: 1.0 is 1 and prints as 1.
            if number.is_integer() and abs(number) < 1e21:
                return int(number)
            return number
        return sign * int(literal)


def _identifier_char(char: str) -> bool:
    return (
        char.isalnum()
        or char in "$_\u200c\u200d"
        or unicodedata.category(char) in ("Mn", "Mc", "Pc", "Nd")
    )


# ======================================================================================
# Crontab lines
# ======================================================================================


@dataclasses.dataclass(frozen=True)
class CronItem:
    """One crontab line, parsed and checked."""

    #: 1-based line number in the crontab (for messages).
    line: int
    minutes: frozenset[int]
    hours: frozenset[int]
    dates: frozenset[int]
    months: frozenset[int]
    #: 0 = Sunday.
    dows: frozenset[int]
    task: str
    #: Unique within the crontab; the key of ``_private_known_crontabs``.
    identifier: str
    #: Backfill window; zero means no backfill.
    fill: dt.timedelta = dt.timedelta(0)
    max_attempts: int | None = None
    queue_name: str | None = None
    priority: int | None = None
    job_key: str | None = None
    job_key_mode: str | None = None
    #: The JSON5 payload object, or None when the line has none.
    payload: dict[str, Any] | None = dataclasses.field(default=None, hash=False)

    @property
    def every_hour(self) -> bool:
        """Whether the hour field covers all 24 hours (see the DST rule above)."""
        return len(self.hours) == 24

    def day_matches(self, day: dt.date) -> bool:
        if day.month not in self.months:
            return False
        # graphile-worker's test for "restricted": the field does not list every value.
        date_restricted = len(self.dates) != 31
        dow_restricted = len(self.dows) != 7
        date_ok = day.day in self.dates
        dow_ok = day.isoweekday() % 7 in self.dows
        if date_restricted and dow_restricted:
            return date_ok or dow_ok
        if date_restricted:
            return date_ok
        if dow_restricted:
            return dow_ok
        return True

    def matches(self, wall: dt.datetime) -> bool:
        """Whether a wall-clock minute (naive) matches the five fields."""
        return wall.minute in self.minutes and wall.hour in self.hours and self.day_matches(wall)

    def fires(self, moment: _Moment) -> bool:
        """Whether the tick described by ``moment`` fires this schedule (the DST rule)."""
        if self.every_hour:
            return self.matches(moment.wall)
        if moment.repeated:
            return False
        return self.matches(moment.wall) or any(self.matches(w) for w in moment.skipped)

    def job_spec(self, tick: dt.datetime, backfilled: bool) -> dict[str, Any]:
        """This item's job for ``tick``, as ``sql/cron_schedule.sql`` takes it."""
        payload = dict(self.payload or {})
        # Assigning keeps a user's own "_cron" key in place, like JavaScript's spread does.
        payload["_cron"] = {"ts": _iso(tick), "backfilled": backfilled}
        return {
            "identifier": self.identifier,
            "task": self.task,
            "payload": payload,
            "queue_name": self.queue_name,
            "max_attempts": self.max_attempts,
            "priority": self.priority,
            "job_key": self.job_key,
            "job_key_mode": self.job_key_mode,
        }


def _iso(tick: dt.datetime) -> str:
    """JavaScript's ``Date.prototype.toISOString`` of a UTC minute."""
    tick = tick.astimezone(UTC)
    return tick.strftime("%Y-%m-%dT%H:%M:%S.") + f"{tick.microsecond // 1000:03d}Z"


def parse_crontab(text: str, prefix: str = "crontab ") -> list[CronItem]:
    """Parse crontab text; a fault raises ConfigError ``<prefix>line N: <fault>``."""
    items: list[CronItem] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(re.split(r"\r?\n", text), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            item = _parse_line(line, number)
            if item.identifier in seen:
                raise _LineError(
                    f"duplicate identifier '{item.identifier}' (also on line "
                    f"{seen[item.identifier]}); give one of them its own ?id=..."
                )
        except _LineError as exc:
            raise ConfigError(f"{prefix}line {number}: {exc}") from None
        seen[item.identifier] = number
        items.append(item)
    return items


def load_crontab(config: Config) -> list[CronItem]:
    """The configuration's crontab (inline ``crontab:`` or ``crontab_file:``), parsed.

    ``[]`` when neither is set. Faults are ConfigErrors naming the file and line:
    ``kongtask.yaml: crontab line 3: ...`` or ``/etc/kongtask/crontab: line 3: ...``.
    """
    if config.crontab is not None:
        source = config.source or "configuration"
        return parse_crontab(config.crontab, f"{source}: crontab ")
    if config.crontab_file is not None:
        path = Path(config.crontab_file)
        try:
            text = path.read_text("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            where = f"{config.source}: " if config.source else ""
            raise ConfigError(f"{where}crontab_file: cannot read {path}: {reason}") from None
        return parse_crontab(text, f"{path}: ")
    return []


def _parse_line(line: str, number: int) -> CronItem:
    parts = line.split(None, 5)
    if len(parts) < 6:
        raise _LineError(
            "expected five time fields (minute hour day-of-month month day-of-week) and a "
            f"task identifier, got {len(parts)} field{'s' if len(parts) != 1 else ''}"
        )
    fields = [
        _parse_field(text, name, low, high, wrap=name == "day-of-week")
        for text, (name, low, high) in zip(parts[:5], _FIELDS, strict=True)
    ]
    minutes, hours, dates, months, dows = fields
    # When day-of-week does not restrict, the days are day-of-month's alone (no OR rule):
    # some listed month must have one of them.
    if len(dows) == 7 and not any(
        date <= _MONTH_DAYS[month - 1] for month in months for date in dates
    ):
        raise _LineError(
            f"'{parts[2]} {parts[3]}' never happens (no such day in those months), so "
            "this line would never run"
        )
    task, options, payload = _split_command(parts[5])
    item = CronItem(
        line=number,
        minutes=frozenset(minutes),
        hours=frozenset(hours),
        dates=frozenset(dates),
        months=frozenset(months),
        dows=frozenset(dows),
        task=task,
        identifier=task,
        payload=payload,
    )
    return dataclasses.replace(item, **_parse_options(options)) if options is not None else item


def _parse_field(text: str, name: str, low: int, high: int, *, wrap: bool) -> set[int]:
    """One time field, as graphile-worker reads it (cronMatcher.js)."""
    shown_range = f"{low}-{high + 1 if wrap else high}"
    if not _FIELD_CHARS.match(text):
        if any(c.isalpha() for c in text):
            problem = "names are not supported, use numbers"
        else:
            problem = "use numbers, ranges a-b, lists a,b and */n"
        raise _LineError(f"{name} field '{text}': {problem} ({shown_range})")
    values: set[int] = set()

    def add(value: int) -> None:
        folded = low if wrap and value == high + 1 else value
        if not low <= folded <= high:
            if text == str(value):
                raise _LineError(f"{name} field '{text}' is out of range {shown_range}")
            raise _LineError(f"{name} field '{text}': {value} is out of range {shown_range}")
        values.add(folded)

    for part in text.split(","):
        if match := _NUMBER.match(part):
            add(int(match.group(1)))
        elif match := _RANGE.match(part):
            first, last = int(match.group(1)), int(match.group(2))
            if last <= first:
                raise _LineError(f"{name} field '{text}': range '{part}' must go from low to high")
            for value in range(first, last + 1):
                add(value)
        elif match := _WILDCARD.match(part):
            step = int(match.group(1)) if match.group(1) is not None else 1
            if step < 1:
                raise _LineError(f"{name} field '{text}': step in '{part}' must be at least 1")
            values.update(range(low, high + 1, step))
        elif "/" in part:
            raise _LineError(
                f"{name} field '{text}': '{part}' is not supported; a step goes only on "
                "'*' (e.g. */15), as in graphile-worker"
            )
        else:
            raise _LineError(f"{name} field '{text}': '{part}' is not a number, a range a-b or */n")
    return values


def _split_command(command: str) -> tuple[str, str | None, dict[str, Any] | None]:
    """``task ?options {payload}`` -> its three parts (graphile-worker's CRONTAB_COMMAND)."""
    match = _COMMAND.match(command)
    assert match is not None  # the line was stripped and split: there is a first word
    task, rest = match.group(1), match.group(2) or ""
    if not _TASK.match(task):
        hint = ""
        if _FIELD_CHARS.match(task):
            hint = " (a sixth time field? crontab lines have five)"
        raise _LineError(
            f"invalid task identifier '{task}'{hint}: it must start with a letter or '_' and "
            "contain only letters, digits, '_', '-', ':' and '/'"
        )
    if len(task) > MAX_IDENTIFIER_LENGTH:
        raise _LineError(f"task identifier is longer than {MAX_IDENTIFIER_LENGTH} characters")
    options = None
    if rest.startswith("?"):
        match = _COMMAND.match(rest[1:])
        if match is None or rest[1:2].isspace():
            raise _LineError("'?' must be followed by options, e.g. ?fill=1h")
        options, rest = match.group(1), match.group(2) or ""
    payload = None
    if rest:
        if not (rest.startswith("{") and rest.endswith("}")):
            what = "after the options" if options is not None else "after the task identifier"
            raise _LineError(
                f"unexpected '{_clip(rest)}' {what}: options start with '?' and come "
                "first, the payload is a {...} object at the end of the line"
            )
        try:
            payload = parse_json5(rest)
        except Json5Error as exc:
            raise _LineError(f"payload is not valid JSON5: {exc}") from None
    return task, options, payload


def _clip(text: str) -> str:
    return text if len(text) <= 40 else text[:37] + "..."


def _parse_options(text: str) -> dict[str, Any]:
    """``id=x&fill=1h&...`` -> CronItem field values."""
    values: dict[str, str] = {}
    for key, value in parse_qsl(text, keep_blank_values=True):
        if key in values:
            raise _LineError(f"option '{key}' is given more than once")
        values[key] = value
    found: dict[str, Any] = {}
    for key, value in values.items():
        if key not in _OPTIONS:
            close = difflib.get_close_matches(key, _OPTIONS, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise _LineError(f"unknown option '{key}'{hint}; the options are {', '.join(_OPTIONS)}")
        found.update(_option(key, value))
    if found.get("job_key_mode") is not None and found.get("job_key") is None:
        raise _LineError("option jobKeyMode needs a jobKey")
    if found.get("job_key") is not None and found.get("job_key_mode") is None:
        found["job_key_mode"] = "replace"  # graphile-worker's default for keyed cron jobs
    return found


def _option(key: str, value: str) -> dict[str, Any]:
    def bad(expected: str) -> _LineError:
        return _LineError(f"option {key}={value!r}: expected {expected}")

    if key == "id":
        if not _ID.match(value):
            raise bad("a letter or '_' followed by letters, digits, '_' or '-'")
        return {"identifier": value}
    if key == "fill":
        if not _FILL.match(value):
            raise bad("a duration like 30m, 1d2h or 4w (units s, m, h, d, w)")
        total = dt.timedelta(0)
        for count, unit in _FILL_PART.findall(value):
            total += int(count) * _FILL_UNITS[unit]
        return {"fill": total}
    if key == "max":
        if not _UNSIGNED.match(value) or not 1 <= int(value) <= SMALLINT_MAX:
            raise bad(f"a whole number from 1 to {SMALLINT_MAX}")
        return {"max_attempts": int(value)}
    if key == "priority":
        if not _SIGNED.match(value) or not SMALLINT_MIN <= int(value) <= SMALLINT_MAX:
            raise bad(f"a whole number from {SMALLINT_MIN} to {SMALLINT_MAX}")
        return {"priority": int(value)}
    if key == "queue":
        if not _QUEUE.match(value) or len(value) > MAX_QUEUE_NAME_LENGTH:
            raise bad(f"up to {MAX_QUEUE_NAME_LENGTH} letters, digits, '-', '_' or ':' characters")
        return {"queue_name": value}
    if key == "jobKey":
        if not value or len(value) > MAX_JOB_KEY_LENGTH:
            raise bad(f"a non-empty key of at most {MAX_JOB_KEY_LENGTH} characters")
        return {"job_key": value}
    # jobKeyMode (unsafe_dedupe is not offered for cron jobs, as in graphile-worker)
    if value not in _CRONTAB_JOB_KEY_MODES:
        raise bad(" or ".join(_CRONTAB_JOB_KEY_MODES))
    return {"job_key_mode": value}


# ======================================================================================
# Ticks in a time zone
# ======================================================================================


@dataclasses.dataclass(frozen=True)
class _Moment:
    """One UTC minute as the zone's wall clock sees it."""

    #: The wall-clock time (naive).
    wall: dt.datetime
    #: The second pass through a repeated wall-clock time (the hour after a fall-back).
    repeated: bool
    #: Wall-clock minutes that never happened just before this one (a spring-forward gap).
    skipped: tuple[dt.datetime, ...]


def _zone(timezone: str | dt.tzinfo) -> dt.tzinfo:
    return zoneinfo.ZoneInfo(timezone) if isinstance(timezone, str) else timezone


def _moment(tick: dt.datetime, zone: dt.tzinfo) -> _Moment:
    local = tick.astimezone(zone)
    wall = local.replace(tzinfo=None)
    # zoneinfo marks the second occurrence of an ambiguous time with fold=1.
    repeated = local.fold == 1 and local.replace(fold=0).utcoffset() != local.utcoffset()
    before = (tick - MINUTE).astimezone(zone).replace(tzinfo=None)
    skipped: tuple[dt.datetime, ...] = ()
    if wall - before > MINUTE:
        count = (wall - before) // MINUTE - 1
        skipped = tuple(before + MINUTE * (n + 1) for n in range(count))
    return _Moment(wall, repeated, skipped)


def _floor_minute(instant: dt.datetime) -> dt.datetime:
    return instant.astimezone(UTC).replace(second=0, microsecond=0)


def _ceil_minute(instant: dt.datetime) -> dt.datetime:
    floor = _floor_minute(instant)
    return floor if floor == instant else floor + MINUTE


def _aware(instant: dt.datetime, what: str) -> dt.datetime:
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError(f"{what} must be a timezone-aware datetime, got {instant!r}")
    return instant.astimezone(UTC)


def _fire_instants(
    item: CronItem, start: dt.datetime, zone: dt.tzinfo, end: dt.datetime
) -> Iterator[dt.datetime]:
    """UTC minutes in [start, end) at which ``item`` fires, oldest first."""
    tick = _ceil_minute(start)
    while tick < end:
        moment = _moment(tick, zone)
        if item.fires(moment):
            yield tick
        elif not moment.skipped and not (
            item.day_matches(moment.wall) and moment.wall.hour in item.hours
        ):
            # Nothing in this wall-clock hour can match: jump to its end. Dates and hours
            # change only on wall-clock hour boundaries, so no match is jumped over.
            tick += MINUTE * (60 - moment.wall.minute)
            continue
        tick += MINUTE


def fire_times(
    item: CronItem, start: dt.datetime, end: dt.datetime, timezone: str | dt.tzinfo = "UTC"
) -> list[dt.datetime]:
    """The UTC instants in [start, end) at which ``item`` fires, with ``timezone``'s clock."""
    return list(_fire_instants(item, _aware(start, "start"), _zone(timezone), _aware(end, "end")))


def next_fire_time(
    item: CronItem,
    after: dt.datetime,
    timezone: str | dt.tzinfo = "UTC",
    *,
    within: dt.timedelta = dt.timedelta(days=8 * 366),
) -> dt.datetime | None:
    """The first UTC instant strictly after ``after`` at which ``item`` fires.

    ``None`` if none comes ``within`` (default eight years: enough for 29 February).
    """
    after = _aware(after, "after")
    start = _floor_minute(after) + MINUTE
    return next(_fire_instants(item, start, _zone(timezone), after + within), None)


# ======================================================================================
# The scheduler
# ======================================================================================


@functools.cache
@dataclasses.dataclass(frozen=True)
class _Backfill:
    item: CronItem
    #: Ticks before this were done by someone (or predate the identifier).
    not_before: dt.datetime


class CronScheduler:
    """Schedules a crontab's jobs from inside the supervisor's loop.

    Call :meth:`start` on every (re)connect, then :meth:`run_due` whenever
    :meth:`next_due` (epoch seconds) has passed. Both use the supervisor's autocommit
    connection and let psycopg2 errors propagate; after one, reconnect and call
    :meth:`start` again: nothing is lost, the scheduler resumes at the first tick it
    has not done.
    """

    def __init__(
        self,
        items: Sequence[CronItem],
        *,
        schema: str,
        timezone: str = "UTC",
        logger: logging.Logger | None = None,
    ) -> None:
        self.items = tuple(items)
        self.schema = schema
        self.timezone = timezone
        self.zone = _zone(timezone)
        self.log = logger or log
        #: The next tick to examine (a UTC minute); None until start().
        self.cursor: dt.datetime | None = None
        #: The start time: ticks before it are backfill or catch-up, from it on live.
        self.live_from: dt.datetime | None = None
        #: Ticks from here to live_from are catch-up after a reconnect (all items, not
        #: marked backfilled); before it, only backfill.
        self.resume_from: dt.datetime | None = None
        self.backfill: tuple[_Backfill, ...] = ()
        self._due_cache: tuple[dt.datetime, float] | None = None

    def reconfigure(self, items: Sequence[CronItem], *, timezone: str) -> None:
        """A reload (SIGHUP): new crontab and zone, same position in time.

        Call :meth:`start` afterwards (it registers new identifiers and plans their
        backfill); ticks up to now that this scheduler had not done yet are still done,
        so a reload at 12:00:00.001 does not lose the 12:00 tick.
        """
        self.items = tuple(items)
        self.timezone = timezone
        self.zone = _zone(timezone)
        self._due_cache = None

    # --- start -------------------------------------------------------------------------
    def start(self, conn: Connection, now: dt.datetime | None = None) -> None:
        """Register unknown identifiers, plan the backfill. Call at every (re)connect.

        Quick: two statements. The backfill itself is done by the following ``run_due``
        calls (``next_due`` is then in the past), oldest tick first, before live ticks.
        """
        start = _aware(now, "now") if now is not None else dt.datetime.now(UTC)
        live = _ceil_minute(start)
        # After a reconnect or reload, the live ticks this scheduler had not done yet are
        # caught up (as graphile-worker does for a late timer), not lost. An unfinished
        # backfill is not resumed as such: the new backfill plan below covers it.
        resume = None
        if self.cursor is not None and self.live_from is not None:
            resume = max(self.cursor, _ceil_minute(self.live_from))
        self.resume_from = resume if resume is not None and resume < live else None
        self.live_from = start
        self._due_cache = None
        self.backfill = ()
        if not self.items:
            self.cursor = live
            return
        identifiers = [item.identifier for item in self.items]
        rows = self._fetch(conn, "cron_known", {"identifiers": identifiers})
        known = {identifier: (since, last) for identifier, since, last in rows}
        unknown = [i for i in identifiers if i not in known]
        if unknown:
            self._fetch(conn, "cron_register", {"identifiers": unknown, "since": start})
            self.log.info("cron: first sight of %s", ", ".join(unknown))
        self.backfill = tuple(
            _Backfill(item, last or since)
            for item in self.items
            if item.fill > dt.timedelta(0) and item.identifier in known
            for since, last in [known[item.identifier]]
        )
        candidates = [live]
        if self.backfill:
            candidates.append(_ceil_minute(start - max(b.item.fill for b in self.backfill)))
        if self.resume_from is not None:
            candidates.append(self.resume_from)
        self.cursor = min(candidates)
        self.log.info(
            "cron: %d schedule%s (time zone %s)%s",
            len(self.items),
            "" if len(self.items) == 1 else "s",
            self.timezone,
            f"; catching up from {_iso(self.cursor)}" if self.cursor < live else "",
        )

    # --- run -----------------------------------------------------------------------------
    def next_due(self) -> float:
        """Epoch seconds (``time.time()``) when ``run_due`` should next be called.

        In the past while backfill or catch-up remains; ``math.inf`` for an empty crontab.
        """
        if self.cursor is None or self.live_from is None:
            return time.time()  # not started: the caller's start() is overdue
        if not self.items:
            return math.inf
        if self._due_cache is not None and self._due_cache[0] == self.cursor:
            return self._due_cache[1]
        if self.cursor < self.live_from:
            due = self.cursor.timestamp()
        else:
            tick = self.cursor
            for _ in range(LOOKAHEAD_MINUTES):
                if self._any_fires(tick):
                    break
                tick += MINUTE
            due = tick.timestamp() + EPSILON
        self._due_cache = (self.cursor, due)
        return due

    def seconds_until_due(self) -> float:
        """``next_due()`` as a delay from now (0 when overdue)."""
        return max(0.0, self.next_due() - time.time())

    def run_due(self, conn: Connection, now: dt.datetime | None = None) -> int:
        """Schedule every tick up to ``now`` that is not done yet; return the jobs added.

        Jobs another daemon already scheduled for a tick are not added again (the gate).
        Does at most MAX_STATEMENTS_PER_CALL statements; ``next_due`` says if more is due.
        """
        if self.cursor is None or self.live_from is None:
            raise RuntimeError("CronScheduler.run_due() called before start()")
        now = _aware(now, "now") if now is not None else dt.datetime.now(UTC)
        added = statements = 0
        for _ in range(MAX_MINUTES_PER_CALL):
            tick = self.cursor
            if tick > now or statements >= MAX_STATEMENTS_PER_CALL:
                break
            backfilling = tick < self.live_from and (
                self.resume_from is None or tick < self.resume_from
            )
            specs = self._backfill_specs(tick) if backfilling else self._live_specs(tick)
            if specs:
                added += self._schedule(conn, tick, specs, backfilled=backfilling)
                statements += 1
            # Only after success: a failed tick is retried after the reconnect.
            self.cursor = tick + MINUTE
        if self.resume_from is not None and self.cursor >= self.live_from:
            self.resume_from = None
        return added

    def _any_fires(self, tick: dt.datetime) -> bool:
        moment = _moment(tick, self.zone)
        return any(item.fires(moment) for item in self.items)

    def _live_specs(self, tick: dt.datetime) -> list[dict[str, Any]]:
        moment = _moment(tick, self.zone)
        return [item.job_spec(tick, backfilled=False) for item in self.items if item.fires(moment)]

    def _backfill_specs(self, tick: dt.datetime) -> list[dict[str, Any]]:
        assert self.live_from is not None
        age = self.live_from - tick
        candidates = [b for b in self.backfill if b.item.fill >= age and tick >= b.not_before]
        if not candidates:
            return []
        moment = _moment(tick, self.zone)
        return [b.item.job_spec(tick, backfilled=True) for b in candidates if b.item.fires(moment)]

    def _schedule(
        self, conn: Connection, tick: dt.datetime, specs: list[dict[str, Any]], *, backfilled: bool
    ) -> int:
        # Compact and unescaped, as JSON.stringify writes it: json_to_recordset keeps each
        # payload's text as is, so the stored payload is byte for byte graphile-worker's.
        payload = json.dumps(specs, separators=(",", ":"), ensure_ascii=False)
        rows = self._fetch(conn, "cron_schedule", {"specs": payload, "ts": tick})
        if rows:
            self.log.log(
                logging.INFO if backfilled else logging.DEBUG,
                "cron: %s %s for %s (job%s %s)",
                "backfilled" if backfilled else "scheduled",
                ", ".join(identifier for identifier, _ in rows),
                _iso(tick),
                "" if len(rows) == 1 else "s",
                ", ".join(str(job_id) for _, job_id in rows),
            )
        return len(rows)

    def _fetch(self, conn: Connection, name: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        text = statement(name, self.schema, conn)
        with conn.cursor() as cur:
            cur.execute(text, params)
            rows = cur.fetchall() if cur.description else []
        if not conn.autocommit:
            conn.commit()
        return rows
