"""The admin verbs as users run them: `kongtaskd jobs|status|cleanup|init` in a subprocess,
against real PostgreSQL, a real daemon and (marked interop) the real graphile-worker."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from kongtaskd.errors import ExitCode
from tests.acceptance.test_cli import kongtaskd
from tests.support import wait_for
from tests.support.daemon import Daemon, prepare_database, query, run_once, write_config
from tests.support.graphile import run_graphile, start_graphile

REPO = Path(__file__).resolve().parents[2]
ACTIONS = ("list", "retry", "fail", "remove", "reschedule")


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result.stdout


def one_line_error(result: subprocess.CompletedProcess[str], code: int) -> str:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("kongtaskd: ")
    return lines[0]


def add(dsn: str, task: str, payload: Any = None, **options: Any) -> int:
    """Enqueue through graphile-worker's SQL function, as any application would."""
    names = "".join(f", {key} => %({key})s" for key in options)
    params = {"task": task, "payload": json.dumps(payload or {}), **options}
    text = f"select id from graphile_worker.add_job(%(task)s, %(payload)s::json{names})"
    return int(query(dsn, text, params)[0][0])


def job(dsn: str, job_id: int) -> dict[str, Any] | None:
    rows = query(
        dsn,
        "select row_to_json(j) from graphile_worker._private_jobs as j where id = %s",
        (job_id,),
    )
    return rows[0][0] if rows else None


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def db(database_factory: Callable[[], str]) -> str:
    """One migrated database (with the fixture handlers' kt_runs table) for the module."""
    dsn = database_factory()
    prepare_database(dsn)
    return dsn


@pytest.fixture()
def clean(db: str) -> str:
    """The module's database with empty queue tables."""
    query(
        db,
        "truncate graphile_worker._private_jobs, graphile_worker._private_job_queues, "
        "graphile_worker._private_tasks, graphile_worker._kongtaskd_heartbeats, public.kt_runs",
    )
    return db


# --- help -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [("jobs",), ("status",), ("cleanup",), ("init",), *(("jobs", a) for a in ACTIONS)],
)
def test_help_shows_defaults_and_an_example(argv: tuple[str, ...]) -> None:
    out = ok(kongtaskd(*argv, "--help"))
    assert "default" in out
    assert "example:" in out


def test_top_level_help_lists_the_admin_verbs() -> None:
    out = ok(kongtaskd("--help"))
    for verb in ("jobs", "status", "cleanup", "init"):
        assert re.search(rf"^    {verb}\s", out, re.M), verb


# --- jobs list ------------------------------------------------------------------------------


def test_jobs_list_table_and_json(clean: str) -> None:
    ready = add(clean, "mail", {"to": "x"}, queue_name="q")
    failed = add(clean, "mail", max_attempts=1)
    query(
        clean,
        "update graphile_worker._private_jobs set attempts = 1, "
        "last_error = E'Boom: bad\\nTraceback ...' where id = %s",
        (failed,),
    )
    later = add(clean, "report", run_at="2031-01-01T00:00:00Z")

    table = ok(kongtaskd("jobs", "list", "--connection", clean)).splitlines()
    assert table[0].split() == [
        "ID", "TASK", "QUEUE", "STATE", "ATTEMPTS", "PRIORITY", "RUN", "AT", "LOCKED", "BY",
        "LAST", "ERROR",
    ]  # fmt: skip
    assert len(table) == 4
    assert re.match(rf"^ *{failed}  mail .* failed .* 1/1 .* Boom: bad$", table[2])
    assert "2031-01-01T00:00:00Z" in table[3]

    parsed = json.loads(ok(kongtaskd("jobs", "list", "--connection", clean, "--json")))
    assert [j["id"] for j in parsed] == [ready, failed, later]
    assert parsed[0]["payload"] == {"to": "x"} and parsed[0]["queue_name"] == "q"
    assert parsed[1]["last_error"] == "Boom: bad\nTraceback ..."
    assert [j["state"] for j in parsed] == ["ready", "failed", "scheduled"]

    def ids(*flags: str) -> list[int]:
        out = ok(kongtaskd("jobs", "list", "--connection", clean, "--json", *flags))
        return [j["id"] for j in json.loads(out)]

    assert ids("--failed") == [failed]
    assert ids("--scheduled") == [later]
    assert ids("--locked") == []
    assert ids("--task", "mail", "--queue", "q") == [ready]
    assert ids("--limit", "1") == [ready]
    assert ids("--limit", "0") == [ready, failed, later]
    footer = ok(kongtaskd("jobs", "list", "--connection", clean, "--limit", "2"))
    assert footer.splitlines()[-1].startswith("(showing 2 of 3 jobs")
    line = one_line_error(
        kongtaskd("jobs", "list", "--connection", clean, "--failed", "--locked"), ExitCode.USAGE
    )
    assert "--locked" in line


def add_many(dsn: str, count: int, pad: int = 0) -> list[int]:
    """``count`` jobs in one statement, their payloads padded with ``pad`` characters."""
    rows = query(
        dsn,
        "select job.id from generate_series(1, %s) as n, lateral graphile_worker.add_job("
        "'bulk', json_build_object('n', n, 'pad', repeat('x', %s))) as job order by job.id",
        (count, pad),
    )
    return [row[0] for row in rows]


def test_jobs_list_json_lists_every_job_unless_limited(clean: str) -> None:
    ids = add_many(clean, 105)
    listed = kongtaskd("jobs", "list", "--connection", clean, "--json")
    assert [job["id"] for job in json.loads(ok(listed))] == ids
    assert listed.stderr == ""

    capped = kongtaskd("jobs", "list", "--connection", clean, "--json", "--limit", "100")
    assert [job["id"] for job in json.loads(ok(capped))] == ids[:100]
    assert capped.stderr == (
        "kongtaskd: jobs list --limit 100: listed 100 of 105 matching jobs "
        "(without --limit, --json lists all)\n"
    )
    enough = kongtaskd("jobs", "list", "--connection", clean, "--json", "--limit", "105")
    assert len(json.loads(ok(enough))) == 105 and enough.stderr == ""
    # The table keeps its screenful and says what it left out.
    table = ok(kongtaskd("jobs", "list", "--connection", clean)).splitlines()
    assert len(table) == 1 + 100 + 1
    assert table[-1].startswith("(showing 100 of 105 jobs")


def test_jobs_list_json_streams_while_it_fetches(clean: str) -> None:
    """The first jobs are written while the rest are still to be fetched: the list is not
    built in memory. A reader that stops reading leaves the command blocked on the pipe
    with its cursor open ("idle in transaction" after a FETCH)."""
    count = 3000
    add_many(clean, count, pad=300)  # ~1.3 MB of JSON: far beyond a pipe's 64 KiB
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("KONGTASK_", "PG", "GRAPHILE_")) and key != "DATABASE_URL"
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "kongtaskd", "jobs", "list", "--connection", clean, "--json"],
        stdout=subprocess.PIPE,
        env=env,
        cwd=REPO,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"[\n"

        def blocked_mid_list() -> bool:
            rows = query(
                clean,
                "select state, query from pg_stat_activity "
                "where application_name = 'kongtaskd jobs list'",
            )
            return any(
                state == "idle in transaction" and text.startswith("FETCH") for state, text in rows
            )

        wait_for(blocked_mid_list, timeout=30, what="jobs list blocked on stdout, cursor open")
        rest = proc.stdout.read()
        assert proc.wait(60) == 0
    finally:
        kill_process_group_if_running(proc)
    assert len(json.loads(b"[\n" + rest)) == count

    # A reader that stops early (`| head`) ends it quietly with the SIGPIPE code.
    proc = subprocess.Popen(
        [sys.executable, "-m", "kongtaskd", "jobs", "list", "--connection", clean, "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=REPO,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stdout.readline() == b"[\n"
        proc.stdout.close()
        assert proc.wait(60) == 141
        assert proc.stderr.read() == b""
    finally:
        kill_process_group_if_running(proc)


def kill_process_group_if_running(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)


def test_jobs_list_on_an_unmigrated_database(fresh_dsn: str) -> None:
    line = one_line_error(kongtaskd("jobs", "list", "--connection", fresh_dsn), ExitCode.FAILURE)
    assert line.startswith("kongtaskd: schema graphile_worker holds no graphile-worker queue")
    assert "run 'kongtaskd migrate' first" in line


# --- jobs retry / fail / remove / reschedule ------------------------------------------------


def test_retry_runs_a_permanently_failed_job_again(clean: str, tmp_path: Path) -> None:
    config = write_config(tmp_path, clean)
    job_id = add(clean, "remember", {"n": 1}, max_attempts=2)

    assert ok(kongtaskd("jobs", "fail", "-c", str(config), str(job_id), "--message", "stop")) == (
        f"failed job {job_id}\n"
    )
    first = run_once(config)
    assert first.returncode == 0, first.stderr
    assert query(clean, "select count(*) from public.kt_runs") == [(0,)]
    row = job(clean, job_id)
    assert row is not None and (row["attempts"], row["last_error"]) == (2, "stop")

    assert ok(kongtaskd("jobs", "retry", "-c", str(config), str(job_id))) == (
        f"retried job {job_id}\n"
    )
    row = job(clean, job_id)
    assert row is not None and (row["attempts"], row["last_error"]) == (0, "stop")
    done = run_once(config)
    assert done.returncode == 0, done.stderr
    assert query(clean, "select job_id, attempts from public.kt_runs") == [(job_id, 1)]
    assert job(clean, job_id) is None


def test_unknown_and_running_ids_are_named_after_the_rest_is_done(clean: str) -> None:
    known = add(clean, "t")
    running = add(clean, "t")
    query(
        clean,
        "update graphile_worker._private_jobs set locked_by = 'pool-aaaaaaaaaaaaaaaaaa', "
        "locked_at = now() where id = %s",
        (running,),
    )
    result = kongtaskd("jobs", "remove", "--connection", clean, str(known), "424242", str(running))
    line = one_line_error(result, ExitCode.FAILURE)
    assert result.stdout == f"removed job {known}\n"
    assert line.startswith("kongtaskd: job 424242 does not exist; ")
    assert f"job {running} is running (locked by pool-aaaaaaaaaaaaaaaaaa since " in line
    assert line.endswith("not removed")
    assert job(clean, known) is None and job(clean, running) is not None

    result = kongtaskd("jobs", "retry", "--connection", clean, "424242", "434343")
    assert one_line_error(result, ExitCode.FAILURE) == (
        "kongtaskd: jobs 424242, 434343 do not exist"
    )
    assert result.stdout == ""


def test_reschedule(clean: str) -> None:
    job_id = add(clean, "t")
    out = ok(
        kongtaskd(
            "jobs",
            "reschedule",
            "--connection",
            clean,
            str(job_id),
            "--run-at",
            "2031-05-06T07:08:09+02:00",
            "--priority",
            "-3",
        )
    )
    assert out == f"rescheduled job {job_id}\n"
    row = query(
        clean,
        "select run_at = '2031-05-06T05:08:09Z'::timestamptz, priority "
        "from graphile_worker._private_jobs where id = %s",
        (job_id,),
    )
    assert row == [(True, -3)]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("reschedule", "1", "--run-at", "tomorrow"), "--run-at: 'tomorrow' is not an ISO 8601"),
        (
            ("reschedule", "1", "--run-at", "2031-01-01T10:00"),
            "--run-at: '2031-01-01T10:00' has no",
        ),
        (("reschedule", "1"), "give --run-at, --priority or both"),
        (("reschedule", "1", "--priority", "40000"), "--priority: must be between -32768"),
        (("retry", "x"), "argument ID: 'x' is not a job id"),
        (("fail", "0"), "argument ID: '0' is not a job id"),
        (("remove",), "the following arguments are required: ID"),
        (("list", "--limit", "-1"), "argument --limit: '-1' is negative"),
    ],
)
def test_bad_arguments_are_usage_errors_before_connecting(
    args: tuple[str, ...], expected: str
) -> None:
    # An unreachable server: the flag is refused before any connection attempt.
    dsn = f"postgresql://app@127.0.0.1:{closed_port()}/app"
    line = one_line_error(kongtaskd("jobs", *args, "--connection", dsn), ExitCode.USAGE)
    assert expected in line


# --- status ---------------------------------------------------------------------------------


def test_status_with_a_heartbeat_row(clean: str) -> None:
    query(
        clean,
        "insert into graphile_worker._kongtaskd_heartbeats (pool_id, hostname, pid, version, "
        "concurrency, busy, jobs_done, started_at, last_beat_at) values "
        "('pool-111111111111111111', 'web-1', 77, '0.1.0', 4, 3, 9, now() - interval '2 hours', "
        "now() - interval '2 seconds'), "
        "('pool-222222222222222222', 'web-2', 88, '0.1.0', 2, 0, 0, now() - interval '1 day', "
        "now() - interval '5 minutes') returning 1",
    )
    add(clean, "mail")
    add(clean, "mail", queue_name="q", run_at="2031-01-01T00:00:00Z")

    report = json.loads(ok(kongtaskd("status", "--connection", clean, "--json")))
    pools = {p["pool_id"]: p for p in report["pools"]}
    live = pools["pool-111111111111111111"]
    assert (live["hostname"], live["pid"], live["busy"], live["idle"]) == ("web-1", 77, 3, 1)
    assert live["stale"] is False and pools["pool-222222222222222222"]["stale"] is True
    assert 7100 < live["uptime_seconds"] < 7300
    assert report["tasks"] == [
        {"name": "mail", "ready": 1, "scheduled": 1, "locked": 0, "failed": 0, "total": 2}
    ]
    assert report["queues"][0]["name"] == "q"
    assert report["totals"]["total"] == 2

    text = ok(kongtaskd("status", "--connection", clean))
    assert re.search(
        r"^  pool-111111111111111111\s+3\s+1\s+9\s+0\s+web-1\s+77\s.*2h00m.*live$", text, re.M
    )
    assert re.search(r"^  pool-222222222222222222\s.*\s5m0\ds ago\s+STALE$", text, re.M)
    assert "total: 1 ready, 1 scheduled, 0 locked, 0 failed" in text


def test_status_shows_a_live_daemon_and_the_pool_id_it_locks_with(
    clean: str, tmp_path: Path
) -> None:
    config = write_config(tmp_path, clean, heartbeat_interval=0.2, stale_after=5)
    with Daemon(config) as daemon:
        daemon.wait_ready()
        job_id = add(clean, "remember", {"sleep": 3})

        def locked_by() -> str | None:
            row = job(clean, job_id)
            return row["locked_by"] if row else None

        pool_id = wait_for(locked_by, timeout=20, what="the job to be claimed")

        def our_pool() -> dict[str, Any] | None:
            report = json.loads(ok(kongtaskd("status", "-c", str(config), "--json")))
            return next((p for p in report["pools"] if p["busy"] == 1), None)

        pool = wait_for(our_pool, timeout=20, what="a heartbeat with one busy child")
        assert pool["pool_id"] == pool_id
        assert re.fullmatch(r"pool-[0-9a-f]{18}", pool_id)
        assert (pool["pid"], pool["concurrency"], pool["idle"]) == (daemon.pid, 2, 1)
        assert pool["locked_jobs"] == 1 and pool["stale"] is False
        assert pool["hostname"] == socket.gethostname()

        # The job it is running cannot be retried from under it.
        result = kongtaskd("jobs", "retry", "-c", str(config), str(job_id))
        assert f"locked by {pool_id}" in one_line_error(result, ExitCode.FAILURE)
        assert daemon.stop() == 0
    assert json.loads(ok(kongtaskd("status", "-c", str(config), "--json")))["pools"] == []


# --- cleanup --------------------------------------------------------------------------------


def test_cleanup(clean: str, tmp_path: Path) -> None:
    add(clean, "used", queue_name="busy_q")
    dead = add(clean, "dead_task", queue_name="dead_q", max_attempts=1)
    query(
        clean,
        "update graphile_worker._private_jobs set attempts = 1 where id = %s returning id",
        (dead,),
    )
    query(
        clean,
        "insert into graphile_worker._private_tasks (identifier) "
        "values ('remember'), ('spare'), ('node_only') returning id",
    )
    config = write_config(tmp_path, clean)  # serves remember and the other fixture tasks

    # Without flags: identifiers and queues, not the failed job.
    out = ok(kongtaskd("cleanup", "-c", str(config), "--keep-task", "node_only"))
    assert out == "deleted 1 unused task identifier: spare\ndeleted 0 unused queues\n"
    assert job(clean, dead) is not None

    out = ok(kongtaskd("cleanup", "-c", str(config), "--permafailed"))
    assert out == "deleted 1 permanently failed job\n"
    assert job(clean, dead) is None

    out = ok(kongtaskd("cleanup", "-c", str(config), "--tasks", "--queues"))
    assert out == (
        "deleted 2 unused task identifiers: dead_task, node_only\ndeleted 1 unused queue: dead_q\n"
    )
    # 'remember' has no job but the configuration serves it: kept.
    left = {r[0] for r in query(clean, "select identifier from graphile_worker._private_tasks")}
    assert left == {"used", "remember"}
    # Without a configuration nothing is known to be served.
    out = ok(kongtaskd("cleanup", "--connection", clean, "--tasks"))
    assert out == "deleted 1 unused task identifier: remember\n"


# --- init -----------------------------------------------------------------------------------


def test_init_writes_a_project_that_runs(fresh_dsn: str, tmp_path: Path) -> None:
    target = tmp_path / "project"
    out = ok(kongtaskd("init", str(target)))
    config = target / "kongtask.yaml"
    assert out.splitlines()[0] == f"wrote {config}, {target / 'tasks.py'}"

    env = {"DATABASE_URL": fresh_dsn}
    ok(kongtaskd("migrate", "-c", str(config), "--silent", env=env))
    job_id = int(
        ok(kongtaskd("add", "hello", "--payload", '{"name": "test"}', "-c", str(config), env=env))
    )
    done = kongtaskd("-c", str(config), "--once", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "hello, test (attempt 1)" in done.stderr
    assert job(fresh_dsn, job_id) is None

    again = kongtaskd("init", str(target))
    line = one_line_error(again, ExitCode.USAGE)
    assert line.startswith(f"kongtaskd: {config}: already exists")


def test_init_defaults_to_the_current_directory(tmp_path: Path) -> None:
    ok(kongtaskd("init", cwd=tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kongtask.yaml", "tasks.py"]


# --- beside the real graphile-worker --------------------------------------------------------

SLEEPY_TASK = """\
module.exports = async () => {
  await new Promise((resolve) => setTimeout(resolve, 60000));
};
"""


@pytest.mark.interop
def test_status_and_retry_beside_a_running_graphile_worker(fresh_dsn: str, tmp_path: Path) -> None:
    prepare_database(fresh_dsn)
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "sleepy.js").write_text(SLEEPY_TASK)
    (tmp_path / "package.json").write_text('{"type": "commonjs"}')
    job_id = add(fresh_dsn, "sleepy", queue_name="slow")
    worker = start_graphile(["--jobs", "1"], fresh_dsn, cwd=tmp_path)
    try:

        def locked_by() -> str | None:
            if worker.poll() is not None:
                raise AssertionError(f"graphile-worker exited: {worker.communicate()}")
            row = job(fresh_dsn, job_id)
            return row["locked_by"] if row else None

        pool_id = wait_for(locked_by, timeout=30, what="graphile-worker to claim the job")
        report = json.loads(ok(kongtaskd("status", "--connection", fresh_dsn, "--json")))
        assert report["pools"] == []
        (holder,) = report["other_lock_holders"]
        assert (holder["locked_by"], holder["jobs"], holder["queues"]) == (pool_id, 1, 1)
        text = ok(kongtaskd("status", "--connection", fresh_dsn))
        assert f"  {pool_id} (no heartbeat: graphile-worker?) holding 1 job and 1 queue" in text

        result = kongtaskd("jobs", "fail", "--connection", fresh_dsn, str(job_id))
        assert f"job {job_id} is running (locked by {pool_id}" in one_line_error(
            result, ExitCode.FAILURE
        )
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.communicate(timeout=30)


CLEANUP_STATE = """
select graphile_worker.add_job('used', queue_name => 'used_q');
select graphile_worker.add_job('dead', queue_name => 'dead_q', max_attempts => 1);
update graphile_worker._private_jobs set attempts = 1
  where task_id = (select id from graphile_worker._private_tasks where identifier = 'dead');
select graphile_worker.add_job('dead_locked', max_attempts => 1);
update graphile_worker._private_jobs set attempts = 1, locked_at = now(), locked_by = 'x'
  where task_id = (select id from graphile_worker._private_tasks where identifier = 'dead_locked');
insert into graphile_worker._private_tasks (identifier) values ('spare');
insert into graphile_worker._private_job_queues (queue_name) values ('empty_q');
insert into graphile_worker._private_job_queues (queue_name, locked_at, locked_by)
  values ('held_q', now(), 'x');
"""


def cleanup_outcome(dsn: str) -> tuple[list[Any], ...]:
    return (
        query(dsn, "select identifier from graphile_worker._private_tasks order by 1"),
        query(dsn, "select queue_name from graphile_worker._private_job_queues order by 1"),
        query(
            dsn,
            "select t.identifier, j.attempts from graphile_worker._private_jobs j "
            "join graphile_worker._private_tasks t on t.id = j.task_id order by 1",
        ),
    )


@pytest.mark.interop
def test_cleanup_matches_graphile_workers_cleanup(
    database_factory: Callable[[], str], tmp_path: Path
) -> None:
    theirs, ours = database_factory(), database_factory()
    for dsn in (theirs, ours):
        prepare_database(dsn)
        conn = psycopg2.connect(dsn)
        try:
            with conn, conn.cursor() as cur:
                cur.execute(CLEANUP_STATE)
        finally:
            conn.close()
    (tmp_path / "tasks").mkdir()  # no task files: graphile-worker keeps no identifier
    run_graphile(
        ["--cleanup", "GC_TASK_IDENTIFIERS,GC_JOB_QUEUES,DELETE_PERMAFAILED_JOBS"],
        theirs,
        cwd=tmp_path,
    )
    ok(kongtaskd("cleanup", "--connection", ours, "--tasks", "--queues", "--permafailed"))
    assert cleanup_outcome(ours) == cleanup_outcome(theirs)
    tasks, queues, _ = cleanup_outcome(ours)
    assert tasks == [("dead_locked",), ("used",)] and queues == [("held_q",), ("used_q",)]


def test_pause_and_resume_go_through_the_action_layer(clean: str) -> None:
    """`kongtaskd pause/resume` record who paused (the OS user, as the other CLI actions'
    audit lines) and log the action layer's audit line (on stderr with --debug)."""
    paused = ok(kongtaskd("pause", "--connection", clean, "--debug", "mail", "--queue", "q1"))
    assert "task mail: paused (no task 'mail' in the database yet" in paused
    assert "queue q1: paused" in paused
    rows = query(
        clean, "select kind, name, paused_by from graphile_worker._kongtaskd_pauses order by 1"
    )
    operator = rows[0][2]
    assert operator.startswith("cli:") and [r[:2] for r in rows] == [
        ("queue", "q1"),
        ("task", "mail"),
    ]
    assert {r[2] for r in rows} == {operator}
    again = kongtaskd("pause", "--connection", clean, "--debug", "mail")
    assert "task mail: already paused" in ok(again)
    assert f"audit: {operator} pause task 'mail': 0 changed" in again.stderr
    resumed = kongtaskd("resume", "--connection", clean, "--debug", "mail", "--queue", "q1")
    assert ok(resumed).splitlines() == ["task mail: resumed", "queue q1: resumed"]
    assert f"audit: {operator} resume task 'mail', queue 'q1': 2 changed" in resumed.stderr
    assert not query(clean, "select 1 from graphile_worker._kongtaskd_pauses")
    assert "task mail: was not paused" in ok(kongtaskd("resume", "--connection", clean, "mail"))


def test_cancel_logs_the_action_layers_audit_line(clean: str) -> None:
    job_id = add(clean, "remember", run_at="2099-01-01T00:00:00Z")
    result = kongtaskd("jobs", "cancel", "--connection", clean, "--debug", str(job_id))
    assert ok(result).startswith(f"cancelled job {job_id}: cancelled by ")
    assert re.search(rf"audit: \S+@\S+ cancel ids {job_id}: 1 changed", result.stderr), (
        result.stderr
    )
