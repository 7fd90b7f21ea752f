"""Start-up and reload with handler code that does not import: real daemons, real SIGHUP.

The handlers are imported once, by a zygote (kongtaskd/zygote.py), never by the supervisor:
an import error at start-up is reported once and stops the start (exit 2) before any child
runs; at a reload it is refused, every old child keeps serving, and replacements fork from
the last configuration that imported cleanly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kongtaskd.errors import ExitCode
from tests.support.daemon import prepare_database, query, write_config

REPO = Path(__file__).resolve().parents[2]

#: A handler module of the test's own, so the test can break and mend it on disk.
GOOD = '''
import os

VERSION = {version!r}


def work(payload, ctx):
    """Records the code version that ran the job, and the child's pid."""
    import time

    time.sleep((payload or {{}}).get("sleep", 0))
    with ctx.connection.cursor() as cur:
        cur.execute(
            "insert into public.kt_versions (job_id, version, pid) values (%s, %s, %s)",
            (ctx.job.id, VERSION, os.getpid()),
        )
'''
BROKEN = "def work(payload, ctx):\n    return (\n"  # line 2: '(' was never closed


@pytest.fixture()
def db(fresh_dsn: str) -> str:
    prepare_database(fresh_dsn)
    query(
        fresh_dsn,
        "create table public.kt_versions (job_id bigint, version text, pid integer, "
        "at timestamptz default clock_timestamp())",
    )
    return fresh_dsn


def kongtaskd(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KONGTASK_", "PG"))}
    env.pop("DATABASE_URL", None)
    env.pop("NOTIFY_SOCKET", None)
    return subprocess.run(
        [sys.executable, "-m", "kongtaskd", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=str(cwd),
    )


def versions(db: str) -> dict[int, tuple[str, int]]:
    return {
        job: (v, pid) for job, v, pid in query(db, "select job_id, version, pid from kt_versions")
    }


# --- start-up (item 9) -----------------------------------------------------------------


def test_a_missing_python_path_stops_the_daemon_naming_the_key(db: str, tmp_path: Path) -> None:
    config = tmp_path / "kongtask.yaml"
    config.write_text(
        f"connection: {json.dumps(db)}\n"
        "tasks:\n  work: mytasks:work\n"
        "python_path:\n  - lib\n  - missing_dir\n"
    )
    (tmp_path / "lib").mkdir()
    result = kongtaskd("run", "-c", str(config), "--once", cwd=tmp_path)
    assert result.returncode == ExitCode.USAGE, result.stderr
    lines = result.stderr.splitlines()
    assert lines == [
        f"kongtaskd: {config}:6: python_path[1]: {tmp_path / 'missing_dir'} does not exist"
    ], result.stderr


def test_verbs_that_run_no_handlers_need_neither_python_path_nor_imports(
    db: str, tmp_path: Path
) -> None:
    config = tmp_path / "kongtask.yaml"
    config.write_text(
        f"connection: {json.dumps(db)}\ntasks:\n  work: mytasks:work\npython_path: [missing_dir]\n"
    )
    for args in (["add", "work", "--payload", "{}"], ["jobs", "list"], ["status"]):
        result = kongtaskd(*args, "-c", str(config), cwd=tmp_path)
        assert result.returncode == 0, (args, result.stderr)


def test_an_import_error_at_start_is_reported_once_before_any_child_starts(
    db: str, tmp_path: Path
) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "mytasks.py").write_text(BROKEN)
    config = write_config(
        tmp_path, db, python_path=[str(lib)], tasks={"work": "mytasks:work"}, task_modules=[]
    )
    result = kongtaskd("-c", str(config), cwd=tmp_path)
    assert result.returncode == ExitCode.USAGE, result.stderr
    where = f"{lib / 'mytasks.py'}:2"
    mentions = [line for line in result.stderr.splitlines() if "mytasks" in line]
    assert len(mentions) == 1, result.stderr  # once, not once per child plus a final line
    assert f"cannot import module 'mytasks' at {where}: SyntaxError" in mentions[0]
    assert "child 0 started" not in result.stderr, result.stderr
