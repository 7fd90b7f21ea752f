"""No part of a password in anything kongtaskd shows: real processes, real PostgreSQL.

"Part" means any run of four characters of the password (raw or percent-encoded) in an
error line, a log line (text and JSON), a process title (``/proc/PID/cmdline``, what ``ps``
shows), an ``application_name`` in ``pg_stat_activity`` or the heartbeat row. The test
server trusts 127.0.0.1, so any password logs in: the password's characters are what is
under test, not the server's check of them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
from psycopg2.extensions import make_dsn, parse_dsn

from kongtaskd import redact
from kongtaskd.dsn import connect
from kongtaskd.errors import DatabaseError
from tests.support import wait_for
from tests.support.daemon import Daemon, prepare_database, query, write_config

REPO = Path(__file__).resolve().parents[2]

#: Every character DSN syntax treats specially (@ : / ? # % ' " space), and unicode.
PASSWORD = "S3c @:/?#%'\"pässwörd€x"


def spellings(password: str) -> set[str]:
    return {password, urllib.parse.quote(password, safe="")}


def leaks(text: str, password: str = PASSWORD) -> list[str]:
    """Every run of four characters of ``password`` (raw or percent-encoded) in ``text``."""
    return sorted(
        {
            s[i : i + 4]
            for s in spellings(password)
            for i in range(len(s) - 3)
            if s[i : i + 4] in text
        }
    )


def uri(dsn: str, password: str = PASSWORD, **query_params: str) -> str:
    """``dsn`` (key=value, as the fixtures give it) as a URI with ``password``, encoded."""
    params = parse_dsn(dsn)
    query_string = urllib.parse.urlencode(query_params, quote_via=urllib.parse.quote)
    return (
        f"postgresql://{params.get('user', 'postgres')}:{urllib.parse.quote(password, safe='')}"
        f"@{params.get('host', '127.0.0.1')}:{params.get('port', '5432')}/{params['dbname']}"
        + (f"?{query_string}" if query_string else "")
    )


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without anything that would choose a database for kongtaskd."""
    base = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("KONGTASK_", "PG", "GRAPHILE_"))
        and key not in ("DATABASE_URL", "NOTIFY_SOCKET")
    }
    return {**base, **extra}


def cmdline(pid: int) -> str:
    """A process's title as ``ps`` shows it (setproctitle writes it over argv)."""
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").replace("\0", " ")


def shown_after_first_attempt(
    daemon: Daemon, dsn: str, job_id: int
) -> tuple[list[str], list[tuple]]:
    """Once the job's first attempt failed: the daemon's process titles and every session's
    application_name on the database (where a password could show)."""
    wait_for(
        lambda: (
            query(
                dsn, "select attempts from graphile_worker._private_jobs where id = %s", (job_id,)
            )[0][0]
            == 1
        ),
        timeout=30,
        what="the job's first attempt failed",
    )
    titles = [cmdline(daemon.pid)] + [cmdline(pid) for pid in daemon.children()]
    names = query(
        dsn,
        "select application_name from pg_stat_activity where datname = current_database()"
        " and pid <> pg_backend_pid()",
    )
    return titles, names


# --- connection errors of every verb --------------------------------------------------------

#: (how the DSN is given, the DSN): the issue's two examples and the full character set,
#: against a host that does not resolve.
BROKEN_DSNS = [
    ("--connection", "postgresql://u:S3c@retPW@no-such-host.invalid/db"),
    ("DATABASE_URL", "host=no-such-host.invalid password=S3cret PWxyz dbname=db"),
    ("config file", f"host=no-such-host.invalid password='{PASSWORD}' dbname=db"),
    ("--connection", f"postgresql://u:{PASSWORD}@no-such-host.invalid/db"),
]
PASSWORDS_OF = ["S3c@retPW", "S3cret PWxyz", PASSWORD, PASSWORD]
VERBS = [["run"], ["--once"], ["migrate"], ["jobs", "list"], ["status"]]


@pytest.mark.parametrize("verb", VERBS, ids=" ".join)
@pytest.mark.parametrize("case", range(len(BROKEN_DSNS)))
def test_connection_errors_of_every_verb_show_no_password(
    verb: list[str], case: int, tmp_path: Path
) -> None:
    how, dsn = BROKEN_DSNS[case]
    password = PASSWORDS_OF[case]
    config = write_config(tmp_path, "host=unused.invalid", log={"level": "info", "format": "text"})
    args = ["-c", str(config), *verb]
    env = clean_env()
    if how == "--connection":
        args += ["--connection", dsn]
    elif how == "DATABASE_URL":
        env["DATABASE_URL"] = dsn
    else:
        config = write_config(tmp_path, dsn, log={"level": "info", "format": "text"})
    result = subprocess.run(
        [sys.executable, "-m", "kongtaskd", *args],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "PostgreSQL" in output or "connection string" in output, output
    assert not leaks(output, password), output


# --- process titles while a verb waits on the database --------------------------------------


@pytest.fixture()
def migrated(fresh_dsn: str) -> str:
    prepare_database(fresh_dsn)
    return fresh_dsn


@pytest.fixture()
def all_tables_locked(migrated: str) -> Iterator[psycopg2.extensions.connection]:
    """Every table of the queue schema locked: each verb blocks on its first statement."""
    holder = psycopg2.connect(migrated)
    with holder.cursor() as cur:
        cur.execute("select tablename from pg_tables where schemaname = 'graphile_worker'")
        tables = [name for (name,) in cur.fetchall()]
        cur.execute(
            "lock table "
            + ", ".join(f"graphile_worker.{name}" for name in tables)
            + " in access exclusive mode"
        )
    yield holder
    holder.rollback()
    holder.close()


def blocked_backends(dsn: str) -> int:
    return int(
        query(
            dsn,
            "select count(*) from pg_stat_activity where datname = current_database()"
            " and wait_event_type = 'Lock'",
        )[0][0]
    )


@pytest.mark.parametrize("verb", VERBS, ids=" ".join)
def test_the_process_title_hides_a_password_given_on_the_command_line(
    verb: list[str], migrated: str, all_tables_locked: object, tmp_path: Path
) -> None:
    config = write_config(tmp_path, "host=unused.invalid")
    argv = [sys.executable, "-m", "kongtaskd", "-c", str(config), *verb]
    argv += ["--connection", uri(migrated)]
    proc = subprocess.Popen(
        argv,
        env=clean_env(),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for(
            lambda: proc.poll() is not None or blocked_backends(migrated) > 0,
            timeout=30,
            what=f"kongtaskd {' '.join(verb)} blocked on the locked tables",
        )
        assert proc.poll() is None, proc.communicate()[0]
        title = cmdline(proc.pid)
        assert not leaks(title), title
        assert "postgresql://" in title  # the rest of the command line is still there
    finally:
        # Its backend waits on the lock until the fixture's rollback, then notices it is gone.
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


# --- a running daemon: logs, titles, application_name, heartbeat row ------------------------

LEAKY_HANDLER = textwrap.dedent(
    """
    import logging

    def leaky(payload, ctx):
        password = ctx.connection.info.password
        ctx.logger.info("connected with password %s", password)
        logging.getLogger("leaky").warning("half of it: %s", password[len(password) // 2 :])
        raise ValueError(f"failing with {password!r} in the error")
    """
)


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_running_daemon_shows_the_password_nowhere(
    fmt: str, migrated: str, tmp_path: Path
) -> None:
    (tmp_path / "leaky.py").write_text(LEAKY_HANDLER)
    if fmt == "text":
        dsn = uri(migrated)
    else:
        # key=value, and an application_name that (by mistake) holds the password too.
        params = parse_dsn(migrated)
        dsn = make_dsn(**params, password=PASSWORD, application_name=f"app {PASSWORD}")
    config = write_config(
        tmp_path,
        "host=unused.invalid",
        concurrency=2,
        python_path=[str(tmp_path)],
        tasks={"leaky": "leaky:leaky"},
        task_modules=[],
        log={"level": "info", "format": fmt},
    )
    job_id = query(migrated, "select id from graphile_worker.add_job('leaky', '{}')")[0][0]
    with Daemon(config, "--connection", dsn) as daemon:
        daemon.wait_ready()
        titles, names = shown_after_first_attempt(daemon, migrated, job_id)
        heartbeats = query(
            migrated, "select row_to_json(h)::text from graphile_worker._kongtaskd_heartbeats h"
        )
        assert daemon.stop() == 0
        log = daemon.log()
    assert "connected with password ***" in log, log
    assert not leaks(log), log
    if fmt == "json":
        entries = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
        assert any(e["msg"] == "connected with password ***" for e in entries), log
    assert len(titles) == 3 and not leaks(" | ".join(titles)), titles
    assert names and not leaks(repr(names)), names
    assert len(heartbeats) == 1 and not leaks(heartbeats[0][0]), heartbeats
    # last_error: what `kongtaskd jobs` and graphile-worker's tools show of the failure.
    ((last_error,),) = query(
        migrated, "select last_error from graphile_worker._private_jobs where id = %s", (job_id,)
    )
    assert "ValueError: failing with '***' in the error" in last_error
    assert not leaks(last_error), last_error


def test_a_child_connections_password_is_shown_nowhere(migrated: str, tmp_path: Path) -> None:
    """``child_connection`` holds a password of its own (the pooler's): registered like
    ``connection``'s, so the children's logs, titles and application_name hide it."""
    (tmp_path / "leaky.py").write_text(LEAKY_HANDLER)
    config = write_config(
        tmp_path,
        migrated,
        concurrency=1,
        child_connection=uri(migrated),
        python_path=[str(tmp_path)],
        tasks={"leaky": "leaky:leaky"},
        task_modules=[],
    )
    job_id = query(migrated, "select id from graphile_worker.add_job('leaky', '{}')")[0][0]
    with Daemon(config) as daemon:
        daemon.wait_ready()
        titles, names = shown_after_first_attempt(daemon, migrated, job_id)
        assert daemon.stop() == 0
        log = daemon.log()
    assert "connected with password ***" in log, log
    assert not leaks(log), log
    assert len(titles) == 2 and not leaks(" | ".join(titles)), titles
    assert names and not leaks(repr(names)), names
    ((last_error,),) = query(
        migrated, "select last_error from graphile_worker._private_jobs where id = %s", (job_id,)
    )
    assert "ValueError: failing with '***' in the error" in last_error, last_error


# --- .pgpass --------------------------------------------------------------------------------


def test_a_pgpass_password_is_never_quoted_and_is_hidden_once_used(
    migrated: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """libpq never quotes a .pgpass password in its messages (checked here, for a refused
    connection); once it used one, connect() registers it, so log lines hide it too."""
    redact.forget_secrets()
    params = parse_dsn(migrated)
    params.pop("password", None)
    escaped = PASSWORD.replace("\\", "\\\\").replace(":", "\\:")
    passfile = tmp_path / "pgpass"
    passfile.write_text(f"*:*:*:*:{escaped}\n")
    passfile.chmod(0o600)
    monkeypatch.setenv("PGPASSFILE", str(passfile))
    monkeypatch.delenv("PGPASSWORD", raising=False)
    try:
        with pytest.raises(DatabaseError) as caught:
            connect(make_dsn(**{**params, "host": "127.0.0.1", "port": "1"}))
        assert not leaks(caught.value.message), caught.value.message
        conn = connect(make_dsn(**params))
        try:
            assert conn.info.password == PASSWORD
        finally:
            conn.close()
        assert redact.scrub(f"a handler printed {PASSWORD}") == "a handler printed ***"
    finally:
        redact.forget_secrets()
