"""The ``kongtaskd`` command as users run it: a real subprocess against real PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import psycopg2
import pytest

from kongtaskd import __version__
from kongtaskd.errors import ExitCode

REPO = Path(__file__).resolve().parents[2]


def kongtaskd(
    *args: str,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    stdin: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m kongtaskd ARGS`` with a clean environment (no KONGTASK_*, no PG*);
    ``stdin`` is its standard input (default: none, as from /dev/null)."""
    base = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("KONGTASK_", "PG", "GRAPHILE_")) and key != "DATABASE_URL"
    }
    return subprocess.run(
        [sys.executable, "-m", "kongtaskd", *args],
        env={**base, **(env or {})},
        cwd=cwd or REPO,
        capture_output=True,
        text=True,
        timeout=60,
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: int) -> str:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("kongtaskd: ")
    return lines[0]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rows(dsn: str, query: str, *params: object) -> list[tuple[object, ...]]:
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(query, params)
            return cur.fetchall()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def migrated(database_factory: Callable[[], str]) -> str:
    """A database migrated once by `kongtaskd migrate`, shared by the `add` tests."""
    dsn = database_factory()
    result = kongtaskd("migrate", "--connection", dsn, "--silent")
    assert result.returncode == 0, result.stderr
    return dsn


# --- basics ----------------------------------------------------------------------------------


def test_version() -> None:
    result = kongtaskd("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"kongtaskd {__version__}"


def test_help_lists_the_verbs_and_exit_codes() -> None:
    result = kongtaskd("--help")
    assert result.returncode == 0
    for word in ("migrate", "add", "--once", "--concurrency", "exit codes", "57"):
        assert word in result.stdout


@pytest.mark.parametrize("verb", ["run", "migrate", "add"])
def test_each_verb_has_help_with_defaults_and_an_example(verb: str) -> None:
    result = kongtaskd(verb, "--help")
    assert result.returncode == 0
    assert "default" in result.stdout
    assert "example:" in result.stdout


def test_usage_errors_are_one_line_exit_2() -> None:
    line = assert_one_line_error(kongtaskd("migrate", "--bogus"), ExitCode.USAGE)
    assert "--bogus" in line
    line = assert_one_line_error(kongtaskd("add", "t", "--priority", "high"), ExitCode.USAGE)
    assert "--priority" in line and "'high'" in line
    line = assert_one_line_error(kongtaskd("frobnicate"), ExitCode.USAGE)
    assert "frobnicate" in line


# --- migrate ---------------------------------------------------------------------------------


def test_migrate_installs_then_is_idempotent(fresh_dsn: str) -> None:
    first = kongtaskd("migrate", "--connection", fresh_dsn)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip().startswith(
        "schema graphile_worker is up to date (applied graphile-worker migrations 1-20"
    )
    second = kongtaskd("migrate", "--connection", fresh_dsn)
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == "schema graphile_worker is up to date (nothing to apply)"
    (count,) = rows(fresh_dsn, "select count(*) from graphile_worker.migrations")[0]
    assert count == 20


def test_migrate_silent_prints_nothing(fresh_dsn: str) -> None:
    result = kongtaskd("migrate", "--silent", env={"DATABASE_URL": fresh_dsn})
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and result.stderr == ""
    assert rows(fresh_dsn, "select max(id) from graphile_worker.migrations") == [(20,)]


def test_migrate_uses_the_config_file_and_schema_flag(fresh_dsn: str, tmp_path: Path) -> None:
    config = tmp_path / "kongtask.yaml"
    config.write_text(f"connection: '{fresh_dsn}'\nschema: from_file\n")
    result = kongtaskd("migrate", "-c", str(config), "--schema", "from_flag")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("schema from_flag is up to date")
    assert rows(fresh_dsn, "select max(id) from from_flag.migrations") == [(20,)]


def test_migrate_against_an_unreachable_server(tmp_path: Path) -> None:
    port = closed_port()
    dsn = f"postgresql://app:hunter2@127.0.0.1:{port}/app"
    result = kongtaskd("migrate", "--connection", dsn)
    line = assert_one_line_error(result, ExitCode.FAILURE)
    assert line == f"kongtaskd: cannot reach PostgreSQL at 127.0.0.1:{port}: connection refused"
    assert "hunter2" not in result.stdout + result.stderr


def test_bad_dsn_is_a_usage_error_without_the_password() -> None:
    result = kongtaskd("migrate", "--connection", "postgresql://app:hunter%zz2@db/app")
    line = assert_one_line_error(result, ExitCode.USAGE)
    assert "invalid connection string" in line
    assert "hunter" not in result.stderr


def test_debug_shows_the_traceback_but_still_no_password() -> None:
    port = closed_port()
    result = kongtaskd(
        "migrate", "--debug", "--connection", f"postgresql://app:hunter2@127.0.0.1:{port}/app"
    )
    assert result.returncode == ExitCode.FAILURE
    assert "Traceback" in result.stderr
    assert result.stderr.splitlines()[-1].startswith("kongtaskd: cannot reach PostgreSQL")
    assert "hunter2" not in result.stderr


# --- bad configuration files -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("concurency: 4\n", ":1: unknown key 'concurency' (did you mean 'concurrency'?)"),
        ("schema: x\nconcurrency: four\n", ":2: concurrency: expected an integer"),
        ("metrics:\n  port: 0\n", ":2: metrics.port: expected an integer between 1 and 65535"),
        ("timezone: Mars/Base\n", ":1: timezone: unknown time zone 'Mars/Base'"),
        ("tasks:\n  send: nocolon\n", ":2: tasks.send: expected a handler of the form"),
        ("crontab: 'x'\ncrontab_file: y\n", "crontab and crontab_file are mutually exclusive"),
        ("tasks: [a,\n", "invalid YAML"),
        ("- a\n- b\n", ":1: expected a mapping of configuration keys, got a list"),
    ],
)
def test_bad_config_files(tmp_path: Path, text: str, expected: str) -> None:
    config = tmp_path / "kongtask.yaml"
    config.write_text(text)
    result = kongtaskd("migrate", "-c", str(config))
    line = assert_one_line_error(result, ExitCode.USAGE)
    assert line.startswith(f"kongtaskd: {config}")
    assert expected in line


def test_missing_and_directory_config(tmp_path: Path) -> None:
    line = assert_one_line_error(kongtaskd("-c", str(tmp_path / "nope.yaml")), ExitCode.USAGE)
    assert line.endswith("nope.yaml: no such file or directory")
    line = assert_one_line_error(kongtaskd("migrate", "-c", str(tmp_path)), ExitCode.USAGE)
    assert line.endswith(f"{tmp_path}: it is a directory")


def test_bad_environment_value_names_the_variable() -> None:
    result = kongtaskd("migrate", env={"KONGTASK_CONCURRENCY": "lots"})
    line = assert_one_line_error(result, ExitCode.USAGE)
    assert line.startswith("kongtaskd: environment variable KONGTASK_CONCURRENCY: ")


def test_run_without_tasks_is_a_config_error(tmp_path: Path) -> None:
    config = tmp_path / "kongtask.yaml"
    config.write_text("concurrency: 1\n")
    line = assert_one_line_error(kongtaskd("-c", str(config), "--once"), ExitCode.USAGE)
    assert "no tasks to run" in line


# --- add ---------------------------------------------------------------------------------------


def test_add_with_every_option(migrated: str) -> None:
    result = kongtaskd(
        "add",
        "send_email",
        "--connection",
        migrated,
        "--payload",
        '{"to": "a@b.example", "n": [1, 2]}',
        "--queue",
        "mail",
        "--run-at",
        "2031-02-03T04:05:06+02:00",
        "--max-attempts",
        "3",
        "--job-key",
        "cli-key",
        "--job-key-mode",
        "preserve_run_at",
        "--priority",
        "-2",
        "--flag",
        "slow",
        "--flag",
        "smtp",
    )
    assert result.returncode == 0, result.stderr
    job_id = int(result.stdout.strip())
    (row,) = rows(
        migrated,
        "select task_identifier, queue_name, run_at, max_attempts, key, priority, flags "
        "from graphile_worker.jobs where id = %s",
        job_id,
    )
    assert row == (
        "send_email",
        "mail",
        dt.datetime(2031, 2, 3, 2, 5, 6, tzinfo=dt.timezone.utc),
        3,
        "cli-key",
        -2,
        {"slow": True, "smtp": True},
    )
    (payload,) = rows(
        migrated, "select payload from graphile_worker._private_jobs where id = %s", job_id
    )[0]
    assert payload == {"to": "a@b.example", "n": [1, 2]}


def test_add_json_prints_the_row(migrated: str) -> None:
    result = kongtaskd("add", "report", "--json", env={"DATABASE_URL": migrated})
    assert result.returncode == 0, result.stderr
    job = json.loads(result.stdout)
    assert job["task_identifier"] == "report"
    assert job["payload"] == {}
    assert job["max_attempts"] == 25
    assert dt.datetime.fromisoformat(job["run_at"]).tzinfo is not None
    assert rows(migrated, "select count(*) from graphile_worker.jobs where id = %s", job["id"]) == [
        (1,)
    ]


def test_add_bad_payload_names_the_flag(migrated: str) -> None:
    result = kongtaskd("add", "t", "--connection", migrated, "--payload", "{bad")
    line = assert_one_line_error(result, ExitCode.USAGE)
    assert line == (
        "kongtaskd: --payload: invalid JSON at line 1 column 2: "
        "Expecting property name enclosed in double quotes"
    )


def stored_payload(dsn: str, result: subprocess.CompletedProcess[str]) -> object:
    assert result.returncode == 0, result.stderr
    job_id = int(result.stdout.strip())
    query = "select payload from graphile_worker._private_jobs where id = %s"
    return rows(dsn, query, job_id)[0][0]


def big_payload() -> dict[str, object]:
    """Over 1 MB of JSON: far beyond what a command-line argument may carry (~128 KB)."""
    return {"blob": "ü" * 300_000 + "x" * 600_000, "rows": [[n, str(n)] for n in range(20_000)]}


def test_add_payload_from_a_file_over_a_megabyte(migrated: str, tmp_path: Path) -> None:
    payload = big_payload()
    path = tmp_path / "payload.json"
    path.write_text(json.dumps(payload, indent=1), encoding="utf-8")
    assert path.stat().st_size > 1_000_000
    result = kongtaskd("add", "t", "--connection", migrated, "--payload", f"@{path}")
    assert stored_payload(migrated, result) == payload


def test_add_payload_from_standard_input_over_a_megabyte(migrated: str) -> None:
    payload = big_payload()
    text = json.dumps(payload)
    assert len(text.encode()) > 1_000_000
    result = kongtaskd("add", "t", "--connection", migrated, "--payload", "-", stdin=text)
    assert stored_payload(migrated, result) == payload


def test_add_payload_from_a_file_accepts_what_the_flag_accepts(
    migrated: str, tmp_path: Path
) -> None:
    # --payload takes any JSON value (graphile-worker's batch jobs have array payloads).
    path = tmp_path / "list.json"
    path.write_bytes(b"\xef\xbb\xbf[1, 2]\n")  # a UTF-8 BOM, as some editors write
    result = kongtaskd("add", "t", "--connection", migrated, "--payload", f"@{path}")
    assert stored_payload(migrated, result) == [1, 2]


@pytest.mark.parametrize(
    ("content", "stdin", "expected"),
    [
        (None, None, "--payload @{file}: no such file"),
        ("dir", None, "--payload @{file}: is a directory, not a file"),
        (
            b'{\n  "a": 1,\n  "b": \n}',
            None,
            "--payload @{file}: invalid JSON at line 4 column 1: Expecting value",
        ),
        (b"\xff\xfe{}", None, "--payload @{file}: not UTF-8 text (byte 0"),
        (b"", None, "--payload @{file}: the file is empty; expected JSON"),
        (None, '{"a":\n [1,}', "--payload - (standard input): invalid JSON at line 2 column 5: "),
        (None, "", "--payload - (standard input): standard input is empty; expected JSON"),
    ],
)
def test_add_payload_file_and_stdin_errors(
    migrated: str, tmp_path: Path, content: bytes | str | None, stdin: str | None, expected: str
) -> None:
    path = tmp_path / "payload.json"
    if content == "dir":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    source = "-" if stdin is not None else f"@{path}"
    result = kongtaskd("add", "t", "--connection", migrated, "--payload", source, stdin=stdin)
    line = assert_one_line_error(result, ExitCode.USAGE)
    assert line.startswith("kongtaskd: " + expected.format(file=path)), line


def test_add_payload_at_without_a_file_name(migrated: str) -> None:
    line = assert_one_line_error(
        kongtaskd("add", "t", "--connection", migrated, "--payload", "@"), ExitCode.USAGE
    )
    assert line == "kongtaskd: --payload @: give a file name after @ (or - for standard input)"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--run-at", "2031-02-03T04:05"), "kongtaskd: --run-at: '2031-02-03T04:05' has no UTC"),
        (("--run-at", "next tuesday"), "kongtaskd: --run-at: 'next tuesday' is not an ISO 8601"),
        (("--max-attempts", "0"), "kongtaskd: --max-attempts: must be between 1 and 32767"),
        (("--priority", "40000"), "kongtaskd: --priority: must be between -32768 and 32767"),
        (("--job-key", ""), "kongtaskd: --job-key: must not be empty"),
    ],
)
def test_add_bad_options_name_the_flag_before_connecting(
    args: tuple[str, ...], expected: str
) -> None:
    # The server is unreachable: a flag error proves the check came first.
    unreachable = f"postgresql://x@127.0.0.1:{closed_port()}/x"
    result = kongtaskd("add", "t", "--connection", unreachable, *args)
    assert assert_one_line_error(result, ExitCode.USAGE).startswith(expected)


def test_add_before_migrate_says_what_to_do(fresh_dsn: str) -> None:
    line = assert_one_line_error(kongtaskd("add", "t", "--connection", fresh_dsn), 1)
    assert "run 'kongtaskd migrate' first" in line
