"""The cron scheduler against a real migrated database, with explicit ``now`` values.

Ticks are fed as explicit instants, so nothing here waits for the wall clock: the gate in
``_private_known_crontabs``, backfill, catch-up and the options reaching the job rows are
checked in milliseconds.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import psycopg2
import psycopg2.extensions
import pytest
from psycopg2 import sql

from kongtaskd.cron import (
    MAX_STATEMENTS_PER_CALL,
    CronScheduler,
    parse_crontab,
)
from kongtaskd.schema import migrate

Conn = psycopg2.extensions.connection
UTC = dt.timezone.utc
SCHEMA = "graphile_worker"
T0 = dt.datetime(2024, 1, 1, 12, 0, 30, tzinfo=UTC)  # half a minute past 12:00


def minutes(n: float) -> dt.timedelta:
    return dt.timedelta(minutes=n)


@pytest.fixture(scope="module")
def cron_dsn(dsn: str) -> str:
    conn = psycopg2.connect(dsn)
    try:
        migrate(conn, SCHEMA)
    finally:
        conn.close()
    return dsn


def connect(dsn: str) -> Conn:
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    return conn


@pytest.fixture()
def conn(cron_dsn: str) -> Iterator[Conn]:
    """An autocommit connection (as the supervisor's) on an emptied queue."""
    connection = connect(cron_dsn)
    with connection.cursor() as cur:
        cur.execute(
            "truncate graphile_worker._private_jobs, graphile_worker._private_known_crontabs"
        )
    yield connection
    connection.close()


def jobs(conn: Conn, schema: str = SCHEMA) -> list[dict[str, Any]]:
    """Every job, oldest tick first, with its task and queue names and raw payload text."""
    query = sql.SQL(
        """
        select j.id, t.identifier as task, q.queue_name, j.payload::text as payload,
               j.run_at, j.max_attempts, j.priority, j.key
        from {schema}._private_jobs j
        join {schema}._private_tasks t on t.id = j.task_id
        left join {schema}._private_job_queues q on q.id = j.job_queue_id
        order by j.run_at, j.id
        """
    ).format(schema=sql.Identifier(schema))
    with conn.cursor() as cur:
        cur.execute(query)
        names = [column.name for column in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def known(conn: Conn, schema: str = SCHEMA) -> dict[str, tuple]:
    query = sql.SQL(
        "select identifier, known_since, last_execution from {}._private_known_crontabs"
    ).format(sql.Identifier(schema))
    with conn.cursor() as cur:
        cur.execute(query)
        return {identifier: (since, last) for identifier, since, last in cur.fetchall()}


def cron_of(job: dict[str, Any]) -> dict[str, Any]:
    return json.loads(job["payload"])["_cron"]


def run_until(scheduler: CronScheduler, conn: Conn, now: dt.datetime) -> int:
    """Call run_due as the supervisor would until nothing more is due at ``now``."""
    added = scheduler.run_due(conn, now)
    while scheduler.next_due() <= now.timestamp():
        added += scheduler.run_due(conn, now)
    return added


def scheduler(text: str, **kwargs: Any) -> CronScheduler:
    kwargs.setdefault("schema", SCHEMA)
    return CronScheduler(parse_crontab(text), **kwargs)


# --- live ticks -------------------------------------------------------------------------------


def test_each_tick_adds_one_job_with_graphile_workers_payload(conn: Conn) -> None:
    cron = scheduler("* * * * * remember {a: 1.5, 'b': 'x', c: [1,2,],}")
    cron.start(conn, now=T0)
    assert known(conn) == {"remember": (T0, None)}
    # Nothing is due before the first whole minute after the start.
    assert cron.run_due(conn, T0 + minutes(0.25)) == 0
    assert cron.next_due() == pytest.approx((T0 + minutes(0.5)).timestamp(), abs=0.01)
    assert cron.run_due(conn, T0 + minutes(0.5)) == 1
    added = jobs(conn)
    assert [j["task"] for j in added] == ["remember"]
    # Byte for byte what graphile-worker stores: compact JSON, _cron last, ms and Z.
    assert added[0]["payload"] == (
        '{"a":1.5,"b":"x","c":[1,2],"_cron":{"ts":"2024-01-01T12:01:00.000Z","backfilled":false}}'
    )
    assert added[0]["run_at"] == dt.datetime(2024, 1, 1, 12, 1, tzinfo=UTC)
    assert (added[0]["max_attempts"], added[0]["priority"], added[0]["queue_name"]) == (25, 0, None)


def test_last_execution_advances_with_each_tick(conn: Conn) -> None:
    cron = scheduler("*/2 * * * * every_other")
    cron.start(conn, now=T0)
    cron.run_due(conn, T0 + minutes(2))
    assert known(conn)["every_other"] == (T0, dt.datetime(2024, 1, 1, 12, 2, tzinfo=UTC))
    cron.run_due(conn, T0 + minutes(5))
    assert known(conn)["every_other"][1] == dt.datetime(2024, 1, 1, 12, 4, tzinfo=UTC)
    assert [cron_of(j)["ts"] for j in jobs(conn)] == [
        "2024-01-01T12:02:00.000Z",
        "2024-01-01T12:04:00.000Z",
    ]


def test_options_reach_the_job_row(conn: Conn) -> None:
    cron = scheduler(
        "* * * * * remember ?id=opts&max=3&queue=cronq&priority=-1&jobKey=cronkey {x: 1}\n"
        "* * * * * other ?jobKey=kept&jobKeyMode=preserve_run_at"
    )
    cron.start(conn, now=T0)
    assert cron.run_due(conn, T0 + minutes(1)) == 2
    by_task = {j["task"]: j for j in jobs(conn)}
    row = by_task["remember"]
    assert (row["queue_name"], row["max_attempts"], row["priority"], row["key"]) == (
        "cronq",
        3,
        -1,
        "cronkey",
    )
    assert json.loads(row["payload"])["x"] == 1
    assert by_task["other"]["key"] == "kept"
    # The next tick replaces the keyed job (jobKeyMode replace) rather than adding one...
    assert cron.run_due(conn, T0 + minutes(2)) == 2
    keyed = [j for j in jobs(conn) if j["key"] == "cronkey"]
    assert len(keyed) == 1
    assert cron_of(keyed[0])["ts"] == "2024-01-01T12:02:00.000Z"
    # ...and preserve_run_at keeps the first run_at while taking the new payload.
    kept = [j for j in jobs(conn) if j["key"] == "kept"]
    assert len(kept) == 1
    assert kept[0]["run_at"] == dt.datetime(2024, 1, 1, 12, 1, tzinfo=UTC)
    assert cron_of(kept[0])["ts"] == "2024-01-01T12:02:00.000Z"


def test_late_call_catches_up_every_missed_minute(conn: Conn) -> None:
    cron = scheduler("* * * * * remember")
    cron.start(conn, now=T0)
    assert cron.run_due(conn, T0 + minutes(5)) == 5
    ticks = [cron_of(j) for j in jobs(conn)]
    assert [t["ts"][11:16] for t in ticks] == ["12:01", "12:02", "12:03", "12:04", "12:05"]
    assert not any(t["backfilled"] for t in ticks)


def test_a_long_catch_up_is_spread_over_calls(conn: Conn) -> None:
    cron = scheduler("* * * * * remember")
    cron.start(conn, now=T0)
    now = T0 + minutes(50)
    assert cron.run_due(conn, now) == MAX_STATEMENTS_PER_CALL
    assert cron.next_due() <= now.timestamp()  # more is due: call again at once
    assert run_until(cron, conn, now) == 50 - MAX_STATEMENTS_PER_CALL
    assert cron.next_due() > now.timestamp()


def test_next_due_skips_quiet_minutes(conn: Conn) -> None:
    cron = scheduler("30 * * * * half_past")
    cron.start(conn, now=T0)
    assert cron.next_due() == pytest.approx(
        dt.datetime(2024, 1, 1, 12, 30, tzinfo=UTC).timestamp(), abs=0.01
    )
    assert cron.run_due(conn, T0 + minutes(10)) == 0  # an early call does no harm
    assert cron.run_due(conn, dt.datetime(2024, 1, 1, 12, 30, 0, 5000, tzinfo=UTC)) == 1


# --- exactly once -----------------------------------------------------------------------------


def test_two_schedulers_racing_add_exactly_one_job_per_tick(cron_dsn: str, conn: Conn) -> None:
    text = "* * * * * remember\n*/2 * * * * other ?queue=q"
    ticks = 40
    now = T0 + minutes(ticks)
    barrier = threading.Barrier(2)
    added: list[int] = []
    errors: list[BaseException] = []

    def race() -> None:
        own = connect(cron_dsn)
        try:
            cron = scheduler(text)
            barrier.wait()
            cron.start(own, now=T0)
            barrier.wait()
            added.append(run_until(cron, own, now))
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)
        finally:
            own.close()

    threads = [threading.Thread(target=race) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    rows = jobs(conn)
    per_task = {
        task: sorted(cron_of(j)["ts"] for j in rows if j["task"] == task)
        for task in ("remember", "other")
    }
    assert len(per_task["remember"]) == ticks
    assert len(set(per_task["remember"])) == ticks
    assert len(per_task["other"]) == ticks // 2
    assert len(set(per_task["other"])) == ticks // 2
    assert sum(added) == ticks + ticks // 2  # the two split the work, none doubled


def test_a_tick_another_daemon_did_is_not_repeated(conn: Conn) -> None:
    first, second = scheduler("* * * * * remember"), scheduler("* * * * * remember")
    first.start(conn, now=T0)
    second.start(conn, now=T0)
    assert first.run_due(conn, T0 + minutes(3)) == 3
    assert second.run_due(conn, T0 + minutes(3)) == 0
    assert second.run_due(conn, T0 + minutes(4)) == 1
    assert first.run_due(conn, T0 + minutes(4)) == 0
    assert len(jobs(conn)) == 4


# --- backfill ---------------------------------------------------------------------------------


def seen_before(conn: Conn, identifier: str, since: dt.datetime, last: dt.datetime | None) -> None:
    with conn.cursor() as cur:
        cur.execute(
            "insert into graphile_worker._private_known_crontabs"
            " (identifier, known_since, last_execution) values (%s, %s, %s)",
            (identifier, since, last),
        )


def test_backfill_within_fill(conn: Conn) -> None:
    seen_before(conn, "remember", T0 - dt.timedelta(hours=2), None)
    cron = scheduler("* * * * * remember ?fill=3m")
    cron.start(conn, now=T0)
    assert cron.next_due() <= T0.timestamp()  # backfill is due at once
    assert run_until(cron, conn, T0) == 3
    rows = jobs(conn)
    assert [(cron_of(j)["ts"][11:16], cron_of(j)["backfilled"]) for j in rows] == [
        ("11:58", True),
        ("11:59", True),
        ("12:00", True),
    ]
    assert known(conn)["remember"][1] == dt.datetime(2024, 1, 1, 12, 0, tzinfo=UTC)
    # Live ticks follow, not backfilled.
    assert cron.run_due(conn, T0 + minutes(1)) == 1
    assert cron_of(jobs(conn)[-1]) == {"ts": "2024-01-01T12:01:00.000Z", "backfilled": False}


def test_backfill_starts_after_last_execution(conn: Conn) -> None:
    seen_before(
        conn,
        "remember",
        T0 - dt.timedelta(days=1),
        dt.datetime(2024, 1, 1, 11, 57, tzinfo=UTC),
    )
    cron = scheduler("* * * * * remember ?fill=1h")
    cron.start(conn, now=T0)
    assert run_until(cron, conn, T0) == 3  # 11:58, 11:59, 12:00; 11:57 was done
    assert all(cron_of(j)["backfilled"] for j in jobs(conn))


def test_backfill_walks_only_matching_ticks_of_each_item(conn: Conn) -> None:
    since = T0 - dt.timedelta(days=2)
    seen_before(conn, "hourly", since, None)
    seen_before(conn, "quarter", since, None)
    seen_before(conn, "no_fill", since, None)
    cron = scheduler("0 * * * * hourly ?fill=3h\n*/15 * * * * quarter ?fill=40m\n* * * * * no_fill")
    cron.start(conn, now=T0)
    run_until(cron, conn, T0)
    got = [(j["task"], cron_of(j)["ts"][11:16]) for j in jobs(conn)]
    # Each item within its own fill: hourly back to 09:00:30, quarter back to 11:20:30.
    assert got == [
        ("hourly", "10:00"),
        ("hourly", "11:00"),
        ("quarter", "11:30"),
        ("quarter", "11:45"),
        ("hourly", "12:00"),
        ("quarter", "12:00"),
    ]


def test_no_backfill_without_fill(conn: Conn) -> None:
    seen_before(conn, "remember", T0 - dt.timedelta(hours=2), None)
    cron = scheduler("* * * * * remember")
    cron.start(conn, now=T0)
    assert cron.run_due(conn, T0) == 0
    assert jobs(conn) == []


def test_first_seen_identifier_is_never_backfilled(conn: Conn) -> None:
    cron = scheduler("* * * * * remember ?fill=1d")
    cron.start(conn, now=T0)
    assert run_until(cron, conn, T0) == 0
    assert known(conn) == {"remember": (T0, None)}


def test_backfill_then_live_ticks_of_another_daemon_do_not_double(conn: Conn) -> None:
    seen_before(conn, "remember", T0 - dt.timedelta(hours=2), None)
    live = scheduler("* * * * * remember")
    live.start(conn, now=T0 - minutes(10))
    assert live.run_due(conn, T0) == 10  # the fleet was running all along
    late = scheduler("* * * * * remember ?fill=30m")
    late.start(conn, now=T0)
    assert run_until(late, conn, T0) == 0
    assert len(jobs(conn)) == 10


# --- restarts ---------------------------------------------------------------------------------


def test_reconnect_resumes_where_it_stopped(cron_dsn: str, conn: Conn) -> None:
    cron = scheduler("* * * * * remember")
    cron.start(conn, now=T0)
    assert cron.run_due(conn, T0 + minutes(2)) == 2
    # The connection dies; the supervisor reconnects 3 minutes later and calls start().
    other = connect(cron_dsn)
    try:
        cron.start(other, now=T0 + minutes(5))
        assert run_until(cron, other, T0 + minutes(5)) == 3  # 12:03, 12:04, 12:05
    finally:
        other.close()
    ticks = [cron_of(j) for j in jobs(conn)]
    assert [t["ts"][11:16] for t in ticks] == ["12:01", "12:02", "12:03", "12:04", "12:05"]
    assert not any(t["backfilled"] for t in ticks)


def test_reconnect_during_backfill_does_not_turn_it_into_catch_up(conn: Conn) -> None:
    since = T0 - dt.timedelta(hours=2)
    seen_before(conn, "plain", since, None)
    seen_before(conn, "filled", since, None)
    cron = scheduler("* * * * * plain\n* * * * * filled ?fill=10m")
    cron.start(conn, now=T0)
    cron.run_due(conn, T0 - minutes(5))  # the backfill got as far as 11:55, then the link died
    cron.start(conn, now=T0 + minutes(1))  # reconnected at 12:01:30
    run_until(cron, conn, T0 + minutes(1))
    got = [(j["task"], cron_of(j)["ts"][11:16], cron_of(j)["backfilled"]) for j in jobs(conn)]
    filled = [(ts, backfilled) for task, ts, backfilled in got if task == "filled"]
    assert filled == [(f"11:{m}", True) for m in range(51, 60)] + [
        ("12:00", True),
        ("12:01", False),
    ]
    # "plain" has no fill: it never ran in the backfill range, only from its live ticks on.
    assert [(ts, b) for task, ts, b in got if task == "plain"] == [("12:01", False)]


def test_reload_keeps_the_position_in_time(conn: Conn) -> None:
    cron = scheduler("* * * * * remember")
    cron.start(conn, now=T0)
    assert cron.run_due(conn, T0 + minutes(1)) == 1  # 12:01
    cron.reconfigure(parse_crontab("* * * * * remember\n*/5 * * * * five"), timezone="UTC")
    cron.start(conn, now=T0 + minutes(3))  # SIGHUP at 12:03:30
    assert run_until(cron, conn, T0 + minutes(5)) == 5  # 12:02 .. 12:05, and five's 12:05
    got = [(j["task"], cron_of(j)["ts"][11:16]) for j in jobs(conn)]
    assert [ts for task, ts in got if task == "remember"] == [f"12:0{m}" for m in range(1, 6)]
    assert [ts for task, ts in got if task == "five"] == ["12:05"]
    assert known(conn)["five"][0] == T0 + minutes(3)


def test_failed_statement_leaves_the_tick_for_later(cron_dsn: str, conn: Conn) -> None:
    cron = scheduler("* * * * * remember")
    cron.start(conn, now=T0)
    broken = connect(cron_dsn)
    broken.close()
    with pytest.raises(psycopg2.InterfaceError):
        cron.run_due(broken, T0 + minutes(1))
    cron.start(conn, now=T0 + minutes(1))
    assert run_until(cron, conn, T0 + minutes(1)) == 1


def test_run_due_before_start_is_a_programming_error(conn: Conn) -> None:
    with pytest.raises(RuntimeError, match="before start"):
        scheduler("* * * * * remember").run_due(conn, T0)


# --- time zones and schema names --------------------------------------------------------------


def test_time_zone_ticks_across_spring_forward(conn: Conn) -> None:
    # Berlin, 2024-03-31: 02:00 CET -> 03:00 CEST. 02:30 does not exist and runs at 03:00.
    start = dt.datetime(2024, 3, 30, 22, 0, 30, tzinfo=UTC)
    cron = scheduler("30 2 * * * nightly\n0 * * * * hourly", timezone="Europe/Berlin")
    cron.start(conn, now=start)
    run_until(cron, conn, dt.datetime(2024, 3, 31, 4, 0, 30, tzinfo=UTC))
    got = [(j["task"], cron_of(j)["ts"]) for j in jobs(conn)]
    assert [ts for task, ts in got if task == "nightly"] == ["2024-03-31T01:00:00.000Z"]
    assert [ts[11:16] for task, ts in got if task == "hourly"] == [
        "23:00",
        "00:00",
        "01:00",
        "02:00",
        "03:00",
        "04:00",
    ]


def test_any_schema_name(database_factory: Callable[[], str]) -> None:
    schema = 'Wëird "cron"; drop table x; --'
    dsn = database_factory()
    conn = psycopg2.connect(dsn)
    try:
        migrate(conn, schema)
        conn.autocommit = True
        cron = scheduler("* * * * * remember ?fill=5m", schema=schema)
        cron.start(conn, now=T0)
        assert cron.run_due(conn, T0 + minutes(1)) == 1
        assert [j["task"] for j in jobs(conn, schema)] == ["remember"]
        assert known(conn, schema)["remember"][1] == dt.datetime(2024, 1, 1, 12, 1, tzinfo=UTC)
    finally:
        conn.close()


def test_works_on_a_connection_in_transaction_mode(cron_dsn: str, conn: Conn) -> None:
    plain = psycopg2.connect(cron_dsn)
    try:
        cron = scheduler("* * * * * remember")
        cron.start(plain, now=T0)
        assert cron.run_due(plain, T0 + minutes(1)) == 1
    finally:
        plain.close()
    assert len(jobs(conn)) == 1  # committed, not left in an open transaction
