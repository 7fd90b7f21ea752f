"""Behaviour of graphile-worker's SQL API (add_job, add_jobs, remove_job, complete_jobs,
permanently_fail_jobs, reschedule_jobs, force_unlock_workers) and kongtaskd's claim trio.

The graphile-worker tests run twice: on a database migrated by kongtaskd and on one made by
the real graphile-worker 0.18.0 (``--schema-only``). The same assertions holding on both is
the proof that kongtaskd's SQL behaves like graphile-worker's.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterator
from typing import Any

import psycopg2
import psycopg2.errors
import psycopg2.extensions
import psycopg2.extras
import pytest

from kongtaskd.schema import migrate
from tests.support import wait_for
from tests.support.graphile import schema_only
from tests.support.plans import explain_analyze, index_scans, shared_buffers_hit

T1 = dt.datetime(2031, 1, 1, tzinfo=dt.timezone.utc)
T2 = dt.datetime(2032, 2, 2, tzinfo=dt.timezone.utc)
NOTIFY_PAYLOAD = re.compile(r'^\{"r":[0-9.e-]+,"count":(-?\d+)\}$')


def make_kongtaskd_db(database_factory: Any) -> str:
    dsn = database_factory()
    conn = psycopg2.connect(dsn)
    try:
        migrate(conn)
    finally:
        conn.close()
    return dsn


@pytest.fixture(
    scope="module",
    params=["kongtaskd", pytest.param("graphile-worker", marks=pytest.mark.interop)],
)
def db(request: pytest.FixtureRequest, database_factory: Any) -> str:
    """A database whose schema was made by kongtaskd or by the real graphile-worker."""
    if request.param == "kongtaskd":
        return make_kongtaskd_db(database_factory)
    dsn = database_factory()
    schema_only(dsn)
    return dsn


@pytest.fixture(scope="module")
def kt_db(database_factory: Any) -> str:
    return make_kongtaskd_db(database_factory)


def _cursor(dsn: str) -> Iterator[psycopg2.extras.RealDictCursor]:
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    try:
        with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
            # Every test starts from empty tables and fresh identities.
            cur.execute(
                "truncate graphile_worker._private_jobs, graphile_worker._private_job_queues,"
                " graphile_worker._private_tasks restart identity"
            )
            yield cur
    finally:
        conn.close()


@pytest.fixture()
def cur(db: str) -> Iterator[psycopg2.extras.RealDictCursor]:
    yield from _cursor(db)


@pytest.fixture()
def kt_cur(kt_db: str) -> Iterator[psycopg2.extras.RealDictCursor]:
    yield from _cursor(kt_db)


def one(cur: Any, statement: str, params: Any = None) -> dict[str, Any]:
    cur.execute(statement, params)
    return cur.fetchone()


def all_rows(cur: Any, statement: str, params: Any = None) -> list[dict[str, Any]]:
    cur.execute(statement, params)
    return cur.fetchall()


def job(cur: Any, job_id: int) -> dict[str, Any] | None:
    cur.execute(
        "select j.*, t.identifier as task_identifier, q.queue_name"
        " from graphile_worker._private_jobs j"
        " join graphile_worker._private_tasks t on t.id = j.task_id"
        " left join graphile_worker._private_job_queues q on q.id = j.job_queue_id"
        " where j.id = %s",
        (job_id,),
    )
    return cur.fetchone()


def lock(cur: Any, job_id: int, *, hours_ago: float = 0, by: str = "pool-test") -> None:
    cur.execute(
        "update graphile_worker._private_jobs"
        " set locked_at = now() - %s * interval '1 hour', locked_by = %s where id = %s",
        (hours_ago, by, job_id),
    )


def add(cur: Any, identifier: str = "task", **kwargs: Any) -> dict[str, Any]:
    """Call add_job with named arguments (payload given as a Python value)."""
    names = ["identifier"]
    values: list[Any] = [identifier]
    for name, value in kwargs.items():
        names.append(name)
        values.append(json.dumps(value) if name == "payload" else value)
    casts = {"payload": "::json", "flags": "::text[]", "run_at": "::timestamptz"}
    args = ", ".join(f"{n} => %s{casts.get(n, '')}" for n in names)
    return one(cur, f"select * from graphile_worker.add_job({args})", values)


def count_jobs(cur: Any) -> int:
    return one(cur, "select count(*) as n from graphile_worker._private_jobs")["n"]


# -- add_job ----------------------------------------------------------------------------------


def test_add_job_defaults(cur) -> None:
    row = add(cur, "send_email")
    stored = job(cur, row["id"])
    assert stored["task_identifier"] == "send_email"
    assert stored["payload"] == {}
    assert (stored["priority"], stored["attempts"], stored["max_attempts"]) == (0, 0, 25)
    assert stored["queue_name"] is None and stored["job_queue_id"] is None
    assert stored["key"] is None and stored["flags"] is None and stored["last_error"] is None
    assert stored["locked_at"] is None and stored["locked_by"] is None
    assert stored["revision"] == 0 and stored["is_available"] is True
    now = one(cur, "select now() as now")["now"]
    assert abs((stored["run_at"] - now).total_seconds()) < 5
    view = one(cur, "select * from graphile_worker.jobs where id = %s", (row["id"],))
    assert "payload" not in view and view["task_identifier"] == "send_email"


def test_add_job_with_every_argument(cur) -> None:
    row = add(
        cur,
        "t",
        payload={"b": 1, "a": [1, 2]},
        queue_name="q1",
        run_at=T1,
        max_attempts=3,
        priority=-5,
        flags=["x", "y"],
    )
    stored = job(cur, row["id"])
    assert stored["payload"] == {"b": 1, "a": [1, 2]}
    assert stored["queue_name"] == "q1" and stored["run_at"] == T1
    assert (stored["max_attempts"], stored["priority"]) == (3, -5)
    assert stored["flags"] == {"x": True, "y": True}
    queues = all_rows(cur, "select queue_name, locked_at from graphile_worker._private_job_queues")
    assert queues == [{"queue_name": "q1", "locked_at": None}]


def test_add_job_keeps_payload_json_text_as_given(cur) -> None:
    cur.execute('select (graphile_worker.add_job(\'t\', \'{"b":1, "a":2, "b":3}\')).id')
    job_id = cur.fetchone()["id"]
    raw = one(
        cur, "select payload::text from graphile_worker._private_jobs where id = %s", (job_id,)
    )
    # json, not jsonb: key order and duplicates survive.
    assert raw["payload"] == '{"b":1, "a":2, "b":3}'


def test_add_job_does_not_burn_task_or_queue_identities(cur) -> None:
    for _ in range(3):
        add(cur, "same", queue_name="same_q")
        add(cur, "same", queue_name="same_q", job_key="k", job_key_mode="unsafe_dedupe")
    assert add(cur, "other", queue_name="other_q")["task_id"] == 2
    queues = all_rows(
        cur, "select id, queue_name from graphile_worker._private_job_queues order by id"
    )
    assert queues == [{"id": 1, "queue_name": "same_q"}, {"id": 2, "queue_name": "other_q"}]


def test_replace_mode_updates_a_waiting_job_and_resets_retry_state(cur) -> None:
    first = add(cur, "t", payload={"v": 1}, job_key="k", run_at=T1, queue_name="q1")
    cur.execute(
        "update graphile_worker._private_jobs set attempts = 2, last_error = 'boom' where id = %s",
        (first["id"],),
    )
    second = add(
        cur,
        "t2",
        payload={"v": 2},
        job_key="k",
        run_at=T2,
        queue_name="q2",
        max_attempts=7,
        priority=3,
        flags=["f"],
    )
    assert second["id"] == first["id"] and count_jobs(cur) == 1
    stored = job(cur, first["id"])
    assert stored["task_identifier"] == "t2" and stored["queue_name"] == "q2"
    assert stored["payload"] == {"v": 2} and stored["run_at"] == T2
    assert (stored["max_attempts"], stored["priority"], stored["flags"]) == (7, 3, {"f": True})
    assert (stored["attempts"], stored["last_error"], stored["revision"]) == (0, None, 1)
    assert stored["updated_at"] >= first["updated_at"]


def test_replace_with_nothing_but_the_key_resets_to_defaults(cur) -> None:
    add(cur, "t", payload={"v": 1}, job_key="k", queue_name="q", priority=9, flags=["f"])
    row = add(cur, "t", job_key="k")
    assert (row["payload"], row["priority"], row["flags"], row["job_queue_id"]) == (
        {},
        0,
        None,
        None,
    )


def test_preserve_run_at_keeps_run_at_only_while_no_attempt_was_made(cur) -> None:
    first = add(cur, "t", job_key="k", run_at=T1)
    again = add(cur, "t", job_key="k", run_at=T2, job_key_mode="preserve_run_at", payload={"n": 2})
    assert again["id"] == first["id"] and again["run_at"] == T1 and again["payload"] == {"n": 2}

    cur.execute(
        "update graphile_worker._private_jobs set attempts = 1 where id = %s", (first["id"],)
    )
    third = add(cur, "t", job_key="k", run_at=T2, job_key_mode="preserve_run_at")
    assert third["id"] == first["id"] and third["run_at"] == T2 and third["attempts"] == 0


def test_null_job_key_mode_behaves_like_replace(cur) -> None:
    first = add(cur, "t", job_key="k", run_at=T1)
    again = add(cur, "t", job_key="k", run_at=T2, job_key_mode=None)
    assert again["id"] == first["id"] and again["run_at"] == T2 and again["revision"] == 1


def test_unsafe_dedupe_only_bumps_revision(cur) -> None:
    first = add(cur, "t", payload={"v": 1}, job_key="k", run_at=T1, job_key_mode="unsafe_dedupe")
    again = add(
        cur, "t", payload={"v": 2}, job_key="k", run_at=T2, priority=4, job_key_mode="unsafe_dedupe"
    )
    assert again["id"] == first["id"] and again["revision"] == 1
    assert again["payload"] == {"v": 1} and again["run_at"] == T1 and again["priority"] == 0
    assert again["updated_at"] >= first["updated_at"]


@pytest.mark.parametrize("state", ["locked", "permanently_failed"])
def test_unsafe_dedupe_keeps_even_a_running_or_failed_job(cur, state: str) -> None:
    first = add(cur, "t", job_key="k", max_attempts=2, job_key_mode="unsafe_dedupe")
    if state == "locked":
        lock(cur, first["id"])
    else:
        cur.execute(
            "update graphile_worker._private_jobs set attempts = 2 where id = %s", (first["id"],)
        )
    again = add(cur, "t", payload={"v": 2}, job_key="k", job_key_mode="unsafe_dedupe")
    assert again["id"] == first["id"] and again["revision"] == 1 and count_jobs(cur) == 1


@pytest.mark.parametrize("mode", ["replace", "preserve_run_at"])
@pytest.mark.parametrize("state", ["locked", "permanently_failed"])
def test_replacing_an_unavailable_job_detaches_it_and_adds_a_new_one(
    cur, mode: str, state: str
) -> None:
    old = add(cur, "t", payload={"v": 1}, job_key="k", max_attempts=3)
    if state == "locked":
        lock(cur, old["id"])
    else:
        cur.execute(
            "update graphile_worker._private_jobs set attempts = 3, last_error = 'x' where id = %s",
            (old["id"],),
        )
    new = add(cur, "t", payload={"v": 2}, job_key="k", job_key_mode=mode)
    assert new["id"] != old["id"] and count_jobs(cur) == 2
    assert (new["key"], new["attempts"], new["revision"], new["payload"]) == ("k", 0, 0, {"v": 2})
    detached = job(cur, old["id"])
    assert detached["key"] is None and detached["attempts"] == detached["max_attempts"] == 3
    assert detached["payload"] == {"v": 1}
    assert detached["updated_at"] >= old["updated_at"]


def test_batch_jobs_concatenate_array_payloads(cur) -> None:
    first = add(cur, "t", payload=[1, 2], job_key="batch")
    assert add(cur, "t", payload=[3], job_key="batch")["payload"] == [1, 2, 3]
    assert add(cur, "t", payload=[{"x": 4}], job_key="batch")["payload"] == [1, 2, 3, {"x": 4}]
    # An object replaces an array, and an array replaces an object.
    assert add(cur, "t", payload={"o": 1}, job_key="batch")["payload"] == {"o": 1}
    assert add(cur, "t", payload=[5], job_key="batch")["payload"] == [5]
    assert job(cur, first["id"])["revision"] == 4 and count_jobs(cur) == 1


def test_bad_job_key_mode_raises_gwbkm(cur) -> None:
    with pytest.raises(psycopg2.Error) as raised:
        add(cur, "t", job_key="k", job_key_mode="bogus")
    assert raised.value.pgcode == "GWBKM"
    assert raised.value.diag.message_primary == (
        "Invalid job_key_mode value, expected 'replace', 'preserve_run_at' or 'unsafe_dedupe'."
    )
    # Without a key the mode is never looked at.
    assert add(cur, "t", job_key_mode="bogus")["key"] is None


@pytest.mark.parametrize(
    ("kwargs", "sqlstate", "constraint"),
    [
        ({"identifier": "x" * 129}, "23514", "tasks_identifier_check"),
        ({"queue_name": "q" * 129}, "23514", "job_queues_queue_name_check"),
        ({"job_key": ""}, "23514", "jobs_key_check"),
        ({"job_key": "k" * 513}, "23514", "jobs_key_check"),
        ({"max_attempts": 0}, "23514", "jobs_max_attempts_check"),
        ({"priority": 40000}, "22003", None),
        ({"max_attempts": 40000}, "22003", None),
    ],
)
def test_rationality_checks(cur, kwargs: dict[str, Any], sqlstate: str, constraint: str) -> None:
    kwargs = dict(kwargs)  # the parameter dict is shared between the two databases' runs
    identifier = kwargs.pop("identifier", "t")
    with pytest.raises(psycopg2.Error) as raised:
        add(cur, identifier, **kwargs)
    assert raised.value.pgcode == sqlstate
    assert raised.value.diag.constraint_name == constraint


def test_limits_themselves_are_accepted(cur) -> None:
    row = add(cur, "x" * 128, queue_name="q" * 128, job_key="k" * 512, max_attempts=1)
    assert row["max_attempts"] == 1 and len(row["key"]) == 512


# -- add_jobs ---------------------------------------------------------------------------------


def add_jobs(cur: Any, specs: list[dict[str, Any]], preserve: bool | None = None) -> list[dict]:
    spec_json = json.dumps(specs, default=str)
    extra = "" if preserve is None else ", job_key_preserve_run_at => %s"
    params: list[Any] = [spec_json] if preserve is None else [spec_json, preserve]
    return all_rows(
        cur,
        "select * from graphile_worker.add_jobs("
        " array(select json_populate_recordset(null::graphile_worker.job_spec, %s::json))"
        f"{extra}) order by id",
        params,
    )


def test_add_jobs_inserts_every_spec(cur) -> None:
    rows = add_jobs(
        cur,
        [
            {"identifier": "a"},
            {"identifier": "b", "payload": {"n": 1}, "queue_name": "q", "priority": 2},
            {"identifier": "a", "job_key": "k", "flags": ["f1", "f2"], "max_attempts": 4},
            {"identifier": "c", "run_at": T1.isoformat()},
        ],
    )
    assert sorted(r["id"] for r in rows) == [1, 2, 3, 4] and count_jobs(cur) == 4
    # Rows come out in join order, not array order: find each by its task and key.
    stored = {(s["task_identifier"], s["key"]): s for s in (job(cur, r["id"]) for r in rows)}
    assert set(stored) == {("a", None), ("b", None), ("a", "k"), ("c", None)}
    assert stored["a", None]["payload"] == {} and stored["a", None]["flags"] is None
    assert stored["b", None]["payload"] == {"n": 1} and stored["b", None]["queue_name"] == "q"
    assert stored["b", None]["priority"] == 2
    assert stored["a", "k"]["flags"] == {"f1": True, "f2": True}
    assert stored["a", "k"]["max_attempts"] == 4
    assert stored["c", None]["run_at"] == T1


def test_add_jobs_preserve_run_at_flag(cur) -> None:
    add(cur, "t", job_key="k", run_at=T1)
    (kept,) = add_jobs(cur, [{"identifier": "t", "job_key": "k", "run_at": T2.isoformat()}], True)
    assert kept["run_at"] == T1
    (moved,) = add_jobs(cur, [{"identifier": "t", "job_key": "k", "run_at": T2.isoformat()}], False)
    assert moved["run_at"] == T2 and moved["revision"] == 2


def test_add_jobs_skips_a_job_locked_after_detaching(cur) -> None:
    # A locked job with the key is detached first, so a new row is made instead.
    old = add(cur, "t", job_key="k")
    lock(cur, old["id"])
    (new,) = add_jobs(cur, [{"identifier": "t", "job_key": "k"}])
    assert new["id"] != old["id"] and job(cur, old["id"])["key"] is None


# -- notifications -----------------------------------------------------------------------------


class Listener:
    """A LISTENing connection; a sentinel notification marks the end of what to expect."""

    def __init__(self, dsn: str) -> None:
        self.conn = psycopg2.connect(dsn)
        self.conn.autocommit = True
        with self.conn.cursor() as c:
            c.execute('listen "jobs:insert"')

    def drain(self) -> list[str]:
        """Every payload received before a sentinel sent now (commit order = delivery order)."""
        with self.conn.cursor() as c:
            c.execute("select pg_notify('jobs:insert', 'sentinel')")

        def arrived() -> bool:
            self.conn.poll()
            return any(n.payload == "sentinel" for n in self.conn.notifies)

        wait_for(arrived, timeout=10, what="the sentinel notification")
        payloads = [n.payload for n in self.conn.notifies]
        self.conn.notifies.clear()
        return payloads[: payloads.index("sentinel")]

    def close(self) -> None:
        self.conn.close()


@pytest.fixture()
def listener(db: str) -> Iterator[Listener]:
    listening = Listener(db)
    yield listening
    listening.close()


def counts(payloads: list[str]) -> list[int]:
    found = []
    for payload in payloads:
        match = NOTIFY_PAYLOAD.match(payload)
        assert match, f"unexpected jobs:insert payload {payload!r}"
        found.append(int(match.group(1)))
    return found


def test_notifications_carry_counts(cur, listener: Listener) -> None:
    add(cur, "t")
    assert counts(listener.drain()) == [1]
    add_jobs(cur, [{"identifier": "t"}, {"identifier": "t"}, {"identifier": "u"}])
    assert counts(listener.drain()) == [3]
    add(cur, "t", job_key="k")
    add(cur, "t", job_key="k")  # an update of a waiting job still notifies (count is a bound)
    assert counts(listener.drain()) == [1, 1]
    one(cur, "select * from graphile_worker.remove_job('k')")
    assert counts(listener.drain()) == [-1]


def test_unsafe_dedupe_notifies_only_for_a_new_job(cur, listener: Listener) -> None:
    add(cur, "t", job_key="d", job_key_mode="unsafe_dedupe")
    add(cur, "t", job_key="d", job_key_mode="unsafe_dedupe")
    add(cur, "t", job_key="d", job_key_mode="unsafe_dedupe")
    assert counts(listener.drain()) == [1]


def test_remove_job_of_a_running_job_does_not_notify(cur, listener: Listener) -> None:
    row = add(cur, "t", job_key="k")
    listener.drain()
    lock(cur, row["id"])
    one(cur, "select * from graphile_worker.remove_job('k')")
    assert listener.drain() == []


def test_rolled_back_add_job_notifies_nobody(db: str, listener: Listener) -> None:
    conn = psycopg2.connect(db)
    try:
        with conn.cursor() as c:
            c.execute("select graphile_worker.add_job('t')")
        conn.rollback()
    finally:
        conn.close()
    assert listener.drain() == []


# -- remove_job -------------------------------------------------------------------------------


def test_remove_job_deletes_a_waiting_job(cur) -> None:
    row = add(cur, "t", job_key="k")
    removed = one(cur, "select * from graphile_worker.remove_job('k')")
    assert removed["id"] == row["id"] and count_jobs(cur) == 0


def test_remove_job_of_a_running_job_stops_its_retries(cur) -> None:
    row = add(cur, "t", job_key="k", max_attempts=5)
    lock(cur, row["id"], hours_ago=3.9)
    removed = one(cur, "select * from graphile_worker.remove_job('k')")
    assert removed["id"] == row["id"]
    stored = job(cur, row["id"])
    assert stored["key"] is None and stored["attempts"] == 5 and stored["locked_by"] == "pool-test"


def test_remove_job_deletes_a_job_locked_more_than_4_hours_ago(cur) -> None:
    row = add(cur, "t", job_key="k")
    lock(cur, row["id"], hours_ago=4.1)
    assert one(cur, "select * from graphile_worker.remove_job('k')")["id"] == row["id"]
    assert count_jobs(cur) == 0


def test_remove_job_of_unknown_or_null_key_returns_null(cur) -> None:
    assert one(cur, "select * from graphile_worker.remove_job('nope')")["id"] is None
    assert one(cur, "select graphile_worker.remove_job(null) as r")["r"] is None


# -- complete / permanently fail / reschedule --------------------------------------------------


def three_jobs(cur: Any) -> tuple[int, int, int]:
    """(waiting, locked 1 h ago, locked 5 h ago)."""
    ids = [add(cur, "t", max_attempts=9)["id"] for _ in range(3)]
    lock(cur, ids[1], hours_ago=1)
    lock(cur, ids[2], hours_ago=5)
    return ids[0], ids[1], ids[2]


def test_complete_jobs_skips_jobs_locked_less_than_4_hours_ago(cur) -> None:
    waiting, running, stale = three_jobs(cur)
    rows = all_rows(
        cur,
        "select id from graphile_worker.complete_jobs(%s::bigint[]) order by id",
        ([waiting, running, stale, 999],),
    )
    assert [r["id"] for r in rows] == [waiting, stale]
    assert job(cur, running) is not None and count_jobs(cur) == 1


@pytest.mark.parametrize(("message", "expected"), [(None, "Manually marked as failed"), ("x", "x")])
def test_permanently_fail_jobs(cur, message: str | None, expected: str) -> None:
    waiting, running, stale = three_jobs(cur)
    rows = all_rows(
        cur,
        "select id from graphile_worker.permanently_fail_jobs(%s::bigint[], %s) order by id",
        ([waiting, running, stale], message),
    )
    assert [r["id"] for r in rows] == [waiting, stale]
    for job_id in (waiting, stale):
        stored = job(cur, job_id)
        assert (stored["last_error"], stored["attempts"], stored["is_available"]) == (
            expected,
            9,
            False,
        )
    assert job(cur, running)["last_error"] is None


def test_permanently_fail_jobs_default_argument(cur) -> None:
    row = add(cur, "t")
    one(
        cur,
        "select * from graphile_worker.permanently_fail_jobs(array[%s]::bigint[])",
        (row["id"],),
    )
    assert job(cur, row["id"])["last_error"] == "Manually marked as failed"


def test_reschedule_jobs_overwrites_only_given_fields(cur) -> None:
    waiting, running, stale = three_jobs(cur)
    rows = all_rows(
        cur,
        "select id from graphile_worker.reschedule_jobs(%s::bigint[], run_at => %s,"
        " attempts => 2) order by id",
        ([waiting, running, stale], T1),
    )
    assert [r["id"] for r in rows] == [waiting, stale]
    stored = job(cur, waiting)
    assert (stored["run_at"], stored["attempts"], stored["priority"], stored["max_attempts"]) == (
        T1,
        2,
        0,
        9,
    )
    assert job(cur, running)["run_at"] != T1
    rows = all_rows(
        cur,
        "select priority, max_attempts, run_at from graphile_worker.reschedule_jobs("
        "array[%s]::bigint[], priority => 7, max_attempts => 3)",
        (waiting,),
    )
    assert rows == [{"priority": 7, "max_attempts": 3, "run_at": T1}]
    with pytest.raises(psycopg2.Error) as raised:
        one(
            cur,
            "select * from graphile_worker.reschedule_jobs(array[%s]::bigint[], priority => 99999)",
            (waiting,),
        )
    assert raised.value.pgcode == "22003"


def test_force_unlock_workers_unlocks_only_the_named_pools(cur) -> None:
    ids = [add(cur, "t", queue_name=f"q{i}")["id"] for i in range(3)]
    for job_id, pool in zip(ids, ["pool-a", "pool-b", "pool-c"], strict=True):
        lock(cur, job_id, by=pool)
        cur.execute(
            "update graphile_worker._private_job_queues set locked_at = now(), locked_by = %s"
            " where id = (select job_queue_id from graphile_worker._private_jobs where id = %s)",
            (pool, job_id),
        )
    one(cur, "select graphile_worker.force_unlock_workers(array['pool-a', 'pool-b']) as r")
    jobs = all_rows(cur, "select locked_by from graphile_worker._private_jobs order by id")
    queues = all_rows(cur, "select locked_by from graphile_worker._private_job_queues order by id")
    assert [r["locked_by"] for r in jobs] == [None, None, "pool-c"]
    assert [r["locked_by"] for r in queues] == [None, None, "pool-c"]


# -- kongtaskd_get_job / kongtaskd_complete_job / kongtaskd_fail_job ---------------------------

POOL = "pool-aaaaaaaaaaaaaaaaaa"
OTHER = "pool-bbbbbbbbbbbbbbbbbb"


def get_job(cur: Any, pool: str = POOL, tasks: list[str] | None = None, flags: Any = None) -> Any:
    return one(
        cur, "select * from graphile_worker.kongtaskd_get_job(%s, %s, %s)", (pool, tasks, flags)
    )


def test_get_job_claims_by_priority_then_run_at(kt_cur) -> None:
    late = add(kt_cur, "t", run_at=dt.datetime(2001, 1, 2, tzinfo=dt.timezone.utc))
    early = add(kt_cur, "t", run_at=dt.datetime(2001, 1, 1, tzinfo=dt.timezone.utc))
    urgent = add(kt_cur, "t", priority=-1, run_at=dt.datetime(2001, 1, 3, tzinfo=dt.timezone.utc))
    add(kt_cur, "t", run_at=T1)  # not due
    claimed = [get_job(kt_cur)["id"] for _ in range(4)]
    assert claimed == [urgent["id"], early["id"], late["id"], None]
    stored = job(kt_cur, urgent["id"])
    assert (stored["attempts"], stored["locked_by"], stored["is_available"]) == (1, POOL, False)
    assert stored["locked_at"] is not None


def test_get_job_filters_tasks_and_forbidden_flags(kt_cur) -> None:
    flagged = add(kt_cur, "a", flags=["slow"])
    other_task = add(kt_cur, "b")
    assert get_job(kt_cur, tasks=["a"], flags=["slow"])["id"] is None
    assert get_job(kt_cur, tasks=["c"])["id"] is None
    assert get_job(kt_cur, tasks=["a", "c"], flags=["fast"])["id"] == flagged["id"]
    assert get_job(kt_cur, tasks=None, flags=[])["id"] == other_task["id"]


def test_get_job_skips_exhausted_and_locked_jobs(kt_cur) -> None:
    exhausted = add(kt_cur, "t", max_attempts=1)
    kt_cur.execute(
        "update graphile_worker._private_jobs set attempts = 1 where id = %s", (exhausted["id"],)
    )
    running = add(kt_cur, "t")
    lock(kt_cur, running["id"], hours_ago=5)  # even a stale lock waits for the sweep
    assert get_job(kt_cur)["id"] is None


def test_get_job_runs_a_named_queue_one_job_at_a_time(kt_cur) -> None:
    first = add(kt_cur, "t", queue_name="serial")
    second = add(kt_cur, "t", queue_name="serial")
    free = add(kt_cur, "t", priority=5)
    assert get_job(kt_cur)["id"] == first["id"]
    queue = one(kt_cur, "select locked_by from graphile_worker._private_job_queues")
    assert queue["locked_by"] == POOL
    # The queue is held, so the next claim skips `second` and takes the lower-priority job.
    assert get_job(kt_cur, OTHER)["id"] == free["id"]
    one(kt_cur, "select * from graphile_worker.kongtaskd_complete_job(%s, %s)", (POOL, first["id"]))
    assert get_job(kt_cur, OTHER)["id"] == second["id"]


def test_get_job_follows_priority_then_run_at_across_tasks(kt_cur) -> None:
    """Many priorities, tasks we ask for and one we do not, jobs for later: the order is
    graphile-worker's, computed here from the table with the rules in plain SQL."""
    for n in range(150):
        add(
            kt_cur,
            ["a", "b", "c"][n % 3],
            priority=(n * 7) % 11 - 5,
            run_at=T1
            if n % 10 == 9
            else dt.datetime(2001, 1, 1, tzinfo=dt.timezone.utc)
            + dt.timedelta(seconds=(n * 37) % 150),
        )
    expected = [
        row["id"]
        for row in all_rows(
            kt_cur,
            "select j.id from graphile_worker._private_jobs j"
            " join graphile_worker._private_tasks t on t.id = j.task_id"
            " where t.identifier in ('a', 'b') and j.run_at <= now()"
            " order by j.priority, j.run_at",
        )
    ]
    claimed = [get_job(kt_cur, tasks=["a", "b"])["id"] for _ in range(len(expected) + 1)]
    assert claimed == [*expected, None]


def test_get_job_skips_rows_another_transaction_holds_without_waiting(kt_cur, kt_db) -> None:
    held = add(kt_cur, "t", run_at=dt.datetime(2001, 1, 1, tzinfo=dt.timezone.utc))
    queued = add(
        kt_cur, "t", queue_name="q", run_at=dt.datetime(2001, 1, 2, tzinfo=dt.timezone.utc)
    )
    free = add(kt_cur, "t", run_at=dt.datetime(2001, 1, 3, tzinfo=dt.timezone.utc))
    holder = psycopg2.connect(kt_db)
    try:
        with holder.cursor() as hold:
            # A concurrent claimer in the middle of its transaction: the best job's row and
            # the named queue's row are locked, neither is taken by anyone yet.
            hold.execute(
                "select id from graphile_worker._private_jobs where id = %s for update",
                (held["id"],),
            )
            hold.execute("select id from graphile_worker._private_job_queues for update")
        # Waiting instead of skipping would fail with lock_timeout instead of hanging.
        kt_cur.execute("set lock_timeout = '5s'")
        assert get_job(kt_cur)["id"] == free["id"]
        assert get_job(kt_cur)["id"] is None
    finally:
        holder.rollback()
        holder.close()
    assert get_job(kt_cur)["id"] == held["id"]
    assert get_job(kt_cur)["id"] == queued["id"]


@pytest.mark.parametrize("layout", ["other tasks ahead", "ours scheduled for later"])
def test_get_job_does_not_walk_the_backlog(kt_cur, kt_db, layout: str) -> None:
    """100,000 waiting jobs get_job cannot take are not read one by one, when it finds
    nothing (the idle poll) and when its job sits behind them, with the custom plans a new
    session starts with and the generic plan it may settle on. Counted in buffers: the old
    get_job read every waiting job in its (priority, run_at) order up to ours."""
    add(kt_cur, "noop")
    add(kt_cur, "other")
    kt_cur.execute("truncate graphile_worker._private_jobs")
    if layout == "other tasks ahead":
        backlog_task, backlog_at = "other", "now() - interval '1 hour'"
    else:
        backlog_task, backlog_at = "noop", "now() + interval '1 day'"
    kt_cur.execute(
        "insert into graphile_worker._private_jobs (task_id, payload, run_at)"
        " select t.id, '{}', " + backlog_at + " + n * interval '1 ms'"
        " from generate_series(1, 100000) as n, graphile_worker._private_tasks t"
        " where t.identifier = %s",
        (backlog_task,),
    )
    kt_cur.execute("vacuum analyze graphile_worker._private_jobs")
    conn = psycopg2.connect(kt_db)
    conn.autocommit = True
    statement = "select * from graphile_worker.kongtaskd_get_job(%s, array['noop'])"

    def assert_cheap(what: str) -> None:
        for mode in ("force_custom_plan", "force_generic_plan"):
            with conn.cursor() as cur:
                cur.execute(f"set plan_cache_mode = {mode}")
            explain_analyze(conn, statement, (POOL,))  # the session's first call plans
            plan = explain_analyze(conn, statement, (POOL,))
            assert shared_buffers_hit(plan) < 400, f"{what}, {mode}:\n{plan}"

    try:
        scans_before = index_scans(conn, "_kongtaskd_jobs_ready")
        assert_cheap("nothing due")
        assert get_job(kt_cur, tasks=["noop"])["id"] is None
        # Behind the backlog in graphile-worker's (priority, run_at) order.
        mine = add(kt_cur, "noop", priority=1)
        assert_cheap("one due")
        assert index_scans(conn, "_kongtaskd_jobs_ready") > scans_before
    finally:
        conn.close()
    assert get_job(kt_cur, tasks=["noop"])["id"] == mine["id"]
    assert get_job(kt_cur, tasks=["noop"])["id"] is None


@pytest.mark.parametrize("pool", [None, "", "short"])
def test_get_job_rejects_an_unusable_pool_id(kt_cur, pool: str | None) -> None:
    with pytest.raises(psycopg2.Error) as raised:
        get_job(kt_cur, pool)
    assert raised.value.pgcode == "22023" and "invalid pool id" in raised.value.diag.message_primary


def test_complete_job_deletes_and_releases_only_its_own_queue_lock(kt_cur) -> None:
    row = add(kt_cur, "t", queue_name="q")
    get_job(kt_cur)
    done = one(
        kt_cur, "select * from graphile_worker.kongtaskd_complete_job(%s, %s)", (POOL, row["id"])
    )
    assert done["id"] == row["id"] and count_jobs(kt_cur) == 0
    assert (
        one(kt_cur, "select locked_by from graphile_worker._private_job_queues")["locked_by"]
        is None
    )

    row = add(kt_cur, "t", queue_name="q")
    get_job(kt_cur)
    one(kt_cur, "select * from graphile_worker.kongtaskd_complete_job(%s, %s)", (OTHER, row["id"]))
    assert (
        one(kt_cur, "select locked_by from graphile_worker._private_job_queues")["locked_by"]
        == POOL
    )
    missing = one(kt_cur, "select * from graphile_worker.kongtaskd_complete_job(%s, 999)", (POOL,))
    assert missing["id"] is None


def test_fail_job_records_error_backs_off_and_unlocks(kt_cur) -> None:
    row = add(kt_cur, "t", queue_name="q")
    get_job(kt_cur)
    before = one(kt_cur, "select now() as now")["now"]
    failed = one(
        kt_cur,
        "select * from graphile_worker.kongtaskd_fail_job(%s, %s, %s)",
        (POOL, row["id"], "it broke"),
    )
    assert failed["last_error"] == "it broke" and failed["attempts"] == 1
    assert failed["locked_at"] is None and failed["locked_by"] is None
    delay = (failed["run_at"] - before).total_seconds()
    assert 2.0 < delay < 4.0  # e^1 seconds after now
    assert (
        one(kt_cur, "select locked_by from graphile_worker._private_job_queues")["locked_by"]
        is None
    )


def test_fail_job_by_another_pool_changes_nothing(kt_cur) -> None:
    row = add(kt_cur, "t")
    get_job(kt_cur)
    result = one(
        kt_cur, "select * from graphile_worker.kongtaskd_fail_job(%s, %s, 'x')", (OTHER, row["id"])
    )
    assert result["id"] is None
    stored = job(kt_cur, row["id"])
    assert stored["locked_by"] == POOL and stored["last_error"] is None


def test_backoff_is_capped_at_exp_10_seconds(kt_cur) -> None:
    row = add(kt_cur, "t", max_attempts=30)
    kt_cur.execute(
        "update graphile_worker._private_jobs set attempts = 14 where id = %s", (row["id"],)
    )
    get_job(kt_cur)
    before = one(kt_cur, "select now() as now")["now"]
    failed = one(
        kt_cur, "select * from graphile_worker.kongtaskd_fail_job(%s, %s, 'x')", (POOL, row["id"])
    )
    delay = (failed["run_at"] - before).total_seconds()
    assert 22026 - 2 < delay < 22026 + 2  # e^10
