"""DSN resolution, password masking, and connection errors that never show a password.

The connection tests here need no database: they fail before or at the TCP connect (bad
syntax, a closed local port), which is exactly the path under test.
"""

from __future__ import annotations

import socket
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from kongtaskd import redact
from kongtaskd.dsn import (
    connect,
    describe_connect_error,
    mask_dsn,
    mask_secrets,
    passwords_in,
    resolve_dsn,
    secrets_in,
)
from kongtaskd.errors import ConfigError, DatabaseError


@pytest.fixture(autouse=True)
def _empty_registry() -> Iterator[None]:
    """connect() registers the passwords it sees for the whole process: start each test
    with none, so a test never passes on a secret an earlier one left behind."""
    redact.forget_secrets()
    yield
    redact.forget_secrets()


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
    # As libpq reads them, and as the user meant them.
    assert passwords_in("postgresql://u:S3c@retPW@host/db") == ["S3c", "S3c@retPW"]
    assert passwords_in("postgresql://u:ab/cd@host/db") == ["ab/cd"]
    assert passwords_in("host=h password=S3cret PW dbname=d") == ["S3cret", "S3cret PW"]
    assert passwords_in("host=h password='ab'cd' port=1") == ["ab", "ab'cd"]
    assert passwords_in("host=h password='a\\' b'") == ["a' b", "a\\' b"]
    assert passwords_in("postgresql://h/d?password=a%26b&sslmode=disable") == ["a%26b", "a&b"]


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
            # (Not "hunter2": its "unte" also occurs in "unterminated", and would be hidden.)
            "host=db password='Xk9#pq2",
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
    assert "hunter" not in caught.value.message and "Xk9" not in caught.value.message


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


# -- no fragment of a password in any connection error ----------------------------------------

#: Passwords with every character that DSN syntax treats specially, and unicode.
PASSWORDS = (
    "S3c@retPW",
    "S3cret PW42",
    "pa:ss/wo?rd#1",
    "100%Kzq'uo\"te x",
    "pässwörd€日本",
    "x@y:z/w?v#u%t'r\"s q",
)


def _closed_port() -> int:
    """A local TCP port with nothing listening (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def dsn_forms(password: str, host: str, port: int) -> dict[str, str]:
    """``password`` written into a DSN every way a user might, right or wrong."""
    quoted = urllib.parse.quote(password, safe="")
    escaped = password.replace("\\", "\\\\").replace("'", "\\'")
    return {
        "uri, unencoded": f"postgresql://app:{password}@{host}:{port}/app",
        "uri, encoded": f"postgresql://app:{quoted}@{host}:{port}/app",
        "uri query": f"postgresql://app@{host}:{port}/app?password={quoted}",
        "uri query, unencoded": f"postgresql://app@{host}:{port}/app?password={password}",
        "key=value": f"host={host} port={port} password={password} dbname=app",
        "key=value, quoted": f"host={host} port={port} password='{escaped}' dbname=app",
        "key=value, quoted unescaped": f"host={host} port={port} password='{password}' user=u",
    }


def leaks(text: str, password: str) -> list[str]:
    """Every run of 4 characters of ``password`` (raw or percent-encoded) in ``text``."""
    spellings = {password, urllib.parse.quote(password, safe="")}
    return sorted(
        {s[i : i + 4] for s in spellings for i in range(len(s) - 3) if s[i : i + 4] in text}
    )


@pytest.mark.parametrize("password", PASSWORDS)
@pytest.mark.parametrize("target", ["unknown host", "closed port"])
def test_no_fragment_of_a_password_in_connection_errors(password: str, target: str) -> None:
    host, port = ("no-such-host.invalid", 5432) if target == "unknown host" else ("127.0.0.1", 0)
    if target == "closed port":
        port = _closed_port()
    for form, dsn in dsn_forms(password, host, port).items():
        with pytest.raises((ConfigError, DatabaseError)) as caught:
            connect(dsn, connect_timeout=3)
        message = caught.value.message
        assert message.startswith(
            ("cannot connect to PostgreSQL", "cannot reach PostgreSQL", "invalid connection")
        ), (form, message)
        assert not leaks(message, password), (form, message)
        assert not leaks(mask_dsn(dsn), password), (form, mask_dsn(dsn))


def test_the_issues_examples() -> None:
    with pytest.raises(DatabaseError) as caught:
        connect("postgresql://u:S3c@retPW@no-such-host.invalid/db", connect_timeout=3)
    assert caught.value.message == (
        'cannot connect to PostgreSQL: could not translate host name "***@no-such-host.invalid"'
        " to address: Name or service not known"
    )
    with pytest.raises(ConfigError) as caught:
        connect("host=h password=S3cret PWxyz")
    assert caught.value.message == (
        'invalid connection string \'host=h password=***\': missing "=" after "***" in '
        "connection info string"
    )


def test_a_password_from_pgpassword_is_hidden_from_then_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGPASSWORD", "env:S3c ret")
    with pytest.raises(DatabaseError):
        connect(f"host=127.0.0.1 port={_closed_port()}")
    assert mask_secrets("a handler printed env:S3c ret, and 'S3c ret'") == (
        "a handler printed ***, and '***'"
    )


def test_a_password_from_a_service_file_is_hidden(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    services = tmp_path / "pg_service.conf"
    port = _closed_port()
    services.write_text(
        f"# test\n[other]\npassword=notThisOne\n[kt]\nhost=127.0.0.1\nport={port}\n"
        "password=Sv'c \"pw@x\n"
    )
    monkeypatch.setenv("PGSERVICEFILE", str(services))
    monkeypatch.delenv("PGPASSWORD", raising=False)
    assert secrets_in("service=kt") == ["Sv'c \"pw@x"]
    monkeypatch.setenv("PGSERVICE", "kt")
    assert secrets_in("") == ["Sv'c \"pw@x"]
    with pytest.raises(DatabaseError) as caught:
        connect("service=kt")
    assert (
        caught.value.message == f"cannot reach PostgreSQL at 127.0.0.1:{port}: connection refused"
    )
    assert mask_secrets("he said pw@x.") == "he said ***."


@pytest.fixture()
def wait_callback() -> Iterator[None]:
    """A psycopg2 wait callback for the whole process while the test runs, as
    schema/waiting.py installs one while a migration waits: connecting is asynchronous."""
    import psycopg2.extensions
    import psycopg2.extras

    saved = psycopg2.extensions.get_wait_callback()
    psycopg2.extensions.set_wait_callback(psycopg2.extras.wait_select)
    try:
        yield
    finally:
        psycopg2.extensions.set_wait_callback(saved)


@pytest.mark.usefixtures("wait_callback")
def test_a_connect_with_a_wait_callback_still_names_the_server() -> None:
    # While a migration waits (schema/waiting.py installs a psycopg2 wait callback, for the
    # whole process), connecting is asynchronous and libpq's text is a bare "Connection
    # refused": the server still has to be named.
    port = _closed_port()
    with pytest.raises(DatabaseError) as caught:
        connect(f"postgresql://app:hunter2@127.0.0.1:{port}/app")
    assert (
        caught.value.message == f"cannot reach PostgreSQL at 127.0.0.1:{port}: connection refused"
    )


# -- several hosts (a failover pair: host=a,b port=1,2 target_session_attrs=read-write) ------


def test_several_hosts_that_all_fail_are_each_named() -> None:
    first, second = _closed_port(), _closed_port()
    dsn = f"host=127.0.0.1,127.0.0.1 port={first},{second} password=hunter2"
    with pytest.raises(DatabaseError) as caught:
        connect(f"{dsn} target_session_attrs=read-write")
    assert caught.value.message == (
        f"cannot reach PostgreSQL at 127.0.0.1:{first}: connection refused; "
        f"cannot reach PostgreSQL at 127.0.0.1:{second}: connection refused"
    )


@pytest.mark.usefixtures("wait_callback")
def test_several_hosts_with_a_wait_callback_are_each_named() -> None:
    # Asynchronously, libpq gives the first server's reason without naming the server: it
    # is named from the DSN, by its position.
    first, second = _closed_port(), _closed_port()
    with pytest.raises(DatabaseError) as caught:
        connect(f"postgresql://app:hunter2@127.0.0.1:{first},127.0.0.1:{second}/app")
    assert caught.value.message == (
        f"cannot reach PostgreSQL at 127.0.0.1:{first}: connection refused; "
        f"cannot reach PostgreSQL at 127.0.0.1:{second}: connection refused"
    )


def test_a_standby_where_read_write_is_wanted_says_so() -> None:
    import psycopg2

    error = psycopg2.OperationalError(
        'connection to server at "127.0.0.1", port 5433 failed: Connection refused\n'
        "\tIs the server running on that host and accepting TCP/IP connections?\n"
        'connection to server at "127.0.0.1", port 5434 failed: session is read-only\n'
    )
    assert describe_connect_error(error, (), ["127.0.0.1:5433", "127.0.0.1:5434"]) == (
        "cannot reach PostgreSQL at 127.0.0.1:5433: connection refused; PostgreSQL at "
        "127.0.0.1:5434 is not what target_session_attrs asks for: session is read-only"
    )


def test_one_port_applies_to_every_host() -> None:
    port = _closed_port()
    with pytest.raises(DatabaseError) as caught:
        connect(f"host=127.0.0.1,localhost port={port} connect_timeout=3")
    assert caught.value.message.startswith(
        f"cannot reach PostgreSQL at 127.0.0.1:{port}: connection refused; "
        f"cannot reach PostgreSQL at localhost:{port}: "
    )


def test_a_multi_host_uri_is_masked() -> None:
    uri = "postgresql://app:hunter2@10.0.0.1:5432,10.0.0.2:5433/app?target_session_attrs=read-write"
    assert mask_dsn(uri) == (
        "postgresql://app:***@10.0.0.1:5432,10.0.0.2:5433/app?target_session_attrs=read-write"
    )
