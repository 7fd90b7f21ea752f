"""Connection strings: which one wins, how to show one safely, and connecting with clear errors.

A DSN may carry a password, and DSNs end up in error messages, log lines and ``ps`` output
of other tools. Everything here that turns a DSN or a libpq message into text goes through
:func:`mask_secrets`, so no password reaches a log or a terminal. Masking errs on the side
of hiding too much: a mangled host name in a message is a nuisance, a leaked password is not
recoverable.

The passwords themselves (:func:`secrets_in`: the DSN's, as libpq reads it and as the user
meant it, ``PGPASSWORD``, the service file's) are registered with :mod:`kongtaskd.redact` by
config loading and by :func:`connect`, so every later message, log line and process title
is scrubbed of them, whatever fragment of the DSN libpq chose to quote.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import psycopg2
import psycopg2.extensions

from kongtaskd import redact
from kongtaskd.errors import ConfigError, DatabaseError

MASK = redact.MASK

# A URI-form DSN inside arbitrary text: stops at whitespace and at the quotes that usually
# surround it in messages, so the quote characters themselves survive.
_URI = re.compile(r"postgres(?:ql)?://[^\s'\"]*", re.IGNORECASE)

# ``password=...`` in key=value DSNs and in URI query strings; also catches PGPASSWORD=...
# The value is a single-quoted string (with backslash escapes, as libpq reads it) or a run
# of characters up to whitespace or the next URI parameter.
_KEYWORD_PASSWORD = re.compile(
    r"(?P<key>password\s*=\s*)(?P<value>'(?:[^'\\]|\\.)*'?|[^\s&'\"]*)", re.IGNORECASE
)

#: libpq's connection keywords (PostgreSQL 17's list). A password ends, for the purpose of
#: guessing what the user meant, where the next of these starts: ``password=S3cret PW
#: dbname=x`` meant "S3cret PW", although libpq stops at the space and complains about "PW".
LIBPQ_KEYWORDS = frozenset(
    {
        "application_name",
        "channel_binding",
        "client_encoding",
        "connect_timeout",
        "dbname",
        "fallback_application_name",
        "gssdelegation",
        "gssencmode",
        "gsslib",
        "host",
        "hostaddr",
        "keepalives",
        "keepalives_count",
        "keepalives_idle",
        "keepalives_interval",
        "krbsrvname",
        "load_balance_hosts",
        "options",
        "passfile",
        "password",
        "port",
        "replication",
        "require_auth",
        "requirepeer",
        "requiressl",
        "service",
        "ssl_max_protocol_version",
        "ssl_min_protocol_version",
        "sslcert",
        "sslcertmode",
        "sslcompression",
        "sslcrl",
        "sslcrldir",
        "sslkey",
        "sslmode",
        "sslnegotiation",
        "sslpassword",
        "sslrootcert",
        "sslsni",
        "target_session_attrs",
        "tcp_user_timeout",
        "user",
    }
)
_KEYWORD_ALTERNATIVES = "|".join(sorted(LIBPQ_KEYWORDS))
# The next ``keyword=`` of a key=value string, and of a URI's query string.
_NEXT_KEYWORD = re.compile(rf"\s+(?:{_KEYWORD_ALTERNATIVES})\s*=")
_NEXT_PARAMETER = re.compile(rf"&(?:{_KEYWORD_ALTERNATIVES})=")
# Where a URI's query string starts: a "?" before a keyword (a "?" inside a password is not).
_QUERY_START = re.compile(rf"\?(?={_KEYWORD_ALTERNATIVES}=)")
_PASSWORD_KEY = re.compile(r"(?:^|\s)password\s*=\s*", re.IGNORECASE)
_URI_PREFIX = re.compile(r"^\s*postgres(?:ql)?://", re.IGNORECASE)


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
    """``dsn`` with any password replaced by ``***`` (URI and key=value forms).

    Also the parts of a mangled password that libpq would read as something else (the
    "PW" of an unquoted ``password=S3cret PW``) are hidden when four characters or longer.
    """
    return mask_secrets(dsn, passwords_in(dsn))


def _unescape(value: str) -> str:
    """A key=value value as libpq reads it: backslash escapes the next character."""
    return re.sub(r"\\(.)", r"\1", value, flags=re.DOTALL)


def _libpq_value(text: str) -> str:
    """The value libpq reads at the start of ``text`` (quoted or up to whitespace)."""
    if text.startswith("'"):
        match = re.match(r"'((?:[^'\\]|\\.)*)", text, re.DOTALL)
        return _unescape(match.group(1)) if match else ""
    match = re.match(r"(?:[^\s\\]|\\.)*", text, re.DOTALL)
    return _unescape(match.group(0)) if match else ""


def _keyword_passwords(dsn: str) -> list[str]:
    """What libpq reads as the password of a key=value string, and what the user meant."""
    found: list[str] = []
    for key in _PASSWORD_KEY.finditer(dsn):
        rest = dsn[key.end() :]
        found.append(_libpq_value(rest))
        # Meant: everything up to the next keyword, quotes stripped (an inner quote left
        # unescaped ends libpq's value early and the rest becomes a "missing =" message).
        following = _NEXT_KEYWORD.search(rest)
        meant = (rest[: following.start()] if following else rest).strip()
        if meant.startswith("'"):
            inner = meant[1:-1] if meant.endswith("'") and len(meant) > 1 else meant[1:]
            found.extend((inner, _unescape(inner)))
        else:
            found.append(meant)
    return found


def _uri_passwords(uri: str) -> list[str]:
    """A URI's password as the user meant it (up to the last "@"), and query passwords."""
    rest = _URI_PREFIX.sub("", uri, count=1)
    query_at = _QUERY_START.search(rest)
    body, query = (rest[: query_at.start()], rest[query_at.end() :]) if query_at else (rest, "")
    found: list[str] = []
    # libpq ends the user-info at the first "@" (or a "/" before any "@"); the user meant
    # the last "@" before the query, whatever the password holds.
    userinfo, at, _ = body.rpartition("@")
    if at and ":" in userinfo:
        found.append(userinfo.split(":", 1)[1])
    for parameter in re.finditer(r"(?:^|&)password=", query, re.IGNORECASE):
        tail = query[parameter.end() :]
        following = _NEXT_PARAMETER.search(tail)
        found.append(tail[: following.start()] if following else tail)
    return found


def passwords_in(dsn: str) -> list[str]:
    """Every spelling of the password(s) in ``dsn`` that a message could quote.

    libpq's own reading (``parse_dsn``) and what the user evidently meant where the two
    differ: an unencoded "@" or "/" in a URI's password, an unquoted space or an unescaped
    quote in a key=value one. Raw and percent-decoded; URI-form DSNs quoted inside a longer
    text are found too.
    """
    found: list[str] = []
    try:
        params = psycopg2.extensions.parse_dsn(dsn) if dsn.strip() else {}
    except psycopg2.ProgrammingError:
        params = {}
    if params.get("password"):
        found.append(params["password"])
    uris = [match.group(0) for match in _URI.finditer(dsn)]
    if _URI_PREFIX.match(dsn):
        uris.append(dsn)  # whole: a password with a space or quote is still part of it
    for uri in uris:
        found.extend(_uri_passwords(uri))
    if not _URI_PREFIX.match(dsn):
        found.extend(_keyword_passwords(dsn))
    spellings = set(found)
    spellings.update(urllib.parse.unquote(p) for p in found)
    return sorted(p for p in spellings if p)


def _service_password(service: str, environ: Mapping[str, str]) -> str | None:
    """The ``password`` of ``[service]`` in the service file libpq would read, if any."""
    files = [environ.get("PGSERVICEFILE") or os.path.expanduser("~/.pg_service.conf")]
    if environ.get("PGSYSCONFDIR"):
        files.append(os.path.join(environ["PGSYSCONFDIR"], "pg_service.conf"))
    for path in files:
        try:
            with open(path, encoding="utf-8", errors="replace") as lines:
                section: str | None = None
                password: str | None = None
                for raw in lines:
                    line = raw.strip()
                    if not line or line.startswith("#"):
                        continue
                    if line.startswith("[") and line.endswith("]"):
                        if section == service:
                            break
                        section = line[1:-1].strip()
                    elif section == service and line.partition("=")[0].strip() == "password":
                        password = line.partition("=")[2].strip()
                if section == service:
                    return password  # libpq stops at the first file that defines it
        except OSError:
            continue
    return None


def secrets_in(dsn: str | None, environ: Mapping[str, str] | None = None) -> list[str]:
    """Every password connecting with ``dsn`` may use: the DSN's own, ``PGPASSWORD``, and
    the service file's for its ``service`` (or ``PGSERVICE``).

    ``.pgpass`` is not read here: libpq never quotes a password it found there, and
    :func:`connect` registers the password libpq actually used once connected.
    """
    environ = os.environ if environ is None else environ
    dsn = dsn or ""
    found = passwords_in(dsn)
    if environ.get("PGPASSWORD"):
        found.append(environ["PGPASSWORD"])
    try:
        service = psycopg2.extensions.parse_dsn(dsn).get("service") if dsn.strip() else None
    except psycopg2.ProgrammingError:
        service = None
    service = service or environ.get("PGSERVICE")
    if service:
        password = _service_password(service, environ)
        if password:
            found.append(password)
    return found


def register_dsn(dsn: str | None, environ: Mapping[str, str] | None = None) -> None:
    """Register every password of ``dsn`` (see :func:`secrets_in`) with :mod:`redact`."""
    redact.register_secret(*secrets_in(dsn, environ))


def mask_secrets(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every password it may hold replaced by ``***``.

    Three nets: every secret registered with :func:`kongtaskd.redact.register_secret`
    (and ``secrets``, e.g. from :func:`passwords_in`) wherever four or more of its
    characters occur; the password of any DSN written out in ``text``; ``password=...``.
    """
    text = redact.scrub(text, secrets)
    # Each pattern needs its literal ("://", "="): two substring tests spare most log lines
    # both regex passes (a per-job line is scrubbed thousands of times a second).
    if "://" in text:
        text = _URI.sub(lambda m: _mask_uri(m.group(0)), text)
    if "=" in text:
        text = _KEYWORD_PASSWORD.sub(lambda m: m.group("key") + MASK, text)
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


#: What libpq says about the network alone, without naming the server: an asynchronous
#: connect (a psycopg2 wait callback is installed, as while migrating) reports just this.
_BARE_NETWORK_ERROR = re.compile(
    r"(connection refused|connection timed out|timeout expired|no route to host"
    r"|network is unreachable|connection reset by peer)$",
    re.IGNORECASE,
)


#: What libpq says of a server that answered but is not the kind ``target_session_attrs``
#: asks for (a standby where read-write is wanted, and the like).
_WRONG_KIND = re.compile(
    r"(session is (not )?read-only|server is (not )?in hot standby mode"
    r"|server is not a primary|server is not a standby)$",
    re.IGNORECASE,
)


def _describe_server(where: str, reason: str) -> str:
    """One server's failure (libpq's reason for it), in our words."""
    fatal = re.sub(r"^(FATAL|ERROR):\s*", "", reason)
    if fatal != reason:
        if "database" in fatal and "does not exist" in fatal:
            return f"PostgreSQL at {where}: {fatal}"
        if any(problem in fatal for problem in _AUTH_PROBLEMS):
            return f"PostgreSQL at {where} refused the login: {fatal}"
        return f"PostgreSQL at {where} refused the connection: {fatal}"
    if _WRONG_KIND.match(reason):
        return f"PostgreSQL at {where} is not what target_session_attrs asks for: {reason}"
    return f"cannot reach PostgreSQL at {where}: {reason[:1].lower() + reason[1:]}"


def describe_connect_error(
    error: psycopg2.Error, secrets: Iterable[str] = (), target: str | Sequence[str] | None = None
) -> str:
    """One masked line saying why connecting failed and to which server.

    ``target``: the server(s) the DSN names (``host:port`` or a socket directory), for the
    messages in which libpq does not say it. A DSN naming several hosts (a failover pair)
    fails only when every one failed: libpq then says why for each, one after the other, and
    so does the line (``; ``-separated), each server named."""
    targets = [target] if isinstance(target, str) else list(target or ())
    message = str(error).strip()
    first = message.splitlines()[0] if message else type(error).__name__
    # One (server, reason) per server tried, in the DSN's order; libpq's hints are the
    # indented lines. An asynchronous connect says only the reason for some servers (the
    # first one, at least): those are named from the DSN, by their position.
    tried: list[tuple[str | None, str]] = []
    for line in message.splitlines():
        if line[:1].isspace() or not line.strip():
            continue
        match = _LIBPQ_FAILED.match(line)
        if match is not None:
            where = match.group("socket") or f"{match.group('host')}:{match.group('port')}"
            tried.append((where, match.group("reason").strip()))
        elif _BARE_NETWORK_ERROR.match(line.strip()):
            tried.append((None, line.strip()))
        else:  # a host name lookup failure and the like: it names its culprit ("")
            tried.append(("", line.strip()))
    if not any(where for where, _ in tried) and (
        not targets or not any(where is None for where, _ in tried)
    ):
        # Host name lookup failures, bad option values and the like name their culprit.
        return mask_secrets(_one_line(f"cannot connect to PostgreSQL: {first}"), secrets)
    unnamed = "any of " + ", ".join(targets) if len(targets) > 1 else targets[0] if targets else ""
    parts = [
        f"cannot connect to PostgreSQL: {reason}"
        if where == ""
        else _describe_server(
            where or (targets[index] if len(tried) == len(targets) else unnamed), reason
        )
        for index, (where, reason) in enumerate(tried)
    ]
    return mask_secrets(_one_line("; ".join(parts)), secrets)


def _targets(params: dict[str, str]) -> list[str]:
    """The servers a parsed DSN (or libpq's environment) names, as libpq's messages name
    them: ``host:port`` (or a socket directory) each; several for ``host=a,b port=1,2``
    (one port for all hosts when only one is given, as libpq reads it)."""
    host = params.get("host") or os.environ.get("PGHOST")
    port = params.get("port") or os.environ.get("PGPORT") or "5432"
    if not host:
        return []
    hosts, ports = host.split(","), port.split(",")
    if len(ports) == 1:
        ports = ports * len(hosts)
    if len(ports) != len(hosts):
        return []  # libpq refuses this DSN with its own message, which names the counts
    return [
        name if name.startswith("/") else f"{name}:{number or '5432'}"
        for name, number in zip(hosts, ports, strict=True)
        if name
    ]


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
    # Registered for good: a later log line (a failed reconnect) quotes the same text.
    secrets = secrets_in(dsn)
    redact.register_secret(*secrets)
    try:
        params = psycopg2.extensions.parse_dsn(dsn) if dsn.strip() else {}
    except psycopg2.ProgrammingError as error:
        detail = _one_line(str(error)).removeprefix("invalid dsn: ")
        raise ConfigError(
            mask_secrets(f"invalid connection string {mask_dsn(dsn)!r}: {detail}", secrets)
        ) from None
    extra: dict[str, Any] = {}
    chosen_name = params.get("application_name") or os.environ.get("PGAPPNAME")
    if chosen_name is None:
        extra["application_name"] = redact.scrub(application_name)
    elif redact.scrub(chosen_name) != chosen_name:
        # pg_stat_activity is readable by every role: no secret goes there, even by choice.
        extra["application_name"] = redact.scrub(chosen_name)
    if "connect_timeout" not in params and "PGCONNECT_TIMEOUT" not in os.environ:
        extra["connect_timeout"] = connect_timeout
    try:
        conn = psycopg2.connect(dsn, **extra)
    except psycopg2.Error as error:
        raise DatabaseError(describe_connect_error(error, secrets, _targets(params))) from None
    # The password libpq used, wherever it found it (.pgpass, a service file, PGPASSWORD).
    redact.register_secret(conn.info.password)
    conn.autocommit = autocommit
    return conn
