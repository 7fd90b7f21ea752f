"""Who may look at the dashboard: token logins with session cookies, or HTTP basic.

* ``web.auth.token_file``: each line ``NAME:TOKEN`` (or a bare ``TOKEN``, named after the
  file). The file must not be readable by group or others: a token readable by every local
  user is no secret. A correct token POSTed to ``/login`` gets a session cookie (HttpOnly,
  SameSite=Strict, Secure when the request came over TLS) that ``/logout`` ends. Sessions
  live in this process's memory: a restart logs everyone out, and several dashboard
  processes behind one balancer need sticky sessions.
* ``web.auth.basic``: HTTP basic against a scrypt hash from ``kongtaskd web hash-password``.

Every comparison is constant-time (:func:`hmac.compare_digest`), and failed attempts are
limited per client address (:class:`RateLimiter`); behind a reverse proxy the address comes
from ``X-Forwarded-For`` only when the connection comes from one of ``trusted_proxies``.
The audit line of an action names the basic-auth user or the token's name.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import os
import secrets
import stat
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from kongtaskd import redact, tunables
from kongtaskd.errors import ConfigError

#: The cookie a token login sets.
SESSION_COOKIE = "kongtaskd_session"


# --- passwords ------------------------------------------------------------------------------


def hash_password(password: str) -> str:
    """``scrypt$N$r$p$salt$hash`` (base64): what ``web.auth.basic.password_hash`` holds."""
    if not password:
        raise ValueError("the password is empty")
    salt = os.urandom(16)
    n, r, p = tunables.WEB_SCRYPT_N, tunables.WEB_SCRYPT_R, tunables.WEB_SCRYPT_P
    digest = _scrypt(password, salt, n, r, p)
    encode = base64.b64encode
    return f"scrypt${n}${r}${p}${encode(salt).decode()}${encode(digest).decode()}"


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    # maxmem: OpenSSL's default (32 MiB) is exactly what N=2^15, r=8 needs, and refuses it.
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=256 * 1024 * 1024, dklen=32
    )


def verify_password(password: str, hashed: str) -> bool:
    """Whether ``password`` matches ``hashed``; the final comparison is constant-time."""
    try:
        kind, n, r, p, salt, digest = hashed.split("$")
        if kind != "scrypt":
            return False
        expected = base64.b64decode(digest, validate=True)
        found = _scrypt(password, base64.b64decode(salt, validate=True), int(n), int(r), int(p))
    except (ValueError, TypeError, MemoryError):
        return False
    return hmac.compare_digest(found, expected)


# --- tokens ---------------------------------------------------------------------------------


def load_tokens(path: Path, where: str) -> dict[str, str]:
    """The tokens of ``path`` by name; ConfigError (naming ``where``) when the file is
    missing, empty, or readable by group or others."""
    shown = f"{where}: web.auth.token_file {path}"
    try:
        info = path.stat()
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        reason = (error.strerror or str(error)).lower()
        raise ConfigError(f"{shown}: cannot read it: {reason}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{shown}: not UTF-8 text") from None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"{shown}: readable by group or others (mode {stat.S_IMODE(info.st_mode):04o}); "
            f"run 'chmod 600 {path}'"
        )
    tokens: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, token = line.partition(":")
        if not sep:
            name, token = path.stem, line
        name, token = name.strip(), token.strip()
        if len(token) < 16:
            raise ConfigError(
                f"{path}:{number}: token shorter than 16 characters; make one with "
                "'python3 -c \"import secrets; print(secrets.token_urlsafe(32))\"'"
            )
        if name in tokens:
            raise ConfigError(f"{path}:{number}: token name {name!r} appears twice")
        tokens[name] = token
    if not tokens:
        raise ConfigError(f"{shown}: holds no token")
    redact.register_secret(*tokens.values())
    return tokens


def token_owner(tokens: Mapping[str, str], offered: str) -> str | None:
    """The name of the token ``offered`` is, or None. Every token is compared (constant
    time each), so the answer's timing does not tell which one nearly matched."""
    owner = None
    for name, token in tokens.items():
        if hmac.compare_digest(offered.encode("utf-8"), token.encode("utf-8")):
            owner = name
    return owner


# --- sessions -------------------------------------------------------------------------------


@dataclasses.dataclass
class Session:
    who: str
    expires: float


class Sessions:
    """Session id -> who, in memory; ids are 256 random bits."""

    def __init__(
        self,
        lifetime: float = tunables.WEB_SESSION_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.lifetime = lifetime
        self._clock = clock
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.Lock()

    def start(self, who: str) -> str:
        sid = secrets.token_urlsafe(32)
        with self._lock:
            self._sessions[sid] = Session(who, self._clock() + self.lifetime)
            while len(self._sessions) > tunables.WEB_MAX_FORMS:
                self._sessions.popitem(last=False)
        return sid

    def who(self, sid: str | None) -> str | None:
        if not sid:
            return None
        with self._lock:
            session = self._sessions.get(sid)
            if session is None:
                return None
            if session.expires <= self._clock():
                del self._sessions[sid]
                return None
            return session.who

    def end(self, sid: str | None) -> None:
        if sid:
            with self._lock:
                self._sessions.pop(sid, None)


# --- failed attempts ------------------------------------------------------------------------


class RateLimiter:
    """At most ``limit`` failures per client in ``window`` seconds; past that the client
    is refused (429) until its oldest failure leaves the window."""

    def __init__(
        self,
        limit: int = tunables.WEB_LOGIN_FAILURES,
        window: float = tunables.WEB_LOGIN_WINDOW,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, client: str) -> deque[float]:
        now = self._clock()
        found = self._failures.setdefault(client, deque())
        while found and found[0] <= now - self.window:
            found.popleft()
        return found

    def blocked_for(self, client: str) -> float:
        """Seconds until ``client`` may try again; 0 when it may now."""
        with self._lock:
            found = self._recent(client)
            if len(found) < self.limit:
                return 0.0
            return max(0.0, found[0] + self.window - self._clock())

    def failed(self, client: str) -> None:
        with self._lock:
            self._recent(client).append(self._clock())
            if len(self._failures) > tunables.WEB_MAX_FORMS:
                # Forget clients with no recent failure, so spoofed floods cannot grow it.
                for key in [k for k, v in self._failures.items() if not v]:
                    del self._failures[key]


# --- where a request comes from -------------------------------------------------------------


def client_address(environ: Mapping[str, Any], trusted_proxies: Sequence[str]) -> str:
    """The client's address: REMOTE_ADDR, or behind trusted proxies the right-most address
    of ``X-Forwarded-For`` that is not one of them (the left part is the client's to
    write, so it is never believed)."""
    remote = str(environ.get("REMOTE_ADDR") or "unknown")
    if remote not in trusted_proxies:
        return remote
    forwarded = str(environ.get("HTTP_X_FORWARDED_FOR") or "")
    hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
    for hop in reversed(hops):
        if hop not in trusted_proxies:
            return hop
    return remote


def came_over_tls(environ: Mapping[str, Any], trusted_proxies: Sequence[str]) -> bool:
    """HTTPS to us, or to a trusted proxy that says so in ``X-Forwarded-Proto``."""
    if environ.get("wsgi.url_scheme") == "https":
        return True
    if str(environ.get("REMOTE_ADDR") or "") in trusted_proxies:
        proto = str(environ.get("HTTP_X_FORWARDED_PROTO") or "")
        return proto.split(",")[0].strip().lower() == "https"
    return False
