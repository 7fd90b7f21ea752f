"""Connection strings: which one wins, how to show one safely, and connecting with clear errors.

A DSN may carry a password, and DSNs end up in error messages, log lines and ``ps`` output
of other tools. Everything here that turns a DSN or a libpq message into text goes through
:func:`mask_secrets`, so no password reaches a log or a terminal. Masking errs on the side
of hiding too much: a mangled host name in a message is a nuisance, a leaked password is not
recoverable.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import Any

import psycopg2
import psycopg2.extensions

from kongtaskd.errors import ConfigError, DatabaseError

MASK = "***"

# A URI-form DSN inside arbitrary text: stops at whitespace and at the quotes that usually
# surround it in messages, so the quote characters themselves survive.
_URI = re.compile(r"postgres(?:ql)?://[^\s'\"]*", re.IGNORECASE)

# ``password=...`` in key=value DSNs and in URI query strings; also catches PGPASSWORD=...
# The value is a single-quoted string (with backslash escapes, as libpq reads it) or a run
# of characters up to whitespace or the next URI parameter.
_KEYWORD_PASSWORD = re.compile(
    r"(?P<key>password\s*=\s*)(?P<value>'(?:[^'\\]|\\.)*'?|[^\s&'\"]*)", re.IGNORECASE
)

_QUOTED = re.compile(r'"[^"]*"')


def resolve_dsn(flag: str | None, file_value: str | None, environ: Mapping[str, str]) -> str:
    """The connection string to use: ``--connection`` > ``DATABASE_URL`` > the file's > "".

    An empty result means "let libpq decide": its ``PG*`` variables and built-in defaults
    (local socket, current user) then apply, exactly as for ``psql``.
    """
    if flag:
        return flag
    from_env = environ.get("DATABASE_URL")
    if from_env:
        return from_env
    if file_value:
        return file_value
    return ""


def _mask_uri(uri: str) -> str:
    scheme, sep, rest = uri.partition("://")
    # libpq ends the user-info at the first "@", but a password with an unencoded "@" is a
    # common mistake; cutting at the last "@" hides all of it in that case too.
    userinfo, at, hostpart = rest.rpartition("@")
    if at and ":" in userinfo:
        user = userinfo.split(":", 1)[0]
        rest = f"{user}:{MASK}@{hostpart}"
    return _KEYWORD_PASSWORD.sub(lambda m: m.group("key") + MASK, scheme + sep + rest)


def mask_dsn(dsn: str) -> str:
    """``dsn`` with any password replaced by ``***`` (URI and key=value forms)."""
    return mask_secrets(dsn)


def passwords_in(dsn: str) -> list[str]:
    """Every spelling of the password(s) in ``dsn`` (raw and percent-decoded).

    Used to scrub libpq messages that quote a fragment of the DSN verbatim (a bad
    percent-escape, an unterminated IPv6 address) where no ``password=`` marks it.
    """
    found: list[str] = []
    for match in _URI.finditer(dsn):
        userinfo, at, _ = match.group(0).partition("://")[2].rpartition("@")
        if at and ":" in userinfo:
            found.append(userinfo.split(":", 1)[1])
    for match in _KEYWORD_PASSWORD.finditer(dsn):
        value = match.group("value")
        if value.startswith("'"):
            value = value[1:-1] if value.endswith("'") and len(value) > 1 else value[1:]
        found.append(value)
    spellings = set(found)
    spellings.update(urllib.parse.unquote(p) for p in found)
    return sorted(p for p in spellings if p)


def mask_secrets(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every DSN password it embeds replaced by ``***``.

    ``secrets`` (see :func:`passwords_in`) are passwords known to be in play: a
    double-quoted fragment of ``text`` that contains one is replaced whole. libpq quotes
    the token it could not parse, and that token can be (part of) the password; replacing
    only quoted fragments keeps a one-letter password from blanking every such letter.
    """
    text = _URI.sub(lambda m: _mask_uri(m.group(0)), text)
    text = _KEYWORD_PASSWORD.sub(lambda m: m.group("key") + MASK, text)
    wanted = [secret for secret in secrets if secret]
    if wanted:
        text = _QUOTED.sub(
            lambda m: f'"{MASK}"' if any(s in m.group(0) for s in wanted) else m.group(0), text
        )
    return text


def _one_line(text: str) -> str:
    return " ".join(text.split())


# libpq: 'connection to server at "127.0.0.1", port 5433 failed: Connection refused' or
# 'connection to server on socket "/run/postgresql/.s.PGSQL.5432" failed: ...'
_LIBPQ_FAILED = re.compile(
    r'connection to server (?:at "(?P<host>[^"]*)"(?: \([^)]*\))?, port (?P<port>\d+)'
    r'|on socket "(?P<socket>[^"]*)") failed: (?P<reason>.*)'
)
_AUTH_PROBLEMS = (
    "password authentication failed",
    "authentication failed",
    "no password supplied",
    "no pg_hba.conf entry",
    "role ",
    "permission denied for database",
    "is not permitted to log in",
)


def describe_connect_error(error: psycopg2.Error, secrets: Iterable[str] = ()) -> str:
    """One masked line saying why connecting failed and to which server."""
    message = str(error).strip()
    first = message.splitlines()[0] if message else type(error).__name__
    match = _LIBPQ_FAILED.match(first)
    if match is None:
        # Host name lookup failures, bad option values and the like name their culprit.
        return mask_secrets(_one_line(f"cannot connect to PostgreSQL: {first}"), secrets)
    where = match.group("socket") or f"{match.group('host')}:{match.group('port')}"
    reason = match.group("reason").strip()
    fatal = re.sub(r"^(FATAL|ERROR):\s*", "", reason)
    if fatal != reason:
        if "database" in fatal and "does not exist" in fatal:
            text = f"PostgreSQL at {where}: {fatal}"
        elif any(problem in fatal for problem in _AUTH_PROBLEMS):
            text = f"PostgreSQL at {where} refused the login: {fatal}"
        else:
            text = f"PostgreSQL at {where} refused the connection: {fatal}"
    else:
        reason = reason[:1].lower() + reason[1:]
        text = f"cannot reach PostgreSQL at {where}: {reason}"
    return mask_secrets(_one_line(text), secrets)


def connect(
    dsn: str,
    *,
    application_name: str = "kongtaskd",
    autocommit: bool = False,
    connect_timeout: int = 10,
) -> psycopg2.extensions.connection:
    """Open a psycopg2 connection; failures become one-line, password-free errors.

    ``application_name`` and ``connect_timeout`` apply only where neither the DSN nor
    libpq's environment (``PGAPPNAME``, ``PGCONNECT_TIMEOUT``) chose them: the user's
    explicit choice wins, our defaults just keep ``pg_stat_activity`` readable and stop
    a black-holed host from hanging start-up forever.
    """
    secrets = passwords_in(dsn)
    try:
        params = psycopg2.extensions.parse_dsn(dsn) if dsn.strip() else {}
    except psycopg2.ProgrammingError as error:
        detail = _one_line(str(error)).removeprefix("invalid dsn: ")
        raise ConfigError(
            mask_secrets(f"invalid connection string {mask_dsn(dsn)!r}: {detail}", secrets)
        ) from None
    extra: dict[str, Any] = {}
    if "application_name" not in params and "PGAPPNAME" not in os.environ:
        extra["application_name"] = application_name
    if "connect_timeout" not in params and "PGCONNECT_TIMEOUT" not in os.environ:
        extra["connect_timeout"] = connect_timeout
    try:
        conn = psycopg2.connect(dsn, **extra)
    except psycopg2.Error as error:
        raise DatabaseError(describe_connect_error(error, secrets)) from None
    conn.autocommit = autocommit
    return conn
