"""A real PgBouncer (Debian's package) in front of the test server, for pooler tests.

It refuses to run as root, so it is started with ``-u postgres``: its files live in a
directory of their own that the postgres user can read. Tests skip where no pgbouncer is
installed; ``.ci/run`` installs it.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from psycopg2.extensions import parse_dsn

BINARY = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"


class PoolerDsn(str):
    """The DSN through the pooler, which can also show the pooler's log (while it runs)."""

    log_path: Path
    #: The pgbouncer process (for a benchmark's CPU figures).
    pid: int

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def pgbouncer(
    server_dsn: str,
    *,
    pool_mode: str = "transaction",
    pool_size: int = 4,
    query_wait_timeout: float | None = None,
) -> Iterator[PoolerDsn]:
    """Run PgBouncer in ``pool_mode`` before the server of ``server_dsn``; yield the DSN
    that reaches the same database through it.

    ``pool_size`` server connections per database and user (``default_pool_size``);
    ``query_wait_timeout``: seconds a client may wait for one before PgBouncer drops it
    (None: PgBouncer's default, 120 s)."""
    params = parse_dsn(server_dsn)
    directory = Path(tempfile.mkdtemp(prefix="kt-pgbouncer-"))
    directory.chmod(0o755)
    port = _free_port()
    users = directory / "users.txt"
    users.write_text(f'"{params.get("user", "root")}" ""\n"postgres" ""\n"root" ""\n')
    ini = directory / "pgbouncer.ini"
    ini.write_text(
        "[databases]\n"
        f"* = host={params.get('host', '127.0.0.1')} port={params.get('port', '5432')}\n"
        "[pgbouncer]\n"
        "listen_addr = 127.0.0.1\n"
        f"listen_port = {port}\n"
        "unix_socket_dir =\n"
        "auth_type = trust\n"
        f"auth_file = {users}\n"
        f"pool_mode = {pool_mode}\n"
        f"default_pool_size = {pool_size}\n"
        "max_client_conn = 200\n"
        "ignore_startup_parameters = extra_float_digits\n"
        + (f"query_wait_timeout = {query_wait_timeout:g}\n" if query_wait_timeout else "")
    )
    for path in (users, ini):
        path.chmod(0o644)
    log = (directory / "pgbouncer.log").open("w")
    proc = subprocess.Popen(
        [BINARY, "-u", "postgres", str(ini)], stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"pgbouncer did not start: {(directory / 'pgbouncer.log').read_text()}"
                    ) from None
                time.sleep(0.05)
        dbname = params.get("dbname", "postgres")
        user = params.get("user", "postgres")
        pooled = PoolerDsn(f"host=127.0.0.1 port={port} dbname={dbname} user={user}")
        pooled.log_path = directory / "pgbouncer.log"
        pooled.pid = proc.pid
        yield pooled
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(directory, ignore_errors=True)
