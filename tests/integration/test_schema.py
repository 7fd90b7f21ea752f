"""kongtaskd.schema.migrate against a real PostgreSQL: ledger, objects, notifications,
too-old/too-new rules, hostile schema names, concurrency and permissions."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import psycopg2.extensions
import pytest
from psycopg2 import sql
from psycopg2.extensions import make_dsn, parse_dsn

import kongtaskd
from kongtaskd import admin
from kongtaskd.enqueue import JobSpec
from kongtaskd.errors import DatabaseError, ExitCode, SchemaTooNewError, SchemaTooOldError
from kongtaskd.schema import (
    BREAKING_GRAPHILE_MIGRATIONS,
    LATEST_GRAPHILE_MIGRATION,
    MigrationReport,
    migrate,
)
from tests.acceptance.test_cli import kongtaskd as kongtaskd_cli
from tests.fixtures.handlers import RUNS_TABLE
from tests.support import wait_for
from tests.support.catalog import KONGTASKD_MIGRATIONS, assert_same_catalog, snapshot
from tests.support.daemon import Daemon, query, write_config

SCHEMA = "graphile_worker"
ALL = list(range(1, LATEST_GRAPHILE_MIGRATION + 1))
EXPECTED_LEDGER = [(n, n in BREAKING_GRAPHILE_MIGRATIONS) for n in ALL]
GRAPHILE_FUNCTIONS = {
    "add_job",
    "add_jobs",
    "complete_jobs",
    "force_unlock_workers",
    "permanently_fail_jobs",
    "remove_job",
    "reschedule_jobs",
}
KONGTASKD_FUNCTIONS = {
    "kongtaskd_claim",
    "kongtaskd_get_job",
    "kongtaskd_complete_job",
    "kongtaskd_fail_job",
    "kongtaskd_pause_marker",
    "_kongtaskd_cancel_guard",  # migration 7: the trigger keeping cancelled jobs failed
}


@pytest.fixture()
def conn(fresh_dsn: str) -> Iterator[psycopg2.extensions.connection]:
    connection = psycopg2.connect(fresh_dsn)
    yield connection
    connection.close()


def ledger(dsn: str, schema: str = SCHEMA) -> list[tuple[int, bool]]:
    return query(
        dsn,
        sql.SQL("select id, breaking from {}.migrations order by id").format(
            sql.Identifier(schema)
        ),
    )


def kongtaskd_ledger(dsn: str, schema: str = SCHEMA) -> list[int]:
    rows = query(
        dsn,
        sql.SQL("select id from {}._kongtaskd_migrations order by id").format(
            sql.Identifier(schema)
        ),
    )
    return [row[0] for row in rows]


def objects(dsn: str, schema: str = SCHEMA) -> dict[str, set[str]]:
    """Names of the schema's tables, views, types and functions."""
    params = {"schema": schema}
    relations = query(
        dsn,
        "select relkind, relname from pg_class c join pg_namespace n on n.oid = c.relnamespace"
        " where n.nspname = %(schema)s and relkind in ('r', 'v', 'c')",
        params,
    )
    functions = query(
        dsn,
        "select proname from pg_proc p join pg_namespace n on n.oid = p.pronamespace"
        " where n.nspname = %(schema)s",
        params,
    )
    return {
        "tables": {name for kind, name in relations if kind == "r"},
        "views": {name for kind, name in relations if kind == "v"},
        "types": {name for kind, name in relations if kind == "c"},
        "functions": {name for (name,) in functions},
    }


def test_fresh_install_builds_ledgers_and_objects(conn, fresh_dsn: str) -> None:
    report = migrate(conn)

    assert report == MigrationReport(
        applied=ALL, applied_kongtaskd=KONGTASKD_MIGRATIONS, newer_non_breaking=[]
    )
    assert ledger(fresh_dsn) == EXPECTED_LEDGER
    assert kongtaskd_ledger(fresh_dsn) == KONGTASKD_MIGRATIONS
    # psycopg2's wait callback is one per process: overlapping migrations in threads must
    # leave none installed (each restoring "its" saved one left a finished one's in place,
    # and every later connection of the process then ran asynchronously).
    assert psycopg2.extensions.get_wait_callback() is None
    found = objects(fresh_dsn)
    assert found["tables"] == {
        "_private_jobs",
        "_private_job_queues",
        "_private_tasks",
        "_private_known_crontabs",
        "migrations",
        "_kongtaskd_migrations",
        "_kongtaskd_heartbeats",
        "_kongtaskd_task_caps",
        "_kongtaskd_pauses",
        "_kongtaskd_cancels",
        "_kongtaskd_stats",  # migration 5
        "_kongtaskd_completed_jobs",
    }
    assert found["views"] == {"jobs"}
    assert found["types"] == {"job_spec"}
    assert found["functions"] == GRAPHILE_FUNCTIONS | KONGTASKD_FUNCTIONS
    # kongtaskd's claim index (migration 2): the loose scan needs exactly this key order.
    assert query(
        fresh_dsn,
        "select indexdef from pg_indexes where schemaname = 'graphile_worker'"
        " and indexname like '%%kongtaskd%%jobs%%' and tablename = '_private_jobs'"
        " order by indexname",
    ) == [
        (
            "CREATE INDEX _kongtaskd_jobs_locked ON graphile_worker._private_jobs"
            " USING btree (task_id) WHERE (locked_at IS NOT NULL)",
        ),
        (
            "CREATE INDEX _kongtaskd_jobs_ready ON graphile_worker._private_jobs"
            " USING btree (priority, task_id, run_at) WHERE (is_available = true)",
        ),
    ]
    rls = query(
        fresh_dsn,
        "select relname, relrowsecurity from pg_class"
        " where relnamespace = 'graphile_worker'::regnamespace and relkind = 'r'",
    )
    # graphile-worker's private tables and kongtaskd's heartbeats: RLS on, no policies.
    assert {name for name, enabled in rls if enabled} == {
        "_private_jobs",
        "_private_job_queues",
        "_private_tasks",
        "_private_known_crontabs",
        "_kongtaskd_heartbeats",
        "_kongtaskd_task_caps",
        "_kongtaskd_pauses",
        "_kongtaskd_cancels",
        "_kongtaskd_stats",
        "_kongtaskd_completed_jobs",
    }


def test_heartbeat_table_has_the_agreed_columns(conn, fresh_dsn: str) -> None:
    migrate(conn)
    columns = query(
        fresh_dsn,
        "select attname, format_type(atttypid, atttypmod), attnotnull,"
        " pg_get_expr(adbin, adrelid)"
        " from pg_attribute left join pg_attrdef on adrelid = attrelid and adnum = attnum"
        " where attrelid = 'graphile_worker._kongtaskd_heartbeats'::regclass and attnum > 0"
        " order by attnum",
    )
    assert columns == [
        ("pool_id", "text", True, None),
        ("hostname", "text", True, None),
        ("pid", "integer", True, None),
        ("version", "text", True, None),
        ("concurrency", "integer", True, None),
        ("busy", "integer", True, "0"),
        ("jobs_done", "bigint", True, "0"),
        ("started_at", "timestamp with time zone", True, "now()"),
        ("last_beat_at", "timestamp with time zone", True, "now()"),
        ("last_reload_at", "timestamp with time zone", False, None),
        ("last_reload_error", "text", False, None),
        ("degraded", "text", False, None),
        ("details", "jsonb", False, None),  # migration 5: what the daemon publishes
    ]


def test_second_run_applies_nothing_and_logs_nothing(
    conn, fresh_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    migrate(conn)
    before = query(fresh_dsn, "select id, ts from graphile_worker.migrations order by id")

    with caplog.at_level(logging.INFO, logger="kongtaskd.schema"):
        report = migrate(conn)

    assert report == MigrationReport(applied=[], applied_kongtaskd=[], newer_non_breaking=[])
    assert query(fresh_dsn, "select id, ts from graphile_worker.migrations order by id") == before
    assert kongtaskd_ledger(fresh_dsn) == KONGTASKD_MIGRATIONS
    assert [r for r in caplog.records if r.levelno >= logging.INFO] == []


def test_logs_one_line_per_applied_migration(conn, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="kongtaskd.schema"):
        migrate(conn)
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert lines == [f"applied graphile-worker migration {n:06d}" for n in ALL] + [
        f"applied kongtaskd migration {n:06d}" for n in KONGTASKD_MIGRATIONS
    ]


def test_uses_the_given_logger(conn) -> None:
    seen: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    logger = logging.getLogger(f"test.{uuid.uuid4().hex}")
    logger.setLevel(logging.INFO)
    logger.addHandler(Collect())
    migrate(conn, logger=logger)
    assert len(seen) == LATEST_GRAPHILE_MIGRATION + len(KONGTASKD_MIGRATIONS)


def test_notifies_worker_migrate_once_per_migration(conn, fresh_dsn: str) -> None:
    listener = psycopg2.connect(fresh_dsn)
    listener.autocommit = True
    try:
        with listener.cursor() as cur:
            cur.execute('listen "worker:migrate"')

        migrate(conn)

        def received() -> bool:
            listener.poll()
            return len(listener.notifies) >= LATEST_GRAPHILE_MIGRATION

        wait_for(received, timeout=10, what="20 worker:migrate notifications")
        # A sentinel sent afterwards proves nothing else was queued behind the 20.
        with listener.cursor() as cur:
            cur.execute("select pg_notify('worker:migrate', 'sentinel')")
        wait_for(lambda: (listener.poll(), listener.notifies[-1].payload == "sentinel")[1])
        payloads = [n.payload for n in listener.notifies if n.channel == "worker:migrate"]
    finally:
        listener.close()
    expected = [
        f'{{"migrationNumber":{n},"breaking":{"true" if b else "false"}}}'
        for n, b in EXPECTED_LEDGER
    ]
    assert payloads == [*expected, "sentinel"]
    assert json.loads(payloads[10]) == {"migrationNumber": 11, "breaking": True}


def make_ledger(dsn: str, rows: list[tuple[int, bool]], schema: str = SCHEMA) -> None:
    """A bare graphile-worker ledger holding ``rows`` (as if some release had run)."""
    ident = sql.Identifier(schema)
    query(dsn, sql.SQL("create schema {}").format(ident))
    query(
        dsn,
        sql.SQL(
            "create table {}.migrations (id int primary key,"
            " ts timestamptz default now() not null, breaking boolean not null default false)"
        ).format(ident),
    )
    for number, breaking in rows:
        query(
            dsn,
            sql.SQL("insert into {}.migrations (id, breaking) values (%s, %s)").format(ident),
            (number, breaking),
        )


@pytest.mark.parametrize("latest", [1, 10])
def test_ledger_below_11_is_too_old(conn, fresh_dsn: str, latest: int) -> None:
    make_ledger(fresh_dsn, EXPECTED_LEDGER[:latest])

    with pytest.raises(SchemaTooOldError) as raised:
        migrate(conn)

    message = raised.value.message
    assert f"migration {latest}" in message
    assert "--schema-only" in message and "0.14" in message
    assert "\n" not in message
    assert raised.value.exit_code == ExitCode.USAGE
    # Nothing was touched.
    assert ledger(fresh_dsn) == EXPECTED_LEDGER[:latest]
    assert objects(fresh_dsn)["tables"] == {"migrations"}


def test_newer_non_breaking_migration_only_warns(
    conn, fresh_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    migrate(conn)
    query(fresh_dsn, "insert into graphile_worker.migrations (id, breaking) values (21, false)")

    with caplog.at_level(logging.WARNING, logger="kongtaskd.schema"):
        report = migrate(conn)

    assert report.newer_non_breaking == [21]
    assert report.applied == [] and report.applied_kongtaskd == []
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "21" in warnings[0] and "none is breaking" in warnings[0]


def test_newer_breaking_migration_is_refused_with_exit_code_57(conn, fresh_dsn: str) -> None:
    migrate(conn)
    query(
        fresh_dsn,
        "insert into graphile_worker.migrations (id, breaking) values (21, false), (22, true)",
    )

    with pytest.raises(SchemaTooNewError) as raised:
        migrate(conn)

    assert raised.value.exit_code == ExitCode.SCHEMA_TOO_NEW == 57
    message = raised.value.message
    assert "22" in message and "21" not in message.split("(")[0]
    assert "upgrade kongtaskd" in message and "\n" not in message


HOSTILE_NAMES = [
    'Wëird "schema"; drop table x; --',
    "dollar $$ quote $kt0$ end; drop table x; $$",
    "percent %s %(id)s %%",
    "{{schema}} :GRAPHILE_WORKER_SCHEMA",
    "Mixed Case",
    "it's $1, 100% ünïcødé",
]


@pytest.mark.parametrize("schema", HOSTILE_NAMES)
def test_any_schema_name_is_created_and_nothing_else_runs(
    conn, fresh_dsn: str, schema: str
) -> None:
    query(fresh_dsn, "create table public.x (id int)")
    schemas_before = {row[0] for row in query(fresh_dsn, "select nspname from pg_namespace")}

    report = migrate(conn, schema)

    assert report.applied == ALL
    schemas_after = {row[0] for row in query(fresh_dsn, "select nspname from pg_namespace")}
    assert schemas_after - schemas_before == {schema}
    assert query(fresh_dsn, "select count(*) from public.x") == [(0,)]
    public = query(
        fresh_dsn, "select relname from pg_class where relnamespace = 'public'::regnamespace"
    )
    assert public == [("x",)]
    assert ledger(fresh_dsn, schema) == EXPECTED_LEDGER
    assert objects(fresh_dsn, schema)["functions"] == GRAPHILE_FUNCTIONS | KONGTASKD_FUNCTIONS

    # The function bodies name the schema too: exercise each of them under this name.
    ident = sql.Identifier(schema)
    rows = query(
        fresh_dsn,
        sql.SQL(
            "select id, key, job_queue_id from {s}.add_job('t', queue_name => 'q', job_key => 'k')"
        ).format(s=ident),
    )
    job_id = rows[0][0]
    assert query(
        fresh_dsn,
        sql.SQL(
            "select id from {s}.add_job('t', job_key => 'k', job_key_mode => 'unsafe_dedupe')"
        ).format(s=ident),
    ) == [(job_id,)]
    claimed = query(
        fresh_dsn,
        sql.SQL("select id, locked_by from {s}.kongtaskd_get_job('pool-0123456789')").format(
            s=ident
        ),
    )
    assert claimed == [(job_id, "pool-0123456789")]
    # Values go in as literals: with parameters psycopg2 would read a "%" in the name.
    job = sql.Literal(job_id)
    query(
        fresh_dsn,
        sql.SQL("select {s}.kongtaskd_fail_job('pool-0123456789', {j}, 'boom')").format(
            s=ident, j=job
        ),
    )
    query(fresh_dsn, sql.SQL("select {s}.force_unlock_workers(array['p'])").format(s=ident))
    query(
        fresh_dsn,
        sql.SQL("select {s}.reschedule_jobs(array[{j}]::bigint[], run_at => now())").format(
            s=ident, j=job
        ),
    )
    query(
        fresh_dsn,
        sql.SQL("select {s}.permanently_fail_jobs(array[{j}]::bigint[])").format(s=ident, j=job),
    )
    assert query(fresh_dsn, sql.SQL("select count(*) from {s}.jobs").format(s=ident)) == [(1,)]
    query(fresh_dsn, sql.SQL("select {s}.remove_job('k')").format(s=ident))
    query(
        fresh_dsn,
        sql.SQL("select {s}.complete_jobs(array[{j}]::bigint[])").format(s=ident, j=job),
    )
    assert query(fresh_dsn, sql.SQL("select count(*) from {s}.jobs").format(s=ident)) == [(0,)]


@pytest.mark.parametrize("schema", HOSTILE_NAMES)
def test_enqueue_api_and_every_admin_verb_work_under_any_schema_name(
    conn, fresh_dsn: str, schema: str
) -> None:
    """One binder for every statement: the runtime, enqueue and admin SQL run under the name
    (psycopg2 reads a "%" of the name as a placeholder wherever values are parameters)."""
    migrate(conn, schema)
    conn.autocommit = False

    first = kongtaskd.add_job(conn, "mail", {"to": "x"}, queue_name="q", job_key="k", schema=schema)
    assert (first.task_identifier, first.queue_name, first.key) == ("mail", "q", "k")
    batch = kongtaskd.add_jobs(
        conn,
        [JobSpec("mail", {"n": 1}), JobSpec("report", job_key="r", queue_name="q2")],
        schema=schema,
    )
    assert sorted(job.task_identifier for job in batch) == ["mail", "report"]
    removed = kongtaskd.remove_job(conn, "r", schema=schema)
    assert removed is not None and removed.key == "r"
    conn.commit()
    # The same through a DSN (own connection, own commit).
    by_dsn = kongtaskd.add_job(fresh_dsn, "mail", schema=schema)

    listing = admin.list_jobs(conn, schema, with_payload=True)
    assert [job.id for job in listing.jobs] == [first.id, batch[0].id, by_dsn.id]
    assert listing.jobs[0].payload == {"to": "x"}
    streamed = io.StringIO()
    assert admin.write_jobs_json(conn, schema, streamed, limit=2) == admin.Written(2, 3)
    assert [job["id"] for job in json.loads(streamed.getvalue())] == [first.id, batch[0].id]
    assert [j.id for j in admin.list_jobs(conn, schema, queue="q", only="scheduled").jobs] == []
    when = dt.datetime(2031, 1, 1, tzinfo=dt.timezone.utc)
    assert admin.reschedule_jobs(conn, schema, [first.id], run_at=when).changed == [first.id]
    assert admin.retry_jobs(conn, schema, [first.id]).changed == [first.id]
    assert admin.fail_jobs(conn, schema, [batch[0].id], message="no").changed == [batch[0].id]
    assert admin.remove_jobs(conn, schema, [by_dsn.id, 999]).missing == [999]
    report = admin.status(conn, schema)
    assert report.heartbeats and report.totals.total == 2 and report.totals.failed == 1
    assert admin.format_status(report).startswith(f"schema {schema} at ")
    cleaned = admin.cleanup(conn, schema, tasks=True, queues=True, permafailed=True)
    assert cleaned.permafailed_jobs == 1
    assert cleaned.task_identifiers == ["report"] and cleaned.queues == ["q2"]
    assert [job.id for job in admin.list_jobs(conn, schema).jobs] == [first.id]


@pytest.mark.parametrize("schema", ["it's $1, 100% ünïcødé", "percent %s %(id)s %%"])
def test_command_line_verbs_under_a_hostile_schema_name(fresh_dsn: str, schema: str) -> None:
    """The verbs as users run them, --schema NAME: migrate, add, jobs ..., status, cleanup."""

    def run(*args: str, stdin: str | None = None) -> str:
        result = kongtaskd_cli(*args, "--connection", fresh_dsn, "--schema", schema, stdin=stdin)
        assert result.returncode == 0, (args, result.stdout, result.stderr)
        return result.stdout

    run("migrate", "--silent")
    first = int(run("add", "mail", "--payload", "-", "--queue", "q", stdin='{"a": 1}'))
    second = int(run("add", "report"))
    assert [job["id"] for job in json.loads(run("jobs", "list", "--json"))] == [first, second]
    assert str(first) in run("jobs", "list", "--queue", "q")
    assert run("jobs", "reschedule", str(first), "--priority", "-1").startswith("rescheduled")
    assert run("jobs", "retry", str(first)).startswith("retried")
    assert run("jobs", "fail", str(second)).startswith("failed")
    assert json.loads(run("status", "--json"))["totals"]["failed"] == 1
    assert run("status").startswith(f"schema {schema} at ")
    assert "1 permanently failed job" in run("cleanup", "--permafailed")
    assert run("jobs", "remove", str(first)).startswith("removed")
    assert json.loads(run("jobs", "list", "--json")) == []


@pytest.mark.parametrize("schema", HOSTILE_NAMES)
def test_daemon_runs_jobs_and_cron_under_any_schema_name(
    fresh_dsn: str, tmp_path: Path, schema: str
) -> None:
    """The daemon's prepared statements, its cron statements and a handler's ctx.add_job."""
    conn = psycopg2.connect(fresh_dsn)
    try:
        migrate(conn, schema)
    finally:
        conn.close()
    query(fresh_dsn, RUNS_TABLE)
    config = write_config(
        tmp_path, fresh_dsn, schema=schema, concurrency=1, crontab="0 4 * * * noop"
    )
    with Daemon(config) as daemon:
        daemon.wait_ready()
        job = kongtaskd.add_job(fresh_dsn, "enqueue_follow_up", {"n": 1}, schema=schema)
        wait_for(
            lambda: len(query(fresh_dsn, "select 1 from public.kt_runs")) == 2,
            timeout=30,
            what="the job and the follow-up it added",
        )
        assert daemon.stop() == 0, daemon.log()
        log = daemon.log()
    runs = query(fresh_dsn, "select task, payload from public.kt_runs order by job_id")
    assert runs == [("enqueue_follow_up", {"n": 1}), ("remember", {"follow_up_of": job.id})]
    known = query(
        fresh_dsn,
        sql.SQL("select identifier from {}._private_known_crontabs").format(sql.Identifier(schema)),
    )
    assert known == [("noop",)]
    assert "Traceback" not in log and "rror" not in log, log


def test_concurrent_migrators_all_succeed_and_apply_each_migration_once(fresh_dsn: str) -> None:
    count = 4
    barrier = threading.Barrier(count)
    reports: list[MigrationReport] = []
    errors: list[BaseException] = []

    def run() -> None:
        connection = psycopg2.connect(fresh_dsn)
        try:
            barrier.wait(timeout=10)
            reports.append(migrate(connection))
        except BaseException as error:  # collected and re-raised in the test thread
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    assert len(reports) == count
    applied = sorted(n for report in reports for n in report.applied)
    assert applied == ALL
    assert sorted(n for report in reports for n in report.applied_kongtaskd) == KONGTASKD_MIGRATIONS
    assert ledger(fresh_dsn) == EXPECTED_LEDGER
    assert kongtaskd_ledger(fresh_dsn) == KONGTASKD_MIGRATIONS


def test_concurrent_result_equals_single_migrator_catalog(database_factory) -> None:
    single, racing = database_factory(), database_factory()
    connection = psycopg2.connect(single)
    migrate(connection)
    connection.close()
    barrier = threading.Barrier(3)
    errors: list[BaseException] = []

    def run() -> None:
        c = psycopg2.connect(racing)
        try:
            barrier.wait(timeout=10)
            migrate(c)
        except BaseException as error:
            errors.append(error)
        finally:
            c.close()

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    assert_same_catalog(snapshot(single), snapshot(racing), labels=("single", "racing"))


def test_staged_upgrade_equals_fresh_install(database_factory) -> None:
    fresh, staged = database_factory(), database_factory()
    c = psycopg2.connect(fresh)
    migrate(c)
    c.close()
    c = psycopg2.connect(staged)
    try:
        assert migrate(c, target=11).applied == list(range(1, 12))
        assert migrate(c, target=15).applied == [12, 13, 14, 15]
        assert migrate(c, target=15).applied == []
        report = migrate(c)
        assert report.applied == [16, 17, 18, 19, 20]
        assert report.applied_kongtaskd == KONGTASKD_MIGRATIONS
    finally:
        c.close()
    assert ledger(staged) == EXPECTED_LEDGER
    assert_same_catalog(snapshot(fresh), snapshot(staged), labels=("fresh", "staged"))


def test_ledger_without_breaking_column_is_completed(conn, fresh_dsn: str) -> None:
    # graphile-worker before 0.16 (and its bridge releases) kept no "breaking" column.
    migrate(conn, target=14)
    query(fresh_dsn, "alter table graphile_worker.migrations drop column breaking")

    report = migrate(conn)

    assert report.applied == [15, 16, 17, 18, 19, 20]
    assert ledger(fresh_dsn) == EXPECTED_LEDGER


def test_connection_settings_are_restored(fresh_dsn: str) -> None:
    c = psycopg2.connect(fresh_dsn)
    try:
        c.autocommit = True
        c.isolation_level = psycopg2.extensions.ISOLATION_LEVEL_SERIALIZABLE
        migrate(c)
        assert c.autocommit is True
        assert c.isolation_level == psycopg2.extensions.ISOLATION_LEVEL_SERIALIZABLE
        c.autocommit = False
        migrate(c)
        assert c.autocommit is False
        assert c.info.transaction_status == psycopg2.extensions.TRANSACTION_STATUS_IDLE
    finally:
        c.close()


def test_connection_inside_a_transaction_is_refused(conn) -> None:
    with conn.cursor() as cur:
        cur.execute("select 1")
    with pytest.raises(DatabaseError, match="outside any transaction"):
        migrate(conn)
    conn.rollback()


@pytest.fixture()
def limited_role(admin_dsn: str) -> Iterator[str]:
    """A login role with no CREATE right on any database."""
    role = f"kt_limited_{uuid.uuid4().hex[:8]}"
    query(admin_dsn, sql.SQL("create role {} login").format(sql.Identifier(role)))
    yield role
    query(admin_dsn, sql.SQL("drop role {}").format(sql.Identifier(role)))


def test_missing_create_right_is_a_one_line_database_error(
    fresh_dsn: str, limited_role: str
) -> None:
    params = parse_dsn(fresh_dsn)
    params["user"] = limited_role
    params.pop("password", None)
    c = psycopg2.connect(make_dsn(**params))
    try:
        with pytest.raises(DatabaseError) as raised:
            migrate(c, "Some Schema")
    finally:
        c.close()
    message = raised.value.message
    assert '"Some Schema"' in message
    assert "CREATE privilege" in message
    assert f'database "{params["dbname"]}"' in message or params["dbname"] in message
    assert limited_role in message
    assert "\n" not in message
    assert raised.value.exit_code == ExitCode.FAILURE


def test_role_without_rights_on_existing_schema_gets_a_named_error(
    fresh_dsn: str, limited_role: str
) -> None:
    owner = psycopg2.connect(fresh_dsn)
    migrate(owner)
    owner.close()
    query(fresh_dsn, "delete from graphile_worker.migrations where id = 20")
    params = parse_dsn(fresh_dsn)
    params["user"] = limited_role
    c = psycopg2.connect(make_dsn(**params))
    try:
        with pytest.raises(DatabaseError) as raised:
            migrate(c)
    finally:
        c.close()
    message = raised.value.message
    assert "permission denied" in message and "graphile_worker" in message
    assert limited_role in message and "\n" not in message


def test_overlapping_migrations_in_threads_leave_no_wait_callback(fresh_dsn: str) -> None:
    """Two migrations' waiters in two threads, the first to start ending first: psycopg2's
    one wait callback must be gone after both (each saving and restoring "its" previous one
    left the first's installed for good, and every later connection ran asynchronously)."""
    import logging

    from kongtaskd.schema.waiting import Waiter

    conns = [psycopg2.connect(fresh_dsn), psycopg2.connect(fresh_dsn)]
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()

    def waiter(conn: psycopg2.extensions.connection) -> Waiter:
        return Waiter(
            conn,
            {},
            where="test",
            log=logging.getLogger("test"),
            lock_timeout=None,
            should_stop=None,
            observer=None,
        )

    def first() -> None:
        with waiter(conns[0]):
            first_in.set()
            second_in.wait(10)
        first_out.set()

    def second() -> None:
        first_in.wait(10)
        with waiter(conns[1]):
            second_in.set()
            first_out.wait(10)

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert psycopg2.extensions.get_wait_callback() is None
    finally:
        psycopg2.extensions.set_wait_callback(None)
        for conn in conns:
            conn.close()
