"""A metrics endpoint that cannot listen is a configuration error (exit 2, one line naming
the key and its file:line), found before the daemon migrates anything: as an "internal
error", exit 1, systemd's Restart=on-failure would restart it in a loop."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from kongtaskd.binds import check_bind, listen
from kongtaskd.errors import ConfigError, ExitCode
from tests.acceptance.test_cli import assert_one_line_error, kongtaskd
from tests.support.daemon import query, write_config


@pytest.fixture()
def held_port() -> Iterator[int]:
    """A port another process is listening on, as a stray exporter would."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        yield int(sock.getsockname()[1])


def line_of(path: Path, prefix: str) -> int:
    """1-based line of the first line of ``path`` starting with ``prefix``."""
    lines = path.read_text().splitlines()
    return next(n for n, line in enumerate(lines, 1) if line.startswith(prefix))


def migrated(dsn: str) -> bool:
    rows = query(dsn, "select 1 from pg_namespace where nspname = 'graphile_worker'")
    return bool(rows)


def test_taken_metrics_port_exits_2_naming_key_and_line_before_migrating(
    fresh_dsn: str, tmp_path: Path, held_port: int
) -> None:
    config = write_config(tmp_path, fresh_dsn, metrics={"host": "127.0.0.1", "port": held_port})
    line = line_of(config, "  port:")

    result = kongtaskd("-c", str(config))

    error = assert_one_line_error(result, ExitCode.USAGE)
    assert error == f"kongtaskd: {config}:{line}: metrics.port {held_port}: address already in use"
    assert not migrated(fresh_dsn)


@pytest.mark.parametrize(
    ("host", "problem"),
    [
        ("nosuch-host.invalid", "metrics.host nosuch-host.invalid: unknown host ("),
        ("192.0.2.1", "metrics.host 192.0.2.1: not an address of this machine"),
        ("::1", "metrics.host ::1: not an IPv4 address or host name"),
    ],
)
def test_bad_metrics_host_exits_2_naming_the_host_line(
    fresh_dsn: str, tmp_path: Path, host: str, problem: str
) -> None:
    config = write_config(tmp_path, fresh_dsn, metrics={"host": host, "port": 19464})
    line = line_of(config, "  host:")

    error = assert_one_line_error(kongtaskd("-c", str(config)), ExitCode.USAGE)

    assert error.startswith(f"kongtaskd: {config}:{line}: {problem}"), error
    assert not migrated(fresh_dsn)


@pytest.mark.skipif(
    os.geteuid() == 0, reason="runs as root here, and root may bind any port: not testable"
)
def test_privileged_port_as_non_root_exits_2(fresh_dsn: str, tmp_path: Path) -> None:
    config = write_config(tmp_path, fresh_dsn, metrics={"host": "127.0.0.1", "port": 80})
    error = assert_one_line_error(kongtaskd("-c", str(config)), ExitCode.USAGE)
    assert "metrics.port 80: permission denied" in error


def test_check_leaves_the_port_free_for_the_server() -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = int(probe.getsockname()[1])
    check_bind("127.0.0.1", port, "metrics", lambda path: "here")
    # Bound and closed: the server binds it right after (no TIME_WAIT without connections).
    socket.create_server(("127.0.0.1", port)).close()


def test_check_names_the_section_it_is_given(held_port: int) -> None:
    with pytest.raises(ConfigError) as raised:
        check_bind("127.0.0.1", held_port, "web", {"web.port": "kt.yaml:3"}.__getitem__)
    assert raised.value.message == f"kt.yaml:3: web.port {held_port}: address already in use"


def test_listen_hands_back_a_listening_socket() -> None:
    with listen("127.0.0.1", 0, "metrics", lambda path: "here") as sock:
        port = int(sock.getsockname()[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
        with pytest.raises(ConfigError, match=rf"^here: metrics.port {port}: address already"):
            listen("127.0.0.1", port, "metrics", lambda path: "here")
