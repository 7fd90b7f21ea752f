"""``kongtaskd.cli.exit_now``: the command's exit without the interpreter's teardown, which
must still do what an exit owes: atexit functions, flushed output, the exit code, and never
cut off a thread that is still working."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run(code: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env
    )


def test_atexit_functions_run_and_buffered_output_is_flushed() -> None:
    done = run(
        "import atexit, logging, sys\n"
        "from kongtaskd.cli import exit_now\n"
        "from kongtaskd.logs import defer_flushes, setup_logging\n"
        "setup_logging('info', 'text')\n"
        "defer_flushes()\n"
        "atexit.register(lambda: print('atexit ran'))\n"
        "sys.stdout.write('x' * 100000 + '\\n')  # block-buffered into a pipe\n"
        "logging.getLogger('kongtaskd.child').info('a deferred log line')\n"
        "exit_now(3)\n"
    )
    assert done.returncode == 3, done.stderr
    assert done.stdout == "x" * 100000 + "\natexit ran\n"
    assert done.stderr.endswith("a deferred log line\n"), done.stderr


def test_a_running_thread_is_waited_for() -> None:
    done = run(
        "import threading, time\n"
        "from kongtaskd.cli import exit_now\n"
        "def work():\n"
        "    time.sleep(0.2)\n"
        "    print('thread finished', flush=True)\n"
        "threading.Thread(target=work).start()\n"
        "exit_now(0)\n"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "thread finished\n"


def test_python_m_kongtaskd_output_reaches_a_pipe() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "kongtaskd", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert "kongtaskd" in done.stdout
