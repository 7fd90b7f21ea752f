"""Upgrading databases that real graphile-worker releases made, with jobs in them.

Sources: graphile-worker 0.16.6 and 0.17.3 (``--schema-only``, ledger at 18 and 19), and the
intermediate 0.14/0.15 states 11..17 built from graphile-worker's own migration files (the
CLI of 0.18 only ever goes to 20). Each database holds waiting, queued, keyed, flagged,
stale-locked and permanently failed jobs; ``migrate()`` must bring it to 20 with every row
intact and leave exactly the catalog a fresh graphile-worker 0.18.0 leaves.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import psycopg2
import psycopg2.extras
import pytest

from kongtaskd.schema import BREAKING_GRAPHILE_MIGRATIONS, LATEST_GRAPHILE_MIGRATION, migrate
from tests.support.catalog import KONGTASKD_MIGRATIONS, Snapshot, assert_same_catalog, snapshot
from tests.support.graphile import apply_real_migrations, require_graphile, schema_only

pytestmark = pytest.mark.interop

EXPECTED_LEDGER = [
    (n, n in BREAKING_GRAPHILE_MIGRATIONS) for n in range(1, LATEST_GRAPHILE_MIGRATION + 1)
]

SPECS = [
    {"identifier": "plain", "payload": {"a": 1}},
    {"identifier": "queued", "queue_name": "q1", "payload": [1, 2]},
    {"identifier": "queued", "queue_name": "q1", "priority": 3},
    {"identifier": "keyed", "job_key": "key-1", "run_at": "2031-01-01T00:00:00Z"},
    {"identifier": "flagged", "flags": ["slow", "big"], "max_attempts": 7},
    {"identifier": "stale", "queue_name": "q2", "job_key": "stale-1"},
    {"identifier": "failed", "max_attempts": 3},
]


def tables(latest: int) -> dict[str, str]:
    """Table names at that migration: 000016 added the _private_ prefix."""
    prefix = "_private_" if latest >= 16 else ""
    return {name: f"graphile_worker.{prefix}{name}" for name in ("jobs", "job_queues", "tasks")}


def fill(dsn: str, latest: int) -> None:
    """Add jobs through the database's own add_jobs, then age them into their states."""
    t = tables(latest)
    conn = psycopg2.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                "select count(*) from graphile_worker.add_jobs(array(select"
                " json_populate_recordset(null::graphile_worker.job_spec, %s::json)))",
                (json.dumps(SPECS),),
            )
            assert cur.fetchone()[0] == len(SPECS)
            # A worker that died 5 hours ago while holding this job and its queue.
            cur.execute(
                f"update {t['jobs']} set attempts = 1, locked_by = 'worker-dead',"
                " locked_at = now() - interval '5 hours', last_error = null"
                " where key = 'stale-1' returning job_queue_id"
            )
            (queue_id,) = cur.fetchone()
            cur.execute(
                f"update {t['job_queues']} set locked_by = 'worker-dead',"
                " locked_at = now() - interval '5 hours' where id = %s",
                (queue_id,),
            )
            cur.execute(
                f"update {t['jobs']} set attempts = max_attempts, last_error = 'boom'"
                " where task_id = (select id from " + t["tasks"] + " where identifier = 'failed')"
            )
    finally:
        conn.close()


def contents(dsn: str, latest: int) -> dict[str, list[dict[str, Any]]]:
    """Every row of the three data tables, every column, in id order."""
    t = tables(latest)
    conn = psycopg2.connect(dsn)
    try:
        with conn, conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
            found = {}
            for name, table in t.items():
                cur.execute(f"select * from {table} order by id")
                found[name] = [dict(row) for row in cur.fetchall()]
            return found
    finally:
        conn.close()


def ledger_rows(dsn: str) -> list[tuple]:
    conn = psycopg2.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("select id, breaking, ts from graphile_worker.migrations order by id")
            return cur.fetchall()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def reference(database_factory: Callable[[], str]) -> Snapshot:
    require_graphile()
    dsn = database_factory()
    schema_only(dsn)
    return snapshot(dsn)


def build(dsn: str, source: str) -> int:
    """Make the old database; return its latest migration."""
    if source.startswith("cli-"):
        version = source.removeprefix("cli-")
        schema_only(dsn, version=version)
        return {"0.16": 18, "0.17": 19}[version]
    latest = int(source.removeprefix("files-"))
    apply_real_migrations(dsn, latest)
    return latest


@pytest.mark.parametrize(
    "source",
    ["cli-0.16", "cli-0.17", *(f"files-{n}" for n in (11, 12, 13, 14, 15, 16, 17))],
)
def test_upgrade_keeps_every_job_and_reaches_the_0_18_catalog(
    reference: Snapshot, database_factory: Callable[[], str], source: str
) -> None:
    dsn = database_factory()
    latest = build(dsn, source)
    fill(dsn, latest)
    before = contents(dsn, latest)
    ledger_before = ledger_rows(dsn)
    assert [r[0] for r in ledger_before] == list(range(1, latest + 1))
    assert len(before["jobs"]) == len(SPECS)

    conn = psycopg2.connect(dsn)
    try:
        report = migrate(conn)
    finally:
        conn.close()

    assert report.applied == list(range(latest + 1, LATEST_GRAPHILE_MIGRATION + 1))
    assert report.applied_kongtaskd == KONGTASKD_MIGRATIONS
    assert contents(dsn, LATEST_GRAPHILE_MIGRATION) == before
    after = ledger_rows(dsn)
    assert after[:latest] == ledger_before  # old rows untouched, timestamps included
    assert [(r[0], r[1]) for r in after] == EXPECTED_LEDGER
    assert_same_catalog(reference, snapshot(dsn), labels=("graphile-worker 0.18.0", source))


def test_upgrade_of_a_ledger_without_breaking_column(
    reference: Snapshot, database_factory: Callable[[], str]
) -> None:
    """graphile-worker 0.14.0/0.15 (before the bridge releases) kept no breaking flags."""
    dsn = database_factory()
    apply_real_migrations(dsn, 14)
    fill(dsn, 14)
    before = contents(dsn, 14)
    conn = psycopg2.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("alter table graphile_worker.migrations drop column breaking")
        report = migrate(conn)
    finally:
        conn.close()
    assert report.applied == [15, 16, 17, 18, 19, 20]
    assert contents(dsn, 20) == before
    assert [(r[0], r[1]) for r in ledger_rows(dsn)] == EXPECTED_LEDGER
    assert_same_catalog(reference, snapshot(dsn), labels=("graphile-worker 0.18.0", "0.14"))


def test_upgraded_jobs_work_with_the_new_functions(database_factory: Callable[[], str]) -> None:
    """After the upgrade the old rows take part in job-key replacement and removal."""
    dsn = database_factory()
    schema_only(dsn, version="0.16")
    fill(dsn, 18)
    conn = psycopg2.connect(dsn)
    try:
        migrate(conn)
        with conn, conn.cursor() as cur:
            cur.execute(
                "select (graphile_worker.add_job('keyed', '{\"v\":2}',"
                " job_key => 'key-1')).revision"
            )
            assert cur.fetchone() == (1,)
            # The stale job's lock is older than 4 hours: remove_job deletes it outright.
            cur.execute("select (graphile_worker.remove_job('stale-1')).key")
            assert cur.fetchone() == ("stale-1",)
            cur.execute("select count(*) from graphile_worker.jobs where key = 'stale-1'")
            assert cur.fetchone() == (0,)
    finally:
        conn.close()


def kongtaskd_functions(dsn: str) -> dict[str, str]:
    conn = psycopg2.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                "select p.proname, pg_get_functiondef(p.oid) from pg_proc p"
                " join pg_namespace n on n.oid = p.pronamespace"
                " where n.nspname = 'graphile_worker' and p.proname like 'kongtaskd%'"
            )
            return dict(cur.fetchall())
    finally:
        conn.close()


def test_kongtaskd_migration_2_upgrades_to_3_with_a_job_held(
    database_factory: Callable[[], str],
) -> None:
    """A database of the previous kongtaskd (its own migrations 1 and 2, the frozen files,
    applied with its ledger protocol) while that kongtaskd holds a job: the upgrade adds the
    one claim (kongtaskd_claim), replaces kongtaskd_get_job, keeps every row, and the held
    job's outcome and the next claims work as on a fresh install."""
    from kongtaskd.schema.files import bind, load_migrations, load_statements

    dsn = database_factory()
    schema_only(dsn)
    fill(dsn, LATEST_GRAPHILE_MIGRATION)
    conn = psycopg2.connect(dsn)
    pool = "pool-0123456789abcdef01"
    try:
        quoted = '"graphile_worker"'
        statements = load_statements()
        with conn, conn.cursor() as cur:
            cur.execute(
                bind(statements["bootstrap_kongtaskd_ledger"], quoted, with_parameters=True)
            )
            for migration in load_migrations("kongtaskd")[:2]:
                cur.execute(
                    bind(statements["insert_kongtaskd_migration"], quoted, with_parameters=True),
                    {"id": migration.number},
                )
                cur.execute(bind(migration.text, quoted, with_parameters=False))
            cur.execute(
                "select (graphile_worker.kongtaskd_get_job(%s, array['queued'])).id", (pool,)
            )
            (held,) = cur.fetchone()
        assert held is not None
        before = contents(dsn, LATEST_GRAPHILE_MIGRATION)

        report = migrate(conn)

        assert report.applied == [] and report.applied_kongtaskd == KONGTASKD_MIGRATIONS[2:]
        assert contents(dsn, LATEST_GRAPHILE_MIGRATION) == before
        with conn, conn.cursor() as cur:
            # Queue q1 is held with its first job and q2 by the stale worker: the claim
            # takes the two free jobs. `keyed` is for 2031, `failed` has no attempts left.
            cur.execute("select (graphile_worker.kongtaskd_get_job(%s)).task_id", (pool,))
            first = cur.fetchone()[0]
            cur.execute(
                "select task_id from graphile_worker.kongtaskd_claim(%s, null, null, 5)", (pool,)
            )
            cur.execute(
                "select identifier from graphile_worker._private_tasks where id = any(%s)",
                ([first, *(row[0] for row in cur.fetchall())],),
            )
            assert sorted(row[0] for row in cur.fetchall()) == ["flagged", "plain"]
            cur.execute("select (graphile_worker.kongtaskd_complete_job(%s, %s)).id", (pool, held))
            assert cur.fetchone() == (held,)
            cur.execute(
                "select kind, id from graphile_worker.kongtaskd_claim(%s, null, null, 5)", (pool,)
            )
            (claimed,) = cur.fetchall()
            assert claimed[0] == "claimed"  # q1's second job, now that its queue is free
    finally:
        conn.close()
    fresh = database_factory()
    conn = psycopg2.connect(fresh)
    try:
        migrate(conn)
    finally:
        conn.close()
    assert kongtaskd_functions(dsn) == kongtaskd_functions(fresh)
