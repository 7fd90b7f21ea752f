"""Run a real ``kongtaskd web`` process for a test and talk HTTP to it.

:class:`Web` starts ``kongtaskd -c CONFIG web`` under a fake systemd (the daemon helper's
notify socket), waits for READY=1, and gives a small HTTP client (:meth:`Web.get`,
:meth:`Web.post`) that never follows redirects and keeps no cookies unless given them, so
tests see exactly what the server answered.
"""

from __future__ import annotations

import dataclasses
import http.client
import re
import socket
import urllib.parse
from collections.abc import Mapping
from email.message import Message
from pathlib import Path
from typing import Any

import yaml

from tests.support.daemon import Daemon

#: The hostile strings the pages are tested with: markup that would run if unescaped,
#: an attribute break-out, and long unicode.
HOSTILE = (
    "<script>alert('x')</script>",
    '"><img src=x onerror=alert(1)>',
    "ünï" + "ç" * 300 + "✓",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclasses.dataclass
class Answer:
    status: int
    headers: Message
    text: str

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    def cookies(self) -> dict[str, str]:
        found = {}
        for value in self.headers.get_all("Set-Cookie") or []:
            name, _, rest = value.partition("=")
            found[name] = rest.split(";", 1)[0]
        return found

    def csrf(self, action: str | None = None) -> str:
        """The CSRF token of the (first) form whose action ends with ``action``."""
        for form in re.finditer(
            r"<form[^>]*action=\"([^\"]*)\"[^>]*>(.*?)</form>", self.text, re.S
        ):
            if action is None or form.group(1).endswith(action):
                found = re.search(r'name="csrf" value="([^"]+)"', form.group(2))
                if found:
                    return found.group(1)
        raise AssertionError(f"no form for {action!r} with a csrf token in:\n{self.text[:3000]}")


def write_web_config(directory: Path, dsn: str, log_level: str = "debug", **web: Any) -> Path:
    """A config with ``web: {**web}``; log level debug by default, so the data layer's
    ``query NAME`` lines can be counted (debug also prints tracebacks with CLI errors)."""
    config = {
        "connection": dsn,
        "log": {"level": log_level, "format": "text"},
        "web": web,
    }
    path = directory / "kongtask.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True))
    return path


class Web:
    """A ``kongtaskd web`` process on 127.0.0.1:``port``."""

    def __init__(self, config: Path, port: int, *args: str, prefix: str = "") -> None:
        self.port = port
        self.prefix = prefix
        self.daemon = Daemon(config, "web", "--port", str(port), *args)
        self.daemon.wait_ready()

    def request(
        self,
        method: str,
        path: str,
        form: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        cookies: Mapping[str, str] | None = None,
    ) -> Answer:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        sent = dict(headers or {})
        body = None
        if form is not None:
            body = urllib.parse.urlencode(form)
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        if cookies:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
        try:
            conn.request(method, self.prefix + path, body=body, headers=sent)
            response = conn.getresponse()
            text = response.read().decode("utf-8", errors="replace")
            return Answer(response.status, response.headers, text)
        finally:
            conn.close()

    def get(self, path: str, **options: Any) -> Answer:
        return self.request("GET", path, **options)

    def post(self, path: str, form: Mapping[str, str], **options: Any) -> Answer:
        return self.request("POST", path, form=form, **options)

    def log(self) -> str:
        return self.daemon.log()

    def queries(self) -> int:
        """Database queries the server ran so far (its data layer logs each at debug)."""
        return len(re.findall(r"kongtaskd\.web\.data: query ", self.log()))

    def stop(self) -> int:
        code = self.daemon.stop()
        self.daemon.wait_for_notification("STOPPING=1", timeout=5)
        return code

    def close(self) -> None:
        self.daemon.close()

    def __enter__(self) -> Web:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
