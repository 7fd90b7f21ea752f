"""Run the real graphile-worker (npm) from tests.

The releases live in ``tests/interop/node_modules`` (``npm ci --prefix tests/interop``):
``graphile-worker`` is 0.18.0, ``graphile-worker-0.17`` 0.17.3, ``graphile-worker-0.16``
0.16.6. Tests that need them are marked ``@pytest.mark.interop`` and call
:func:`require_graphile`, which fails (never skips silently) when they are missing, unless
``KONGTASK_SKIP_INTEROP=1`` asks for a skip.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import quote

import psycopg2
import pytest
from psycopg2 import sql
from psycopg2.extensions import parse_dsn

GRAPHILE_DIR = Path(__file__).resolve().parents[1] / "interop" / "node_modules"
PACKAGES = {
    "0.18": "graphile-worker",
    "0.17": "graphile-worker-0.17",
    "0.16": "graphile-worker-0.16",
}
#: Highest migration each release ships.
LATEST_MIGRATION = {"0.18": 20, "0.17": 19, "0.16": 18}
NPM_HINT = "run `npm ci --prefix tests/interop` to install the real graphile-worker releases"


def package_dir(version: str = "0.18") -> Path:
    return GRAPHILE_DIR / PACKAGES[version]


def require_graphile(version: str = "0.18") -> None:
    """Fail the test unless node and that graphile-worker release are installed."""
    cli = package_dir(version) / "dist" / "cli.js"
    problem = None
    if shutil.which("node") is None:
        problem = "node is not on PATH (Node 20+ is needed for the interop tests)"
    elif not cli.is_file():
        problem = f"{cli} is missing: {NPM_HINT}"
    if problem is None:
        return
    if os.environ.get("KONGTASK_SKIP_INTEROP") == "1":
        pytest.skip(f"KONGTASK_SKIP_INTEROP=1: {problem}")
    pytest.fail(problem, pytrace=False)


def graphile_cli(version: str = "0.18") -> list[str]:
    """argv prefix that runs that release's CLI."""
    require_graphile(version)
    return ["node", str(package_dir(version) / "dist" / "cli.js")]


def dsn_to_url(dsn: str, **extra: str) -> str:
    """A postgres:// URL for node-postgres from a libpq key=value DSN."""
    params = parse_dsn(dsn)
    user = quote(params.get("user", ""), safe="")
    password = params.get("password")
    auth = f"{user}:{quote(password, safe='')}@" if password else (f"{user}@" if user else "")
    host = params.get("host", "localhost")
    port = params.get("port", "5432")
    url = f"postgres://{auth}{host}:{port}/{quote(params['dbname'], safe='')}"
    if extra:
        url += "?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in extra.items())
    return url


def run_graphile(
    args: list[str],
    dsn: str,
    cwd: str | Path | None = None,
    timeout: float = 60,
    *,
    version: str = "0.18",
    schema: str | None = None,
    check: bool = True,
    application_name: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``graphile-worker ARGS -c URL`` and return the finished process.

    With ``check`` a non-zero exit fails the test showing the output.
    """
    argv = graphile_cli(version) + list(args) + ["-c", _url(dsn, application_name)]
    if schema is not None:
        argv += ["--schema", schema]
    done = subprocess.run(
        argv,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_env(),
        check=False,
    )
    if check and done.returncode != 0:
        pytest.fail(
            f"graphile-worker {version} {' '.join(args)} exited {done.returncode}\n"
            f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}",
            pytrace=False,
        )
    return done


def start_graphile(
    args: list[str],
    dsn: str,
    cwd: str | Path | None = None,
    *,
    version: str = "0.18",
    schema: str | None = None,
    application_name: str | None = None,
) -> subprocess.Popen[str]:
    """Start graphile-worker without waiting (for races); the caller must wait() on it."""
    argv = graphile_cli(version) + list(args) + ["-c", _url(dsn, application_name)]
    if schema is not None:
        argv += ["--schema", schema]
    return subprocess.Popen(
        argv,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )


def schema_only(dsn: str, version: str = "0.18", schema: str | None = None) -> None:
    """``graphile-worker --schema-only``: install or upgrade the schema, then exit."""
    run_graphile(["--schema-only"], dsn, version=version, schema=schema)


def apply_real_migrations(dsn: str, upto: int, schema: str = "graphile_worker") -> None:
    """Bring a fresh database to migration ``upto`` with graphile-worker's *own* SQL files.

    The CLI always goes to its release's latest migration; intermediate states (0.14/0.15
    databases at 11..17) are made by running the package's files 1..upto in order, each in a
    transaction with its ledger row, the way graphile-worker does. The files are used as an
    oracle here, never copied into kongtaskd.
    """
    require_graphile("0.18")
    sql_dir = package_dir("0.18") / "sql"
    ident = sql.Identifier(schema)
    conn = psycopg2.connect(dsn)
    try:
        quoted = ident.as_string(conn)
        with conn, conn.cursor() as cur:
            cur.execute(sql.SQL("create schema {}").format(ident))
            cur.execute(
                sql.SQL(
                    "create table {}.migrations (id int primary key,"
                    " ts timestamptz default now() not null,"
                    " breaking boolean not null default false)"
                ).format(ident)
            )
        for number in range(1, upto + 1):
            text = (sql_dir / f"{number:06d}.sql").read_text()
            breaking = text.startswith("--! breaking")
            with conn, conn.cursor() as cur:
                cur.execute(
                    sql.SQL("insert into {}.migrations (id, breaking) values (%s, %s)").format(
                        ident
                    ),
                    (number, breaking),
                )
                # No parameters: psycopg2 leaves the file's text (and the name) untouched.
                cur.execute(re.sub(r":GRAPHILE_WORKER_SCHEMA\b", lambda _: quoted, text))
    finally:
        conn.close()


def _url(dsn: str, application_name: str | None) -> str:
    if application_name:
        return dsn_to_url(dsn, application_name=application_name)
    return dsn_to_url(dsn)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    # The worker must see only what the test passes on the command line.
    for name in ("DATABASE_URL", "GRAPHILE_WORKER_SCHEMA", "NODE_OPTIONS"):
        env.pop(name, None)
    env["NO_LOG_SUCCESS"] = "1"
    return env
