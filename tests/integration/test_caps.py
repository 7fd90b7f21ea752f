"""Fleet-wide caps, rate buckets and pauses in ``kongtaskd_claim`` (kongtaskd migration 6).

Real PostgreSQL, real concurrent claimers: each thread has its own connection and runs the
supervisor's settle statement (claim + outcomes in one round trip) as the daemon does.
"""

from __future__ import annotations

import threading
from typing import Any

import psycopg2
import psycopg2.extensions
import pytest

import kongtaskd
from kongtaskd.queries import Queries
from tests.integration.test_claim import add, execute, task_ids

S = "graphile_worker"


def write_caps(
    conn: psycopg2.extensions.connection,
    caps: dict[str, tuple[int | None, tuple[int, int] | None]],
    pool: str = "pool-caps-writer-1",
) -> list[tuple[Any, ...]]:
    names = sorted(caps)
    task_ids(conn, *names)
    execute(conn, "deallocate all")  # each call PREPAREs the daemon's statement afresh
    queries = Queries(conn, S, names=("write_caps",))
    return queries.fetchall(
        "write_caps",
        names,
        [caps[n][0] for n in names],
        [caps[n][1][0] if caps[n][1] else None for n in names],
        [caps[n][1][1] if caps[n][1] else None for n in names],
        pool,
    )


class Claimer:
    def __init__(self, dsn: str, pool: str, tasks: list[int]) -> None:
        self.conn = psycopg2.connect(dsn)
        self.conn.autocommit = True
        self.queries = Queries(self.conn, S, names=("settle",))
        self.pool, self.tasks = pool, tasks

    def settle(self, size: int, completed: list[int] | None = None) -> list[tuple[Any, ...]]:
        return self.queries.fetchall(
            "settle",
            completed or [],
            [],
            [],
            [],
            self.pool,
            self.tasks,
            None,
            size,
            [],
            [],
            False,
            0,
            0,
            False,
        )

    def claim(self, size: int, completed: list[int] | None = None) -> list[int]:
        return [r[1] for r in self.settle(size, completed) if r[0] == "claimed"]


def locked(conn: psycopg2.extensions.connection, task: str) -> int:
    return int(
        execute(
            conn,
            "select count(*) from graphile_worker._private_jobs j"
            " join graphile_worker._private_tasks t on t.id = j.task_id"
            " where t.identifier = %s and j.locked_at is not null",
            (task,),
        )[0][0]
    )


def test_concurrent_claimers_with_prefetch_never_exceed_the_cap(conn, fresh_dsn) -> None:
    for _ in range(120):
        add(conn, "capped")
        add(conn, "free")
    write_caps(conn, {"capped": (3, None), "free": (None, None)})
    ids = task_ids(conn, "capped", "free")
    capped_id = ids[0]
    claimers = [Claimer(fresh_dsn, f"pool-caps-claimer-{i}", ids) for i in range(6)]
    start = threading.Barrier(len(claimers) + 1)
    done = threading.Event()
    worst: list[int] = []
    errors: list[BaseException] = []
    free_taken = [0] * len(claimers)

    def observe() -> None:
        watcher = psycopg2.connect(fresh_dsn)
        watcher.autocommit = True
        start.wait()
        while not done.is_set():
            worst.append(locked(watcher, "capped"))
        watcher.close()

    def run(index: int, claimer: Claimer) -> None:
        try:
            held: list[int] = []
            start.wait()
            for _ in range(60):
                # Prefetch on: ask for more than one child's worth each time; finish half of
                # what is held (their slots come free in the same statement).
                finished, held = held[: len(held) // 2 + 1], held[len(held) // 2 + 1 :]
                rows = claimer.settle(8, finished)
                for kind, job_id, task_id, *_ in rows:
                    if kind == "claimed":
                        held.append(job_id)
                        if task_id != capped_id:
                            free_taken[index] += 1
            claimer.claim(0, held)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    observer = threading.Thread(target=observe)
    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(claimers)]
    observer.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    done.set()
    observer.join(30)
    for claimer in claimers:
        claimer.conn.close()
    assert not errors, errors
    assert worst and max(worst) <= 3, f"capped jobs locked at once: max {max(worst)}"
    assert max(worst) == 3  # the cap was reached, so it was what held them back
    assert sum(free_taken) > 0  # the uncapped task was claimed alongside


def test_a_cap_holds_across_claims_and_counts_any_holder(conn, fresh_dsn) -> None:
    for _ in range(10):
        add(conn, "thumb")
    add(conn, "other")
    write_caps(conn, {"thumb": (2, None)})
    # A graphile-worker worker holds one job of the task: it takes a slot.
    execute(
        conn,
        "update graphile_worker._private_jobs set locked_at = now(), locked_by = 'gw-worker-1'"
        " where id = (select min(id) from graphile_worker._private_jobs)",
    )
    claimer = Claimer(fresh_dsn, "pool-caps-claimer-a", task_ids(conn, "thumb", "other"))
    first = claimer.claim(10)
    assert locked(conn, "thumb") == 2 and locked(conn, "other") == 1 and len(first) == 2
    assert claimer.claim(10) == []  # full: no thumb, and other is taken
    # kongtaskd_get_job honours it too.
    got = execute(conn, "select id from graphile_worker.kongtaskd_get_job('pool-caps-getjob-1')")
    assert got == [(None,)]
    # The worker's job ends: its slot is free for the next claim, and only that one.
    execute(
        conn,
        "delete from graphile_worker._private_jobs where locked_by = 'gw-worker-1'",
    )
    assert len(claimer.claim(10)) == 1 and locked(conn, "thumb") == 2
    claimer.conn.close()


def test_removing_a_cap_lifts_it_and_the_writer_is_reported(conn, fresh_dsn) -> None:
    for _ in range(5):
        add(conn, "lift")
    assert write_caps(conn, {"lift": (1, None)}, pool="pool-caps-writer-a") == []
    changed = write_caps(conn, {"lift": (None, None)}, pool="pool-caps-writer-b")
    assert changed == [("lift", 1, None, None, "pool-caps-writer-a")]
    claimer = Claimer(fresh_dsn, "pool-caps-claimer-b", task_ids(conn, "lift"))
    assert len(claimer.claim(10)) == 5
    claimer.conn.close()


def test_rate_bucket_allows_its_burst_then_says_when_to_come_back(conn, fresh_dsn) -> None:
    for _ in range(30):
        add(conn, "partner")
    write_caps(conn, {"partner": (None, (5, 3600))})  # 5/h: no refill during the test
    claimer = Claimer(fresh_dsn, "pool-caps-claimer-r", task_ids(conn, "partner"))
    assert len(claimer.claim(20)) == 5  # the bucket starts full: burst N
    rows = claimer.settle(20)
    assert [r[0] for r in rows] == ["wait"]
    assert rows[0][4] is not None  # when the next token comes
    # A restart writing the same rate keeps the bucket (no fresh burst).
    write_caps(conn, {"partner": (None, (5, 3600))}, pool="pool-caps-writer-c")
    assert claimer.claim(20) == []
    claimer.conn.close()


def test_pause_and_resume_a_task(conn, fresh_dsn) -> None:
    for _ in range(3):
        add(conn, "stop_me")
        add(conn, "keep")
    claimer = Claimer(fresh_dsn, "pool-caps-claimer-p", task_ids(conn, "stop_me", "keep"))
    result = kongtaskd.pause(conn, tasks=["stop_me", "not_yet_a_task"])
    assert result.changed == [("task", "stop_me"), ("task", "not_yet_a_task")]
    assert kongtaskd.pause(conn, tasks="stop_me").changed == []  # already paused
    taken = claimer.claim(10)
    assert locked(conn, "stop_me") == 0 and locked(conn, "keep") == 3 and len(taken) == 3
    got = execute(conn, "select id from graphile_worker.kongtaskd_get_job('pool-caps-getjob-2')")
    assert got == [(None,)]
    listed = {(p.kind, p.name, p.known) for p in kongtaskd.steer.pauses(conn)}
    assert listed == {("task", "stop_me", True), ("task", "not_yet_a_task", False)}
    assert kongtaskd.resume(conn, tasks=["stop_me"]).changed == [("task", "stop_me")]
    assert len(claimer.claim(10)) == 3
    claimer.conn.close()


def queue_row(conn: psycopg2.extensions.connection, name: str) -> tuple[Any, ...]:
    return tuple(
        execute(
            conn,
            "select locked_by, locked_at = 'infinity' from graphile_worker._private_job_queues"
            " where queue_name = %s",
            (name,),
        )[0]
    )


def test_pausing_a_queue_holds_its_row_for_graphile_worker_and_survives_sweeps(
    conn, fresh_dsn
) -> None:
    add(conn, "q_task", queue="busy", seconds=-120)
    add(conn, "q_task", queue="busy")
    add(conn, "q_task", queue="billing")
    claimer = Claimer(fresh_dsn, "pool-caps-claimer-q", task_ids(conn, "q_task"))
    (busy_job,) = claimer.claim(1)  # the oldest job, of queue busy, is running
    assert queue_row(conn, "busy") == ("pool-caps-claimer-q", False)
    kongtaskd.pause(conn, queues=["billing", "busy"])
    assert queue_row(conn, "billing") == ("kongtaskd pause", True)
    assert queue_row(conn, "busy") == ("pool-caps-claimer-q", False)  # its job runs on
    # Both fleets' sweeps leave the marker alone: graphile-worker's 4-hour stale unlock and
    # kongtaskd's sweep of expired locks (here with a stale_after of 0 s).
    execute(conn, "select graphile_worker.force_unlock_workers(array['gw-dead-worker'])")
    sweeps = Queries(conn, S, names=("sweep_expired",))
    sweeps.fetchall("sweep_expired", 0.0)
    execute(
        conn,
        "update graphile_worker._private_job_queues set locked_by = null, locked_at = null"
        " where locked_at < now() - interval '4 hours'",
    )
    # The running job ends; its queue is then held for the pause by the next claim.
    assert claimer.claim(5, [busy_job]) == []
    assert queue_row(conn, "billing") == ("kongtaskd pause", True)
    assert queue_row(conn, "busy") == ("kongtaskd pause", True)
    kongtaskd.resume(conn, queues=["billing", "busy"])
    assert queue_row(conn, "billing") == (None, None)
    assert len(claimer.claim(5)) == 2
    claimer.conn.close()


def test_resume_never_unlocks_a_queue_whose_job_is_running(conn, fresh_dsn) -> None:
    add(conn, "q_task2", queue="live")
    claimer = Claimer(fresh_dsn, "pool-caps-claimer-l", task_ids(conn, "q_task2"))
    assert len(claimer.claim(1)) == 1
    kongtaskd.pause(conn, queues="live")
    kongtaskd.resume(conn, queues="live")
    assert queue_row(conn, "live")[0] == "pool-caps-claimer-l"
    claimer.conn.close()


def test_bad_pause_input_changes_nothing(conn) -> None:
    with pytest.raises(ValueError, match="at least one task or queue"):
        kongtaskd.pause(conn)
    with pytest.raises(ValueError, match="non-empty"):
        kongtaskd.pause(conn, tasks=[""])
    assert kongtaskd.steer.pauses(conn) == []


def test_a_pause_on_the_callers_connection_takes_effect_when_it_commits(conn, fresh_dsn) -> None:
    add(conn, "tx_task")
    claimer = Claimer(fresh_dsn, "pool-caps-claimer-t", task_ids(conn, "tx_task"))
    caller = psycopg2.connect(fresh_dsn)  # not autocommit: the caller's transaction
    try:
        kongtaskd.pause(caller, tasks=["tx_task"])
        other = psycopg2.connect(fresh_dsn)
        other.autocommit = True
        assert kongtaskd.steer.pauses(other) == []  # not committed yet
        caller.commit()
        assert [p.name for p in kongtaskd.steer.pauses(other)] == ["tx_task"]
        other.close()
        assert claimer.claim(5) == []
    finally:
        caller.close()
        claimer.conn.close()
