"""``kongtaskd.run`` from a program: the real supervisor, zygote and children, in a subprocess."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import kongtaskd
from tests.support import kill_process_group, wait_for
from tests.support.daemon import FIXTURES, prepare_database, query

PROGRAM = """
import os, sys
import kongtaskd

def in_main(payload, ctx):
    # Defined in __main__ of the calling program: it reaches the children only through
    # the memory the zygote inherits from this process.
    with ctx.connection.cursor() as cur:
        cur.execute(
            "insert into kt_runs (job_id, task, payload, pid, attempts, started_at)"
            " values (%s, 'in_main', %s, %s, %s, now())",
            (ctx.job.id, __import__("json").dumps(payload), os.getpid(), ctx.job.attempts),
        )

code = kongtaskd.run(
    {{"connection": {dsn!r}, "concurrency": 2, "python_path": [{fixtures!r}],
      "log": {{"level": "info"}}}},
    tasks={{"in_main": in_main, "remember": "handlers:remember"}},
    once=True,
)
print("exit", code, "supervisor", os.getpid())
sys.exit(code)
"""


def test_run_with_callables_and_specs(fresh_dsn: str, tmp_path: Path) -> None:
    prepare_database(fresh_dsn)
    for n in range(3):
        kongtaskd.add_job(fresh_dsn, "in_main", {"n": n})
    kongtaskd.add_job(fresh_dsn, "remember", {"n": 9})
    script = tmp_path / "program.py"
    script.write_text(textwrap.dedent(PROGRAM.format(dsn=fresh_dsn, fixtures=str(FIXTURES))))
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert done.returncode == 0, done.stdout + done.stderr
    supervisor = int(done.stdout.split()[-1])
    rows = query(fresh_dsn, "select task, payload::text, pid from kt_runs order by task, job_id")
    assert [row[:2] for row in rows] == [
        ("in_main", '{"n": 0}'),
        ("in_main", '{"n": 1}'),
        ("in_main", '{"n": 2}'),
        ("remember", '{"n": 9}'),
    ]
    assert supervisor not in {row[2] for row in rows}  # run by children, not the supervisor
    assert query(fresh_dsn, "select count(*) from graphile_worker._private_jobs") == [(0,)]


def test_run_refuses_a_bad_config_and_other_threads(tmp_path: Path) -> None:
    script = tmp_path / "bad.py"
    script.write_text(
        "import threading, kongtaskd\n"
        "try:\n"
        "    kongtaskd.run({'concurrency': 0}, tasks={'t': print})\n"
        "except kongtaskd.errors.ConfigError as exc:\n"
        "    print('config:', exc)\n"
        "def other():\n"
        "    try:\n"
        "        kongtaskd.run({}, tasks={'t': print})\n"
        "    except RuntimeError as exc:\n"
        "        print('thread:', exc)\n"
        "t = threading.Thread(target=other); t.start(); t.join()\n"
        "try:\n"
        "    kongtaskd.run({})\n"
        "except kongtaskd.errors.ConfigError as exc:\n"
        "    print('empty:', exc)\n"
    )
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("config: kongtaskd.run(config): concurrency:"), lines
    assert lines[1] == "thread: kongtaskd.run must be called from the main thread " + (
        "(it installs signal handlers)"
    )
    assert lines[2].startswith("empty: kongtaskd.run(config): no tasks to run"), lines


def test_run_blocks_until_sigterm_and_drains(fresh_dsn: str, tmp_path: Path) -> None:
    prepare_database(fresh_dsn)
    script = tmp_path / "program.py"
    script.write_text(
        textwrap.dedent(PROGRAM.format(dsn=fresh_dsn, fixtures=str(FIXTURES))).replace(
            "once=True", "once=False"
        )
    )
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        start_new_session=True,
    )
    try:
        kongtaskd.add_job(fresh_dsn, "in_main", {"n": 1})
        wait_for(
            lambda: query(fresh_dsn, "select count(*) from kt_runs") == [(1,)],
            timeout=60,
            what="the running kongtaskd.run to take the job",
        )
        assert proc.poll() is None  # still serving: it blocks until told to stop
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, out + err
        assert out.startswith("exit 0 supervisor")
    finally:
        kill_process_group(proc)
