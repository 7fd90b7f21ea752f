"""kongtaskd's schema against the real graphile-worker 0.18.0 (npm).

* the catalog kongtaskd builds equals the one graphile-worker builds, object by object;
* either program, run after the other, has nothing left to migrate;
* the same add_job/add_jobs/... calls give the same rows and notifications on both;
* graphile-worker runs jobs that kongtaskd enqueued;
* kongtaskd and graphile-worker migrating one database at the same moment both succeed,
  whoever wins each ledger row, and so does graphile-worker finishing what kongtaskd began.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.extras
import pytest
from psycopg2 import sql
from psycopg2.extensions import make_dsn, parse_dsn

import kongtaskd
from kongtaskd.schema import BREAKING_GRAPHILE_MIGRATIONS, LATEST_GRAPHILE_MIGRATION, migrate
from tests.support import wait_for
from tests.support.catalog import KONGTASKD_MIGRATIONS, Snapshot, assert_same_catalog, snapshot
from tests.support.daemon import query
from tests.support.graphile import (
    apply_real_migrations,
    require_graphile,
    run_graphile,
    schema_only,
    start_graphile,
)

pytestmark = pytest.mark.interop

HOSTILE = 'Wëird "schema"; drop table x; --'
EXPECTED_LEDGER = [
    (n, n in BREAKING_GRAPHILE_MIGRATIONS) for n in range(1, LATEST_GRAPHILE_MIGRATION + 1)
]
LABELS = ("graphile-worker", "kongtaskd")


def kongtaskd_migrate(dsn: str, schema: str = "graphile_worker", **kwargs: Any) -> Any:
    conn = psycopg2.connect(dsn)
    try:
        return migrate(conn, schema, **kwargs)
    finally:
        conn.close()


def ledger(dsn: str, schema: str = "graphile_worker") -> list[tuple]:
    statement = sql.SQL("select id, breaking from {}.migrations order by id")
    return query(dsn, statement.format(sql.Identifier(schema)))


def ledger_with_ts(dsn: str) -> list[tuple]:
    return query(dsn, "select id, breaking, ts from graphile_worker.migrations order by id")


@pytest.fixture(scope="module")
def reference(database_factory: Callable[[], str]) -> Snapshot:
    """The catalog graphile-worker 0.18.0 itself leaves in a fresh database."""
    require_graphile()
    dsn = database_factory()
    schema_only(dsn)
    assert ledger(dsn) == EXPECTED_LEDGER
    return snapshot(dsn)


# -- the catalog ------------------------------------------------------------------------------


def test_fresh_catalog_equals_graphile_workers(reference: Snapshot, database_factory) -> None:
    dsn = database_factory()
    kongtaskd_migrate(dsn)
    assert ledger(dsn) == EXPECTED_LEDGER
    compared = assert_same_catalog(reference, snapshot(dsn), labels=LABELS)
    assert compared > 100  # tables, columns, constraints, indexes, functions, ...


def test_catalog_equals_graphile_workers_under_a_hostile_schema_name(database_factory) -> None:
    # (graphile-worker itself cannot handle "$$" in a name; kongtaskd's own test covers that.)
    theirs, ours = database_factory(), database_factory()
    query(theirs, "create table public.x (id int)")
    query(ours, "create table public.x (id int)")
    schema_only(theirs, schema=HOSTILE)
    kongtaskd_migrate(ours, HOSTILE)
    assert ledger(ours, HOSTILE) == ledger(theirs, HOSTILE) == EXPECTED_LEDGER
    assert_same_catalog(snapshot(theirs, HOSTILE), snapshot(ours, HOSTILE), labels=LABELS)
    assert query(ours, "select count(*) from public.x") == [(0,)]


def test_graphile_worker_finds_nothing_to_do_on_a_kongtaskd_database(database_factory) -> None:
    dsn = database_factory()
    kongtaskd_migrate(dsn)
    before, before_catalog = ledger_with_ts(dsn), snapshot(dsn)

    done = run_graphile(["--schema-only"], dsn)

    assert "Schema updated" in done.stdout
    assert "rror" not in done.stdout + done.stderr.replace("EBADENGINE", "")
    assert ledger_with_ts(dsn) == before
    assert query(dsn, "select id from graphile_worker._kongtaskd_migrations") == [
        (n,) for n in KONGTASKD_MIGRATIONS
    ]
    assert_same_catalog(before_catalog, snapshot(dsn), labels=("before", "after"))


def test_kongtaskd_adds_only_its_own_objects_to_a_graphile_worker_database(
    reference: Snapshot, database_factory
) -> None:
    dsn = database_factory()
    schema_only(dsn)
    before = ledger_with_ts(dsn)

    report = kongtaskd_migrate(dsn)

    assert report.applied == [] and report.applied_kongtaskd == KONGTASKD_MIGRATIONS
    assert ledger_with_ts(dsn) == before
    assert_same_catalog(reference, snapshot(dsn), labels=LABELS)
    own = query(
        dsn,
        "select relname from pg_class where relnamespace = 'graphile_worker'::regnamespace"
        " and relkind in ('r', 'i') and relname like '\\_kongtaskd\\_%' order by 1",
    )
    assert own == [
        ("_kongtaskd_cancels",),
        ("_kongtaskd_cancels_pkey",),
        ("_kongtaskd_completed_jobs",),  # migration 5
        ("_kongtaskd_completed_jobs_finished",),
        ("_kongtaskd_completed_jobs_id",),
        ("_kongtaskd_heartbeats",),
        ("_kongtaskd_heartbeats_pkey",),
        ("_kongtaskd_jobs_locked",),
        ("_kongtaskd_jobs_ready",),
        ("_kongtaskd_migrations",),
        ("_kongtaskd_migrations_pkey",),
        ("_kongtaskd_pauses",),
        ("_kongtaskd_pauses_pkey",),
        ("_kongtaskd_stats",),
        ("_kongtaskd_stats_pkey",),
        ("_kongtaskd_task_caps",),
        ("_kongtaskd_task_caps_pkey",),
    ]


# -- the same calls, the same rows ------------------------------------------------------------

T1 = "2031-01-01T00:00:00+00:00"
T2 = "2032-02-02T00:00:00+00:00"


def ids_where(condition: str) -> str:
    """SQL for the array of ids of the jobs whose key matches ``condition``."""
    return f"array(select id from graphile_worker._private_jobs where key {condition})"


C_KEYS = "'c1', 'c2', 'c3'"
K1 = "= 'k1'"
P_KEYS = "like 'p%%'"  # doubled: the statement is run with (empty) parameters

#: A script of SQL API calls touching every mode and branch. "lock:KEY[:HOURS]" and
#: "exhaust:KEY" put the job holding KEY into that state, as a worker would have.
SCRIPT: list[tuple[str, tuple]] = [
    ("select * from graphile_worker.add_job('plain')", ()),
    (
        "select * from graphile_worker.add_job('full', '{\"b\":1,\"a\":2}', 'q1', %s, 3,"
        " null, -4, array['f1','f2'])",
        (T1,),
    ),
    (
        "select * from graphile_worker.add_job('k', '{\"v\":1}', job_key => 'k1', run_at => %s)",
        (T1,),
    ),
    (
        "select * from graphile_worker.add_job('k2', '{\"v\":2}', 'q2', %s, 5, 'k1', 7,"
        " array['x'])",
        (T2,),
    ),
    (
        "select * from graphile_worker.add_job('k', job_key => 'k1', run_at => %s,"
        " job_key_mode => 'preserve_run_at')",
        (T1,),
    ),
    ("update:k1:attempts=1", ()),
    (
        "select * from graphile_worker.add_job('k', job_key => 'k1', run_at => %s,"
        " job_key_mode => 'preserve_run_at')",
        (T1,),
    ),
    (
        "select * from graphile_worker.add_job('d', job_key => 'd1',"
        " job_key_mode => 'unsafe_dedupe')",
        (),
    ),
    (
        "select * from graphile_worker.add_job('d', '{\"new\":1}', job_key => 'd1',"
        " priority => 3, job_key_mode => 'unsafe_dedupe')",
        (),
    ),
    ("lock:d1", ()),
    (
        "select * from graphile_worker.add_job('d', job_key => 'd1',"
        " job_key_mode => 'unsafe_dedupe')",
        (),
    ),
    ("select * from graphile_worker.add_job('r', '{\"v\":1}', job_key => 'r1')", ()),
    ("lock:r1", ()),
    ("select * from graphile_worker.add_job('r', '{\"v\":2}', job_key => 'r1')", ()),
    ("select * from graphile_worker.add_job('f', job_key => 'f1', max_attempts => 2)", ()),
    ("exhaust:f1", ()),
    ("select * from graphile_worker.add_job('f', '{\"again\":true}', job_key => 'f1')", ()),
    ("select * from graphile_worker.add_job('b', '[1,2]', job_key => 'b1')", ()),
    ("select * from graphile_worker.add_job('b', '[3]', job_key => 'b1')", ()),
    ("select * from graphile_worker.add_job('b', '{\"o\":1}', job_key => 'b1')", ()),
    ("select * from graphile_worker.add_job('b', '[4]', 'bq', job_key => 'b2')", ()),
    ("select * from graphile_worker.add_job('b', '[5]', 'bq', job_key => 'b2')", ()),
    (
        "select * from graphile_worker.add_jobs(array(select json_populate_recordset("
        "null::graphile_worker.job_spec, %s::json)))",
        (
            json.dumps(
                [
                    {"identifier": "bulk", "payload": {"n": 1}},
                    {"identifier": "bulk", "queue_name": "q1", "priority": 2, "flags": ["z"]},
                    {"identifier": "bulk2", "job_key": "k1", "run_at": T2},
                    {"identifier": "bulk2", "job_key": "bk", "max_attempts": 9},
                ]
            ),
        ),
    ),
    (
        "select * from graphile_worker.add_jobs(array(select json_populate_recordset("
        "null::graphile_worker.job_spec, %s::json)), true)",
        (json.dumps([{"identifier": "bulk2", "job_key": "bk", "run_at": T1}]),),
    ),
    ("select * from graphile_worker.remove_job('bk')", ()),
    ("lock:r1", ()),
    ("select * from graphile_worker.remove_job('r1')", ()),
    ("select * from graphile_worker.add_job('s', job_key => 's1')", ()),
    ("lock:s1:5", ()),
    ("select * from graphile_worker.remove_job('s1')", ()),
    ("select * from graphile_worker.remove_job('missing')", ()),
    ("select * from graphile_worker.add_job('c', job_key => 'c1')", ()),
    ("select * from graphile_worker.add_job('c', job_key => 'c2')", ()),
    ("select * from graphile_worker.add_job('c', job_key => 'c3')", ()),
    ("lock:c2", ()),
    ("lock:c3:5", ()),
    (
        f"select * from graphile_worker.complete_jobs({ids_where('in (' + C_KEYS + ')')})",
        (),
    ),
    ("select * from graphile_worker.add_job('p', job_key => 'p1')", ()),
    ("select * from graphile_worker.add_job('p', job_key => 'p2')", ()),
    ("lock:p2", ()),
    (
        f"select * from graphile_worker.permanently_fail_jobs({ids_where(P_KEYS)}, 'nope')",
        (),
    ),
    (
        f"select * from graphile_worker.permanently_fail_jobs({ids_where(K1)})",
        (),
    ),
    (
        "select * from graphile_worker.reschedule_jobs(array(select id from"
        " graphile_worker._private_jobs where key in ('k1', 'p1', 'p2')), %s, 1, 0, 30)",
        (T2,),
    ),
    (
        f"select * from graphile_worker.reschedule_jobs({ids_where(K1)}, priority => 4)",
        (),
    ),
    ("select graphile_worker.force_unlock_workers(array['pool-script'])", ()),
]


def run_script(dsn: str) -> tuple[list[Any], list[Any], list[Any]]:
    """Run SCRIPT; return (what each call returned, jobs:insert counts per call, end state)."""
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    listener = psycopg2.connect(dsn)
    listener.autocommit = True
    results: list[Any] = []
    notified: list[Any] = []
    try:
        with listener.cursor() as cur:
            cur.execute('listen "jobs:insert"')
        with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
            for statement, params in SCRIPT:
                if ":" in statement.split(" ")[0]:
                    apply_state(cur, statement)
                    continue
                cur.execute(statement, params)
                results.append([normalise(cur, row) for row in cur.fetchall()])
                notified.append(drain(listener))
            cur.execute("select * from graphile_worker._private_jobs order by id")
            state = sorted(
                (normalise(cur, row) for row in cur.fetchall()), key=lambda r: json.dumps(r)
            )
            cur.execute(
                "select (select array_agg(identifier order by identifier)"
                " from graphile_worker._private_tasks) as tasks,"
                " (select array_agg(queue_name || ':' || coalesce(locked_by, '-') order by"
                " queue_name) from graphile_worker._private_job_queues) as queues"
            )
            state.append(dict(cur.fetchone()))
    finally:
        conn.close()
        listener.close()
    return results, notified, state


def apply_state(cur: Any, step: str) -> None:
    action, key, *rest = step.split(":")
    if action == "lock":
        hours = float(rest[0]) if rest else 0.0
        cur.execute(
            "update graphile_worker._private_jobs set locked_by = 'pool-script',"
            " locked_at = now() - %s * interval '1 hour' where key = %s",
            (hours, key),
        )
    elif action == "exhaust":
        cur.execute(
            "update graphile_worker._private_jobs set attempts = max_attempts,"
            " last_error = 'failed' where key = %s",
            (key,),
        )
    elif action == "update":
        column, value = rest[0].split("=")
        assert column == "attempts"
        cur.execute(
            "update graphile_worker._private_jobs set attempts = %s where key = %s",
            (int(value), key),
        )
    cur.execute(
        "update graphile_worker._private_job_queues q set locked_by = j.locked_by,"
        " locked_at = j.locked_at from graphile_worker._private_jobs j"
        " where j.key = %s and q.id = j.job_queue_id",
        (key,),
    )


def normalise(cur: Any, row: dict[str, Any]) -> dict[str, Any]:
    """Drop ids and clock times; name tasks and queues instead of numbering them."""
    out = dict(row)
    for column in ("id", "created_at", "updated_at", "locked_at"):
        if column in out:
            out[column] = "<set>" if out[column] is not None else None
    if "run_at" in out and out["run_at"] is not None:
        stamp = out["run_at"].isoformat()
        out["run_at"] = stamp if stamp in (T1, T2) else "<clock>"
    if out.get("task_id") is not None:
        cur.execute(
            "select identifier from graphile_worker._private_tasks where id = %s", (out["task_id"],)
        )
        out["task_id"] = cur.fetchone()["identifier"]
    if out.get("job_queue_id") is not None:
        cur.execute(
            "select queue_name from graphile_worker._private_job_queues where id = %s",
            (out["job_queue_id"],),
        )
        out["job_queue_id"] = cur.fetchone()["queue_name"]
    if isinstance(out.get("payload"), (dict, list)):
        out["payload"] = json.dumps(out["payload"])
    return out


def drain(listener: Any) -> list[int]:
    with listener.cursor() as cur:
        cur.execute("select pg_notify('jobs:insert', 'sentinel')")

    def arrived() -> bool:
        listener.poll()
        return any(n.payload == "sentinel" for n in listener.notifies)

    wait_for(arrived, timeout=10, what="sentinel notification")
    payloads = [n.payload for n in listener.notifies]
    listener.notifies.clear()
    found = []
    for payload in payloads[: payloads.index("sentinel")]:
        match = re.fullmatch(r'\{"r":[0-9.e-]+,"count":(-?\d+)\}', payload)
        assert match, payload
        found.append(int(match.group(1)))
    return found


def test_same_sql_calls_give_the_same_rows(database_factory) -> None:
    theirs, ours = database_factory(), database_factory()
    schema_only(theirs)
    kongtaskd_migrate(ours)

    their_results, their_notes, their_state = run_script(theirs)
    our_results, our_notes, our_state = run_script(ours)

    calls = [s for s, _ in SCRIPT if ":" not in s.split(" ")[0]]
    for call, theirs_, ours_ in zip(calls, their_results, our_results, strict=True):
        assert ours_ == theirs_, f"different result for {call}"
    assert our_notes == their_notes
    assert our_state == their_state
    # The script really exercised something.
    assert len(their_state) > 10 and any(n == [-1] for n in their_notes)


# -- graphile-worker runs kongtaskd's jobs ----------------------------------------------------

TASK = """\
const fs = require("fs");
const path = require("path");
module.exports = async (payload, helpers) => {
  if (payload.fail) throw new Error("asked to fail");
  fs.appendFileSync(
    path.join(process.cwd(), "out.jsonl"),
    JSON.stringify({ id: helpers.job.id, task: helpers.job.task_identifier, payload }) + "\\n",
  );
};
"""


def test_graphile_worker_runs_jobs_added_by_kongtaskd(tmp_path: Path, database_factory) -> None:
    dsn = database_factory()
    kongtaskd_migrate(dsn)
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "hello.js").write_text(TASK)
    (tmp_path / "package.json").write_text('{"type": "commonjs"}')
    (tmp_path / "graphile.config.mjs").write_text(
        "export default { worker: { completeJobBatchDelay: 0, failJobBatchDelay: 0 } };\n"
    )
    jobs = [
        kongtaskd.add_job(dsn, "hello", {"n": 1}),
        kongtaskd.add_job(dsn, "hello", {"n": 2}, queue_name="serial", priority=-1),
        kongtaskd.add_job(dsn, "hello", [{"n": 3}], job_key="batch"),
        kongtaskd.add_job(dsn, "hello", {"n": 4}, flags=["slow"], max_attempts=3),
        kongtaskd.add_job(dsn, "hello", {"fail": True}, max_attempts=5),
    ]
    future = kongtaskd.add_job(
        dsn, "hello", {"n": 5}, run_at=dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)
    )

    run_graphile(["--once"], dsn, cwd=tmp_path)

    done = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    # (node-postgres hands bigint ids over as strings)
    assert sorted(int(d["id"]) for d in done) == sorted(j.id for j in jobs[:4])
    assert {d["task"] for d in done} == {"hello"}
    assert {json.dumps(d["payload"]) for d in done} == {
        json.dumps(p) for p in ({"n": 1}, {"n": 2}, [{"n": 3}], {"n": 4})
    }
    left = query(
        dsn,
        "select id, attempts, last_error, locked_by from graphile_worker._private_jobs order by id",
    )
    failed = jobs[4].id
    assert [r[0] for r in left] == [failed, future.id]
    assert left[0][1] == 1 and "asked to fail" in left[0][2] and left[0][3] is None
    assert left[1][1:] == (0, None, None)
    assert query(dsn, "select locked_by from graphile_worker._private_job_queues") == [(None,)]


# -- racing migrators -------------------------------------------------------------------------


def with_app_name(dsn: str, name: str) -> str:
    params = parse_dsn(dsn)
    params["application_name"] = name
    return make_dsn(**params)


class KongtaskdThread(threading.Thread):
    def __init__(self, dsn: str) -> None:
        super().__init__(daemon=True)
        self.dsn = with_app_name(dsn, "kt-race")
        self.error: BaseException | None = None
        self.report: Any = None

    def run(self) -> None:
        try:
            self.report = kongtaskd_migrate(self.dsn)
        except BaseException as error:
            self.error = error


def blocked_on_lock(dsn: str, application_name: str) -> bool:
    found = query(
        dsn,
        "select count(*) from pg_stat_activity where datname = current_database()"
        " and application_name = %s and wait_event_type = 'Lock'",
        (application_name,),
    )
    return found[0][0] > 0


def finish(dsn: str, reference: Snapshot, kt: KongtaskdThread, gw: Any) -> None:
    kt.join(timeout=60)
    out, err = gw.communicate(timeout=60)
    assert kt.error is None, repr(kt.error)
    assert gw.returncode == 0, f"graphile-worker failed:\n{out}\n{err}"
    assert ledger(dsn) == EXPECTED_LEDGER
    assert query(dsn, "select id from graphile_worker._kongtaskd_migrations") == [
        (n,) for n in KONGTASKD_MIGRATIONS
    ]
    assert_same_catalog(reference, snapshot(dsn), labels=LABELS)


def test_kongtaskd_and_graphile_worker_starting_together(reference, database_factory) -> None:
    dsn = database_factory()
    gw = start_graphile(["--schema-only"], dsn)
    kt = KongtaskdThread(dsn)
    kt.start()
    finish(dsn, reference, kt, gw)


def test_kongtaskd_joining_a_graphile_worker_install_midway(reference, database_factory) -> None:
    dsn = database_factory()
    gw = start_graphile(["--schema-only"], dsn)

    def started() -> bool:
        try:
            return query(dsn, "select count(*) from graphile_worker.migrations")[0][0] > 0
        except psycopg2.Error:
            return False

    wait_for(started, timeout=30, interval=0.002, what="graphile-worker's first ledger row")
    kt = KongtaskdThread(dsn)
    kt.start()
    finish(dsn, reference, kt, gw)


@pytest.mark.parametrize("held", [1, 12, 16])
@pytest.mark.parametrize("first", ["kongtaskd", "graphile-worker"])
def test_race_for_one_ledger_row(reference, database_factory, held: int, first: str) -> None:
    """Both migrators wait on a held ledger row; when it is released one of them gets it (the
    lock manager wakes both), and the other must take its unique violation as "done" and
    carry on. Who starts first decides who is waiting while the other starts up."""
    dsn = database_factory()
    if held == 1:
        # An empty ledger, as graphile-worker's bootstrap leaves it.
        query(dsn, "create schema graphile_worker")
        query(
            dsn,
            "create table graphile_worker.migrations (id int primary key,"
            " ts timestamptz default now() not null, breaking boolean not null default false)",
        )
    else:
        kongtaskd_migrate(dsn, target=held - 1)
    holder = psycopg2.connect(dsn)
    try:
        with holder.cursor() as cur:
            cur.execute(
                "insert into graphile_worker.migrations (id, breaking) values (%s, %s)",
                (held, held in BREAKING_GRAPHILE_MIGRATIONS),
            )
        kt = KongtaskdThread(dsn)
        starters = {
            "kongtaskd": (kt.start, "kt-race"),
            "graphile-worker": (
                lambda: gw_box.append(
                    start_graphile(["--schema-only"], dsn, application_name="gw-race")
                ),
                "gw-race",
            ),
        }
        gw_box: list[Any] = []
        order = [first, "graphile-worker" if first == "kongtaskd" else "kongtaskd"]
        for name in order:
            start, app = starters[name]
            start()
            wait_for(lambda app=app: blocked_on_lock(dsn, app), timeout=30, what=f"{name} blocked")
    finally:
        holder.rollback()
        holder.close()
    finish(dsn, reference, kt, gw_box[0])


@pytest.mark.parametrize("stop_at", range(11, LATEST_GRAPHILE_MIGRATION))
def test_graphile_worker_completes_a_kongtaskd_install(
    reference, database_factory, stop_at: int
) -> None:
    """Every intermediate state kongtaskd leaves is one graphile-worker's real files build on."""
    dsn = database_factory()
    kongtaskd_migrate(dsn, target=stop_at)
    schema_only(dsn)
    assert ledger(dsn) == EXPECTED_LEDGER
    assert_same_catalog(reference, snapshot(dsn), labels=LABELS)


def test_real_intermediate_states_are_what_kongtaskd_builds(database_factory) -> None:
    """graphile-worker's own files 1..11 and kongtaskd's fresh install leave the same catalog."""
    theirs, ours = database_factory(), database_factory()
    apply_real_migrations(theirs, 11)
    kongtaskd_migrate(ours, target=11)
    assert ledger(ours) == ledger(theirs) == EXPECTED_LEDGER[:11]
    assert_same_catalog(snapshot(theirs), snapshot(ours), labels=LABELS)
