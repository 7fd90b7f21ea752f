"""`manage.py kongtaskd` (here `python -m django kongtaskd`, the same command): a real
daemon exec'd from the Django settings runs django.tasks jobs and plain handlers."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from kongtaskd.enqueue import add_job
from tests.support import wait_for
from tests.support.daemon import REPO, query

pytestmark = pytest.mark.usefixtures("clean_queue")


def manage(
    environ: dict[str, str], *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "django", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environ,
        cwd=REPO,
    )


def _notes(dsn: str) -> list[tuple[str, int]]:
    return query(dsn, "select text, attempt from testapp_note order by text")  # type: ignore[return-value]


def test_the_daemon_runs_django_tasks_and_plain_handlers(
    django_dsn: str, django_env: dict[str, str]
) -> None:
    from kongtaskd.contrib.django._compat import TaskResultStatus
    from tests.django_tests.testapp.tasks import note, note_async, note_attempt, note_then_fail

    note.enqueue("a")
    note_async.enqueue("e")
    note_attempt.enqueue("b")
    failing = note_then_fail.enqueue("c")
    add_job(django_dsn, "testapp.plain", {"text": "d"})
    done = manage(django_env, "kongtaskd", "--once")
    assert done.returncode == 0, done.stderr
    # takes_context: attempt 1. The failed task's write and follow-up job rolled back with it.
    assert _notes(django_dsn) == [("a", 0), ("async e", 0), ("b", 1), ("plain d", 0)]
    remaining = query(django_dsn, "select task_identifier, attempts from graphile_worker.jobs")
    assert remaining == [("django.tasks:default", 1)]
    result = note_then_fail.get_result(failing.id)
    assert result.status == TaskResultStatus.FAILED  # OPTIONS max_attempts: 1
    assert result.attempts == 1
    assert result.errors[0].exception_class_path == "builtins.ValueError"
    assert result.errors[0].traceback.startswith("ValueError: failed after writing 'c'")


def test_a_daemon_limited_to_some_django_queues_claims_only_those(
    django_dsn: str, django_env: dict[str, str]
) -> None:
    from tests.django_tests.testapp.tasks import note, note_attempt

    note.enqueue("default queue")
    note_attempt.enqueue("emails queue")
    done = manage(django_env, "kongtaskd", "--once", "--queue", "emails")
    assert done.returncode == 0, done.stderr
    assert _notes(django_dsn) == [("emails queue", 1)]
    # The default queue's job was not even claimed: it waits for a daemon that runs it.
    assert query(django_dsn, "select task_identifier, attempts from graphile_worker.jobs") == [
        ("django.tasks:default", 0)
    ]


def test_get_result_sees_a_running_job_and_raises_once_it_succeeded(
    django_dsn: str, django_env: dict[str, str], tmp_path: Path
) -> None:
    from kongtaskd.contrib.django._compat import TaskResultDoesNotExist, TaskResultStatus
    from tests.django_tests.testapp.tasks import wait_for_file

    go = tmp_path / "go"
    result = wait_for_file.enqueue(str(go))
    daemon = subprocess.Popen(
        [sys.executable, "-m", "django", "kongtaskd", "--queue", "slow"],
        env=django_env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:

        def status() -> object:
            try:
                return wait_for_file.get_result(result.id).status
            except TaskResultDoesNotExist:
                return "gone"

        wait_for(lambda: status() == TaskResultStatus.RUNNING, timeout=60, what="RUNNING")
        running = wait_for_file.get_result(result.id)
        locked_by = query(django_dsn, "select locked_by from graphile_worker.jobs")[0][0]
        assert running.started_at is not None and running.worker_ids == [locked_by]
        go.touch()
        wait_for(lambda: status() == "gone", timeout=60, what="the job to finish")
        assert _notes(django_dsn) == [(f"waited for {go}", 0)]
    finally:
        os.kill(daemon.pid, signal.SIGTERM)
        output, _ = daemon.communicate(timeout=60)
    assert daemon.returncode == 0, output


def test_command_errors_name_the_problem(django_env: dict[str, str]) -> None:
    done = manage(django_env, "kongtaskd", "--once", "--queue", "nope")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        "CommandError: --queue: 'nope' is not a queue of a kongtaskd backend "
        "(QUEUES: default, emails, slow)"
    )


def test_the_daemons_config_file_is_private_and_holds_no_password(
    django_dsn: str, tmp_path: Path
) -> None:
    from django.test import override_settings

    from kongtaskd.contrib.django.daemon import invocation

    connection = "host=127.0.0.1 dbname=somewhere user=app password=pw-Zq81-never-shown"
    # python_path must exist: the verbs that run handlers refuse a missing directory.
    lib = tmp_path / "lib"
    lib.mkdir()
    setting = {"connection": connection, "python_path": [str(lib)], "tasks": {"mine": "m:f"}}
    with override_settings(KONGTASKD=setting):
        argv, environ, path = invocation(["emails"], once=True, concurrency=3, environ={})
    try:
        text = path.read_text()
        assert "pw-Zq81" not in text and "pw-Zq81" not in " ".join(argv)
        assert environ["PGPASSWORD"] == "pw-Zq81-never-shown"
        assert environ["DJANGO_SETTINGS_MODULE"] == "tests.django_tests.settings"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert argv[1:] == [
            "-m",
            "kongtaskd",
            "run",
            "--config",
            str(path),
            "--once",
            "--concurrency",
            "3",
        ]
        from kongtaskd.config import load_config

        config = load_config(path, environ={})
        assert list(config.tasks) == ["django.tasks:emails", "mine"]
        assert config.task_modules == ("kongtaskd.contrib.django.worker",)
        assert config.django_settings == "tests.django_tests.settings"
        assert config.python_path == (str(lib),)
    finally:
        path.unlink()
