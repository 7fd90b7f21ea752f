"""DSN resolution, password masking, and connection errors that never show a password.

The connection tests here need no database: they fail before or at the TCP connect (bad
syntax, a closed local port), which is exactly the path under test.
"""

from __future__ import annotations

import socket

import pytest

from kongtaskd.dsn import connect, mask_dsn, mask_secrets, passwords_in, resolve_dsn
from kongtaskd.errors import ConfigError, DatabaseError


@pytest.mark.parametrize(
    ("dsn", "masked"),
    [
        ("postgresql://app:hunter2@db:5432/app", "postgresql://app:***@db:5432/app"),
        ("postgres://app:hunter2@db/app", "postgres://app:***@db/app"),
        ("postgresql://app@db/app", "postgresql://app@db/app"),
        ("postgresql://db/app", "postgresql://db/app"),
        ("postgresql:///app", "postgresql:///app"),
        ("postgresql://app:@db/app", "postgresql://app:***@db/app"),
        # Percent-encoded characters stay hidden whole.
        ("postgresql://app:p%40ss%2Fw0rd@db/app", "postgresql://app:***@db/app"),
        # An unencoded @ in the password: hide up to the last @.
        ("postgresql://app:p@ss@db/app", "postgresql://app:***@db/app"),
        (
            "postgresql://app@db/app?sslmode=require&password=hunter2&connect_timeout=3",
            "postgresql://app@db/app?sslmode=require&password=***&connect_timeout=3",
        ),
        (
            "postgresql://app:one@h1:5432,h2:5433/app",
            "postgresql://app:***@h1:5432,h2:5433/app",
        ),
        (
            "host=db user=app password=hunter2 dbname=app",
            "host=db user=app password=*** dbname=app",
        ),
        (
            "host=db password = 'sec ret\\' x' dbname=app",
            "host=db password = *** dbname=app",
        ),
        ("host=db password='' dbname=app", "host=db password=*** dbname=app"),
        ("host=db dbname=app", "host=db dbname=app"),
        ("", ""),
    ],
)
def test_mask_dsn(dsn: str, masked: str) -> None:
    assert mask_dsn(dsn) == masked


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        (
            "could not use 'postgresql://app:hunter2@db/app': timeout",
            "could not use 'postgresql://app:***@db/app': timeout",
        ),
        (
            'connecting to "host=db password=hunter2 user=app" failed',
            'connecting to "host=db password=*** user=app" failed',
        ),
        ("env: PGPASSWORD=hunter2 psql", "env: PGPASSWORD=*** psql"),
        ("DATABASE_URL=POSTGRESQL://a:b@c/d", "DATABASE_URL=POSTGRESQL://a:***@c/d"),
        ("nothing secret here", "nothing secret here"),
    ],
)
def test_mask_secrets_in_messages(text: str, masked: str) -> None:
    assert mask_secrets(text) == masked


def test_known_secrets_blank_the_quoted_fragment_that_holds_them() -> None:
    text = 'invalid percent-encoded token: "hunter%zz2" in "host"'
    assert mask_secrets(text, ["hunter%zz2"]) == 'invalid percent-encoded token: "***" in "host"'
    # A one-letter password must not blank every such letter in the message.
    assert mask_secrets("database b is down", ["b"]) == "database b is down"


def test_passwords_in() -> None:
    assert passwords_in("postgresql://a:p%40ss@h/d") == ["p%40ss", "p@ss"]
    assert passwords_in("host=h password='x y'") == ["x y"]
    assert passwords_in("host=h user=u") == []


def test_resolve_order() -> None:
    env = {"DATABASE_URL": "postgresql://env@db/app"}
    assert resolve_dsn("postgresql://flag@db/app", "postgresql://file@db/app", env) == (
        "postgresql://flag@db/app"
    )
    assert resolve_dsn(None, "postgresql://file@db/app", env) == "postgresql://env@db/app"
    assert resolve_dsn(None, "postgresql://file@db/app", {}) == "postgresql://file@db/app"
    assert resolve_dsn(None, None, {}) == ""
    # An empty DATABASE_URL is as good as none.
    assert resolve_dsn(None, "host=file", {"DATABASE_URL": ""}) == "host=file"


@pytest.mark.parametrize(
    ("dsn", "expected"),
    [
        (
            "postgresql://app:hunter%zz2@db/app",
            "invalid connection string 'postgresql://app:***@db/app': "
            'invalid percent-encoded token: "***"',
        ),
        (
            "host=db password='hunter2",
            "invalid connection string 'host=db password=***': "
            "unterminated quoted string in connection info string",
        ),
        (
            "not a dsn",
            'invalid connection string \'not a dsn\': missing "=" after "not" in connection '
            "info string",
        ),
    ],
)
def test_bad_dsn_syntax_is_a_config_error_without_the_password(dsn: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        connect(dsn)
    assert caught.value.message == expected
    assert "hunter" not in caught.value.message


def _closed_port() -> int:
    """A local TCP port with nothing listening (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_server_is_one_masked_line() -> None:
    port = _closed_port()
    with pytest.raises(DatabaseError) as caught:
        connect(f"postgresql://app:hunter2@127.0.0.1:{port}/app")
    assert (
        caught.value.message == f"cannot reach PostgreSQL at 127.0.0.1:{port}: connection refused"
    )


def test_unknown_host_names_the_host() -> None:
    with pytest.raises(DatabaseError) as caught:
        connect("host=no-such-host.invalid password=hunter2 connect_timeout=3")
    message = caught.value.message
    assert message.startswith("cannot connect to PostgreSQL: could not translate host name")
    assert "no-such-host.invalid" in message
    assert "hunter2" not in message
