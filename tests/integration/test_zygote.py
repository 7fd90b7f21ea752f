"""The zygote against real processes and a real database: a stand-in supervisor
(tests/support/zygote_driver.py) launches a real zygote and forks real children from it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support import wait_for
from tests.support.daemon import FIXTURES, prepare_database, query

REPO = Path(__file__).resolve().parents[2]
POOL = "pool-zygotetest000001"


@pytest.fixture(scope="module")
def db(dsn: str) -> str:
    prepare_database(dsn)
    return dsn


def drive(scenario: str, **args: Any) -> subprocess.CompletedProcess[str]:
    args.setdefault("pool_id", POOL)
    args.setdefault("tasks", {"remember": "handlers:remember"})
    args.setdefault("python_path", [str(FIXTURES)])
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", "tests.support.zygote_driver", scenario, json.dumps(args)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=str(REPO),
    )


def result(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])  # type: ignore[no-any-return]


def test_a_child_forked_from_the_zygote_is_the_supervisors_and_runs_a_job(db: str) -> None:
    ((job_id,),) = query(db, "select id from graphile_worker.add_job('remember', '{}')")
    # What the supervisor's claim does: lock the job for this pool.
    query(
        db,
        "update graphile_worker._private_jobs set locked_by = %s, locked_at = now(), "
        "attempts = attempts + 1 where id = %s",
        (POOL, job_id),
    )
    out = result(drive("run", dsn=db, job_id=job_id))
    assert out["state"] == "ready"
    assert out["outcome"] == "DONE"
    assert out["child_exit"] == 0
    # Adopted by the stand-in supervisor (a subreaper), not left with the zygote.
    assert out["child_ppid"] == out["driver"]
    runs = query(db, "select pid from public.kt_runs where job_id = %s", (job_id,))
    assert runs == [(out["child"],)]


def test_an_import_error_is_reported_once_with_module_file_and_line(
    db: str, tmp_path: Path
) -> None:
    (tmp_path / "broken_tasks.py").write_text("def handler(payload, ctx):\n    return (\n")
    proc = drive(
        "run",
        dsn=db,
        job_id=0,
        tasks={"broken": "broken_tasks:handler"},
        python_path=[str(tmp_path)],
    )
    out = result(proc)
    assert out["state"] == "failed"
    assert out["exit"] == 3
    error = out["error"]
    assert "'broken_tasks'" in error
    assert re.search(rf"{re.escape(str(tmp_path / 'broken_tasks.py'))}:\d+", error), error
    assert "SyntaxError" in error
    assert "\n" not in error
    # Reported once, through the control socket; the zygote printed nothing of its own.
    assert proc.stderr == "", proc.stderr


def test_an_exception_at_import_names_the_line_that_raised(db: str) -> None:
    out = result(drive("run", dsn=db, job_id=0, tasks={"broken": "broken_import:handler"}))
    assert out["state"] == "failed"
    where = f"{FIXTURES / 'broken_import.py'}:3"
    assert f"at {where}: ImportError: this module is broken on purpose" in out["error"]


def test_no_fd_of_the_supervisor_zygote_or_a_sibling_reaches_a_child(db: str) -> None:
    out = result(drive("fds", dsn=db))
    fds: dict[str, dict[str, str]] = out["fds"]
    shared = ("socket:", "pipe:", "anon_inode:")
    for child in map(str, out["children"]):
        mine = {t for fd, t in fds[child].items() if int(fd) > 2 and t.startswith(shared)}
        assert mine, "a child holds at least its channel and its database socket"
        for other, targets in fds.items():
            if other == child:
                continue
            theirs = {t for fd, t in targets.items() if int(fd) > 2}
            assert not mine & theirs, f"child {child} shares {mine & theirs} with {other}"
        assert not mine & set(out["held"])
    # The zygote keeps nothing of the supervisor's either: its control socket only.
    zygote = {t for fd, t in fds[str(out["zygote"])].items() if int(fd) > 2}
    assert len(zygote) == 1 and next(iter(zygote)).startswith("socket:"), zygote


def process_gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")  # a zombie is dead, just unreaped


def test_the_zygote_and_its_children_die_with_the_supervisor(db: str) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.support.zygote_driver",
            "orphan",
            json.dumps(
                {
                    "dsn": db,
                    "pool_id": POOL,
                    "tasks": {"remember": "handlers:remember"},
                    "python_path": [str(FIXTURES)],
                }
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        cwd=str(REPO),
    )
    assert proc.stdout is not None
    pids = json.loads(proc.stdout.readline())
    proc.wait(60)
    assert proc.returncode == -9
    wait_for(lambda: process_gone(pids["zygote"]), timeout=20, what="the zygote's death")
    wait_for(lambda: process_gone(pids["child"]), timeout=20, what="the child's death")
    # The child left no session behind.
    sessions = (
        "select pid from pg_stat_activity where application_name = 'kongtaskd child 0' "
        "and datname = current_database()"
    )
    wait_for(lambda: not query(db, sessions), timeout=20, what="the child's session to end")


def test_a_reload_whose_import_hangs_is_given_up_and_the_good_zygote_serves_on(
    db: str, tmp_path: Path
) -> None:
    (tmp_path / "hangs_mod.py").write_text("import time\n\ntime.sleep(600)\n")
    out = result(drive("hung_reload", dsn=db, hang_dir=str(tmp_path)))
    assert out["events"] == [
        ["reload_failed", "the handlers did not import within 1s (a hanging import?)"]
    ]
    assert out["spawned"] > 0  # from the good zygote, meanwhile and after
    wait_for(lambda: all(process_gone(pid) for pid in out["hung"]), what="the hung zygote")
