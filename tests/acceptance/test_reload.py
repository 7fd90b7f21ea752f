"""Start-up and reload with handler code that does not import: real daemons, real SIGHUP.

The handlers are imported once, by a zygote (kongtaskd/zygote.py), never by the supervisor:
an import error at start-up is reported once and stops the start (exit 2) before any child
runs; at a reload it is refused, every old child keeps serving, and replacements fork from
the last configuration that imported cleanly.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kongtaskd.errors import ExitCode
from tests.acceptance.test_daemon import add_job
from tests.support import wait_for
from tests.support.daemon import Daemon, prepare_database, query, write_config

REPO = Path(__file__).resolve().parents[2]

#: A handler module of the test's own, so the test can break and mend it on disk.
GOOD = '''
import os

VERSION = {version!r}


def work(payload, ctx):
    """Records the code version that ran the job, and the child's pid."""
    import pathlib
    import time

    payload = payload or {{}}
    if payload.get("mark"):
        pathlib.Path(payload["mark"]).touch()
    time.sleep(payload.get("sleep", 0))
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


# --- reload (item 1, item 10's first half) ---------------------------------------------


def handler_config(tmp_path: Path, db: str, **overrides: object) -> tuple[Path, Path]:
    """A config whose one task runs tmp_path/lib/mytasks.py, written at version "v1"."""
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "mytasks.py").write_text(GOOD.format(version="v1"))
    config = write_config(
        tmp_path,
        db,
        python_path=[str(lib)],
        tasks={"work": "mytasks:work"},
        task_modules=[],
        **overrides,
    )
    return config, lib / "mytasks.py"


#: No stale bytecode when the test rewrites a module within the same second.
FRESH_IMPORTS = {"PYTHONDONTWRITEBYTECODE": "1"}


def status_json(config: Path) -> dict[str, Any]:
    result = kongtaskd("status", "-c", str(config), "--json", cwd=config.parent)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def notified_after(daemon: Daemon, first: str, then: str) -> bool:
    """A ``then`` datagram arrived after a ``first`` one."""
    messages = [m.split("\n") for m in daemon.notifications(timeout=0.05)]
    firsts = [i for i, m in enumerate(messages) if first in m]
    return bool(firsts) and any(then in m for m in messages[firsts[0] + 1 :])


def test_a_reload_with_broken_handler_code_is_refused_and_nothing_stops(
    db: str, tmp_path: Path
) -> None:
    config, module = handler_config(tmp_path, db, concurrency=2)
    mark = tmp_path / "started"
    with Daemon(config, env=FRESH_IMPORTS) as daemon:
        daemon.wait_ready()
        children = set(daemon.children())
        assert len(children) == 2
        slow = add_job(db, "work", {"sleep": 3, "mark": str(mark)})
        wait_for(mark.exists, timeout=20, what="the slow job to start")
        module.write_text(BROKEN)
        daemon.signal(signal.SIGHUP)
        wait_for(lambda: "reload refused" in daemon.log(), timeout=20, what="the refusal")
        (line,) = [ln for ln in daemon.log().splitlines() if "reload refused" in ln]
        assert f"cannot import module 'mytasks' at {module}:2: SyntaxError" in line, line
        # The running job was not interrupted: it completes, once, on its first attempt.
        wait_for(lambda: slow in versions(db), timeout=30, what="the slow job to finish")
        assert versions(db)[slow][0] == "v1"
        assert query(db, "select count(*) from graphile_worker._private_jobs") == [(0,)]
        # The old children keep serving new jobs, with the code they had.
        more = [add_job(db, "work", {}) for _ in range(4)]
        wait_for(lambda: set(more) <= set(versions(db)), timeout=30, what="jobs after it")
        assert {versions(db)[j] for j in more} <= {("v1", pid) for pid in children}
        # `kongtaskd status` shows the refused reload (from the heartbeat row).
        (pool,) = status_json(config)["pools"]
        assert pool["last_reload_at"] is not None
        assert f"{module}:2" in pool["last_reload_error"]
        text = kongtaskd("status", "-c", str(config), cwd=tmp_path).stdout
        assert "reload refused" in text and f"{module}:2" in text, text
        # systemd was told RELOADING, then READY again; nothing claimed success.
        wait_for(lambda: notified_after(daemon, "RELOADING=1", "READY=1"), what="READY")
        log = daemon.log()
        assert "reload complete" not in log and "giving up" not in log
        assert daemon.proc.poll() is None
        assert set(daemon.children()) == children
        assert daemon.stop() == 0


def test_b_a_recycled_child_runs_the_last_good_code_while_the_file_is_broken(
    db: str, tmp_path: Path
) -> None:
    config, module = handler_config(tmp_path, db, concurrency=1, max_jobs_per_child=2)
    with Daemon(config, env=FRESH_IMPORTS) as daemon:
        daemon.wait_ready()
        first = add_job(db, "work", {})
        wait_for(lambda: first in versions(db), timeout=20, what="the first job")
        module.write_text(BROKEN)  # a deploy in progress; no reload asked for
        ids = [add_job(db, "work", {}, queue_name="serial") for _ in range(5)]
        wait_for(lambda: set(ids) <= set(versions(db)), timeout=60, what="every job")
        ran = versions(db)
        assert {ran[j][0] for j in [first, *ids]} == {"v1"}
        assert len({ran[j][1] for j in [first, *ids]}) >= 3, "no child was recycled"
        assert "recycled after" in daemon.log()
        assert daemon.proc.poll() is None
        assert daemon.stop() == 0


def test_c_a_reload_after_the_fix_runs_the_new_code(db: str, tmp_path: Path) -> None:
    config, module = handler_config(tmp_path, db, concurrency=2)
    with Daemon(config, env=FRESH_IMPORTS) as daemon:
        daemon.wait_ready()
        old = set(daemon.children())
        module.write_text(BROKEN)
        daemon.signal(signal.SIGHUP)
        wait_for(lambda: "reload refused" in daemon.log(), timeout=20, what="the refusal")
        module.write_text(GOOD.format(version="v2, fixed"))
        daemon.signal(signal.SIGHUP)
        wait_for(lambda: "reload complete" in daemon.log(), timeout=30, what="the reload")
        new = set(daemon.children())
        assert len(new) == 2 and not new & old
        ids = [add_job(db, "work", {}) for _ in range(4)]
        wait_for(lambda: set(ids) <= set(versions(db)), timeout=30, what="jobs after the fix")
        assert {versions(db)[j][0] for j in ids} == {"v2, fixed"}
        assert {versions(db)[j][1] for j in ids} <= new
        # The heartbeat row now says the last reload succeeded.
        wait_for(
            lambda: status_json(config)["pools"][0]["last_reload_error"] is None,
            what="the heartbeat row to show the successful reload",
        )
        assert len([ln for ln in daemon.log().splitlines() if "reload complete" in ln]) == 1
        assert daemon.proc.poll() is None
        assert daemon.stop() == 0


def test_a_lost_zygote_is_replaced_and_a_broken_file_makes_the_daemon_degraded_not_dead(
    db: str, tmp_path: Path
) -> None:
    config, module = handler_config(tmp_path, db, concurrency=2)
    with Daemon(config, env=FRESH_IMPORTS) as daemon:
        daemon.wait_ready()
        children = set(daemon.children())
        # Killed (as by the OOM killer) while the code on disk is broken: its replacement
        # cannot import it.
        module.write_text(BROKEN)
        (zygote,) = daemon.zygotes()
        os.kill(zygote, signal.SIGKILL)
        wait_for(lambda: "degraded:" in daemon.log(), timeout=20, what="the degraded report")
        wait_for(
            lambda: status_json(config)["pools"][0]["degraded"],
            what="the heartbeat row to say degraded",
        )
        assert f"{module}:2" in status_json(config)["pools"][0]["degraded"]
        assert "DEGRADED" in kongtaskd("status", "-c", str(config), cwd=tmp_path).stdout
        # The children it has keep serving, with the code they had.
        ids = [add_job(db, "work", {}) for _ in range(3)]
        wait_for(lambda: set(ids) <= set(versions(db)), timeout=30, what="jobs while degraded")
        assert {versions(db)[j] for j in ids} <= {("v1", pid) for pid in children}
        # Mended: the retry brings a zygote back, and the row says so.
        module.write_text(GOOD.format(version="v2, mended"))
        wait_for(lambda: "a new zygote is ready" in daemon.log(), timeout=30, what="recovery")
        wait_for(
            lambda: status_json(config)["pools"][0]["degraded"] is None,
            what="the heartbeat row to clear degraded",
        )
        assert len(daemon.zygotes()) == 1 and zygote not in daemon.zygotes()
        assert daemon.proc.poll() is None
        assert set(daemon.children()) == children
        assert daemon.stop() == 0


def gone(pid: int) -> bool:
    """Exited (a zombie waiting for init to reap it counts as exited)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_no_zygote_outlives_the_supervisor(db: str, tmp_path: Path, how: str) -> None:
    config, _ = handler_config(tmp_path, db, concurrency=1)
    with Daemon(config) as daemon:
        daemon.wait_ready()
        zygotes = daemon.zygotes()
        assert len(zygotes) == 1
        daemon.signal(getattr(signal, how))
        daemon.wait(timeout=30)
        wait_for(lambda: all(gone(pid) for pid in zygotes), timeout=20, what="no zygote left")


def test_a_refused_reload_keeps_the_configs_secrets_out_of_log_and_heartbeat_row(
    db: str, tmp_path: Path
) -> None:
    password = "Zq8-Wx7Pv-Kd3Tm"  # trust authentication ignores it; the daemon must not
    config, module = handler_config(tmp_path, f"{db} password={password}", concurrency=1)
    with Daemon(config, env=FRESH_IMPORTS) as daemon:
        daemon.wait_ready()
        # A handler module whose import error quotes the secret it read from somewhere.
        module.write_text(f"raise RuntimeError('cannot log in with {password}')\n")
        daemon.signal(signal.SIGHUP)
        wait_for(lambda: "reload refused" in daemon.log(), timeout=20, what="the refusal")
        error = wait_for(
            lambda: status_json(config)["pools"][0]["last_reload_error"], what="the row"
        )
        assert "cannot log in with" in error
        windows = {password[i : i + 4] for i in range(len(password) - 3)}
        for text in (error, daemon.log()):
            assert not [w for w in windows if w in text], text
        assert daemon.stop() == 0
