"""The secrets this process holds, and scrubbing text of them before anyone sees it.

libpq quotes fragments of a connection string in its messages (a host name that took half
of a password with an unencoded ``@``, the token after a space in an unquoted password), so
no pattern can tell which part of a message was a password. Instead every secret is
registered once (:func:`register_secret`, fed by config loading and by
:func:`kongtaskd.dsn.connect`) and :func:`scrub` hides every run of
:data:`~kongtaskd.tunables.SECRET_WINDOW` or more characters of any registered secret,
wherever it appears. Log formatters, the CLI's error lines, the process title and every
user-facing error path use it.

A secret is registered with the spellings it may take on the way out: percent-encoded and
-decoded (URIs), JSON- and ``repr``-escaped (log lines, ``{value!r}`` in messages).
Secrets shorter than the window are hidden only where a double-quoted fragment of a message
holds them whole: masking every ``b`` of a text for a one-letter password helps nobody.

The registry is a frozenset replaced whole, so a reader in another thread (the metrics
server's) never sees it half-updated; children inherit it across ``fork()``.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Iterable

from setproctitle import getproctitle, setproctitle

from kongtaskd import tunables

MASK = "***"

_QUOTED = re.compile(r'"[^"]*"')

_secrets: frozenset[str] = frozenset()
_windows: frozenset[str] = frozenset()


def registry() -> frozenset[str]:
    """The registered secrets (every spelling): a new value after every change, so a cache
    of scrubbed texts can tell when to forget (``kongtaskd.logs``)."""
    return _secrets


def spellings(secret: str) -> set[str]:
    """``secret`` and the forms it takes when encoded into a URI, JSON or a ``repr``."""
    found = {secret, urllib.parse.unquote(secret)}
    for value in list(found):
        found.add(urllib.parse.quote(value, safe=""))
        found.add(urllib.parse.quote_plus(value, safe=""))
        found.add(json.dumps(value)[1:-1])
        found.add(json.dumps(value, ensure_ascii=False)[1:-1])
        found.add(repr(value)[1:-1])
    return {s for s in found if s}


def _windows_of(secrets: Iterable[str]) -> set[str]:
    size = tunables.SECRET_WINDOW
    return {
        secret[i : i + size] for secret in secrets for i in range(max(0, len(secret) - size + 1))
    }


def register_secret(*values: str | None) -> None:
    """Never show these values (or any long enough part of them) again in this process.

    Registering also scrubs the process title: a secret given on the command line
    (``--connection postgresql://...``) is otherwise visible to every user in ``ps``.
    """
    global _secrets, _windows
    new = {s for value in values if value for s in spellings(value)} - _secrets
    if not new:
        return
    _secrets = _secrets | new
    _windows = _windows | _windows_of(new)
    scrub_process_title()


def forget_secrets() -> None:
    """Empty the registry (tests that check what registering does)."""
    global _secrets, _windows
    _secrets = _windows = frozenset()


def scrub(text: str, extra: Iterable[str] = ()) -> str:
    """``text`` with every run of secret characters replaced by ``***``.

    ``extra`` are secrets for this call only (a connection string's passwords while it is
    being checked). A run covered by overlapping windows becomes one ``***``.
    """
    extras = {s for value in extra if value for s in spellings(value)}
    secrets = _secrets | extras if extras else _secrets
    if not secrets or not text:
        return text
    windows = _windows | _windows_of(extras) if extras else _windows
    size = tunables.SECRET_WINDOW
    # One C-level substring test per window, not a Python step per character: a log line
    # is scrubbed in about a microsecond per window of a typical password.
    hits = [window for window in windows if window in text]
    if hits:
        hidden = bytearray(len(text))
        for window in hits:
            start = text.find(window)
            while start >= 0:
                hidden[start : start + size] = b"\1" * size
                start = text.find(window, start + 1)
        parts: list[str] = []
        at = 0
        for match in re.finditer(b"\1+", bytes(hidden)):
            parts.append(text[at : match.start()])
            parts.append(MASK)
            at = match.end()
        parts.append(text[at:])
        text = "".join(parts)
    short = [s for s in secrets if len(s) < size]
    if short:
        text = _QUOTED.sub(
            lambda m: f'"{MASK}"' if any(s in m.group(0) for s in short) else m.group(0), text
        )
    return text


def scrub_process_title() -> None:
    """Rewrite this process's title (``ps``, ``/proc/PID/cmdline``) without secrets.

    Before kongtaskd sets a title of its own, the title is the command line, which may
    carry ``--connection`` with a password.
    """
    title = getproctitle()
    clean = scrub(title)
    if clean != title:
        setproctitle(clean)
