"""The claim and named queues (kongtaskd migration 8): a queue per entity, idle queue rows,
hot queues, concurrent claimers.

The claim locks only the queues of the jobs it takes: never every available queue row (the
cost used to grow with the queue table: 50,000 queues, 1,328 jobs/s). Jobs of one queue
inserted in a row still fill a claim of N with N queues. And whatever the interleaving of
claimers, no two jobs of one queue are ever locked at once.
"""

from __future__ import annotations

import threading

import psycopg2
import psycopg2.extensions
import pytest

from kongtaskd.schema import migrate
from tests.integration.test_claim import POOL, Claimer, add, execute, task_ids
from tests.support.plans import shared_buffers_hit

Connection = psycopg2.extensions.connection


@pytest.fixture()
def conn(conn: Connection) -> Connection:
    """The shared fixture's connection, planning as the supervisor's session does."""
    with conn.cursor() as cur:
        cur.execute("SET plan_cache_mode = force_generic_plan")
    return conn


def add_queued(conn: Connection, task: str, queues: int, per_queue: int) -> list[list[int]]:
    """`per_queue` jobs in each of `queues` new queues, queue by queue in run_at order (the
    jobs of one queue consecutive); the ids, per queue, in run_at order."""
    (task_id,) = task_ids(conn, task)
    execute(
        conn,
        "insert into graphile_worker._private_job_queues (queue_name)"
        " select 'q-' || n from generate_series(1, %s) as n",
        (queues,),
    )
    rows = execute(
        conn,
        "insert into graphile_worker._private_jobs (task_id, job_queue_id, payload, run_at)"
        " select %s, q.id, '{}', now() - interval '1 hour' + n * interval '1 ms'"
        " from generate_series(0, %s - 1) as n"
        " join graphile_worker._private_job_queues as q on q.queue_name = 'q-' || (n / %s + 1)"
        " returning id, job_queue_id, run_at",
        (task_id, queues * per_queue, per_queue),
    )
    # dicts keep insertion order: queues in the order of their first job.
    by_queue: dict[int, list[int]] = {}
    for job_id, queue_id, _run_at in sorted(rows, key=lambda row: row[2]):
        by_queue.setdefault(queue_id, []).append(job_id)
    return list(by_queue.values())


def locked_queue_rows(conn: Connection) -> list[tuple[int, str]]:
    return execute(
        conn,
        "select id, locked_by from graphile_worker._private_job_queues"
        " where locked_at is not null order by id",
    )


def test_a_claim_over_many_distinct_queues_takes_the_best_and_locks_only_their_queues(
    conn,
) -> None:
    (noop,) = task_ids(conn, "noop")
    queues = add_queued(conn, "noop", 300, 1)
    claimer = Claimer(conn, [noop])
    claimed, more = claimer.claim(100)
    assert sorted(claimed) == [q[0] for q in queues[:100]]
    assert not more
    locked = locked_queue_rows(conn)
    assert len(locked) == 100 and {by for _, by in locked} == {POOL}
    claimed, _ = claimer.claim(500)
    assert sorted(claimed) == [q[0] for q in queues[100:]]


def test_idle_queue_rows_beside_ready_jobs_are_neither_read_nor_locked(conn, fresh_dsn) -> None:
    """50,000 queues whose jobs are done (not cleaned up yet), 20 ready jobs in no queue and
    one in a live queue.

    Fails on migration 6's claim, which locked every available queue row: a concurrent
    transaction could then lock none of them, and the claim read every page of the table.
    """
    (noop,) = task_ids(conn, "noop")
    execute(
        conn,
        "insert into graphile_worker._private_job_queues (queue_name)"
        " select 'idle-' || n from generate_series(1, 50000) as n",
    )
    mine = [add(conn, "noop", seconds=-10 + n / 10) for n in range(20)]
    # One live queue among them: a claim that looks at any queue at all must not read or
    # lock the idle ones.
    mine.insert(0, add(conn, "noop", seconds=-20, queue="live"))
    execute(conn, "vacuum analyze graphile_worker._private_job_queues")
    claimer = Claimer(conn, [noop])
    plan = claimer.plan(8)
    # The queue table alone is ~270 pages; the claim of 8 reads a few dozen in all.
    assert shared_buffers_hit(plan) < 200, plan
    other = psycopg2.connect(fresh_dsn)
    try:
        execute(conn, "begin")
        claimed, _ = claimer.claim(8)
        assert sorted(claimed) == sorted(mine[:8])
        # While the claim's transaction is open, every idle queue row is still free to lock.
        with other.cursor() as cur:
            cur.execute(
                "select count(*) from (select id from graphile_worker._private_job_queues"
                " where queue_name like 'idle-%' for update skip locked) as free"
            )
            assert cur.fetchone() == (50000,)
        other.rollback()
        execute(conn, "commit")
    finally:
        other.close()
    assert [by for _, by in locked_queue_rows(conn)] == [POOL]  # the live queue only


@pytest.mark.parametrize("steered", [False, True], ids=["fast path", "steered path"])
def test_hot_queues_inserted_queue_by_queue_fill_a_claim(conn, steered: bool) -> None:
    """40 queues x 20 jobs, each queue's jobs consecutive: a claim of 25 takes the head of
    the first 25 queues. Migration 6's claim returned 2 (the first 25 rows it looked at
    were in two queues)."""
    (noop,) = task_ids(conn, "noop")
    queues = add_queued(conn, "noop", 40, 20)
    if steered:
        # A pause elsewhere sends the claim down the steered path (pauses, caps, rates).
        execute(
            conn,
            "insert into graphile_worker._kongtaskd_pauses (kind, name, paused_by)"
            " values ('queue', 'q-40', 'test')",
        )
    claimer = Claimer(conn, [noop])
    claimed, more = claimer.claim(25)
    assert sorted(claimed) == [q[0] for q in queues[:25]]
    assert more, "jobs were left behind in queues this claim took"
    claimed, _ = claimer.claim(100)
    # The other heads; the paused queue gives nothing.
    assert sorted(claimed) == [q[0] for q in queues[25 : 39 if steered else 40]]
    assert claimer.claim(100) == ([], False)


def test_a_queue_held_by_someone_else_gives_no_job_and_is_not_touched(conn) -> None:
    (noop,) = task_ids(conn, "noop")
    queues = add_queued(conn, "noop", 3, 2)
    # A graphile-worker worker holds q-2 (it locks the queue row, as kongtaskd does).
    execute(
        conn,
        "update graphile_worker._private_job_queues set locked_by = 'graphile-worker-1',"
        " locked_at = now() where queue_name = 'q-2'",
    )
    claimer = Claimer(conn, [noop])
    claimed, _ = claimer.claim(10)
    assert sorted(claimed) == [queues[0][0], queues[2][0]]
    held = execute(
        conn,
        "select locked_by from graphile_worker._private_job_queues where queue_name = 'q-2'",
    )
    assert held == [("graphile-worker-1",)]


def test_a_queue_whose_first_job_someone_holds_gives_nothing_not_its_next_job(
    conn, fresh_dsn
) -> None:
    """A transaction holding a queue's first job row (an application's UPDATE, an admin
    statement) but not the queue: the claim must not take the queue's second job instead
    (migration 8 did: it won the queue's lock at the second job)."""
    (noop,) = task_ids(conn, "noop")
    queues = add_queued(conn, "noop", 2, 3)
    other = psycopg2.connect(fresh_dsn)
    try:
        execute(
            other,
            "select 1 from graphile_worker._private_jobs where id = %s for update",
            (queues[0][0],),
        )
        claimer = Claimer(conn, [noop])
        claimed, _ = claimer.claim(10)
        assert claimed == [queues[1][0]]
        assert [queue for _, queue in locked_queue_rows(conn)] == [POOL]
    finally:
        other.rollback()
        other.close()
    # Let go of, the queue's first job is the one it gives.
    assert claimer.claim(10)[0] == [queues[0][0]]


def test_queues_run_in_order_while_another_session_keeps_locking_every_queue(
    conn, fresh_dsn
) -> None:
    """graphile-worker's get_job locks every available queue row for its statement. A claim
    whose scan met a queue's first job while such a statement ran, and its next job after
    it ended, took the next job (migration 8: the mixed-fleet acceptance test failed most
    runs). Here a session keeps locking every available queue row, statement after
    statement, while one claimer drains five queues with jobs of no queue between them;
    each queue's jobs must be claimed in id order."""
    (noop,) = task_ids(conn, "noop")
    execute(
        conn,
        "insert into graphile_worker._private_job_queues (queue_name)"
        " select 'q-' || n from generate_series(0, 4) as n",
    )
    queue_of = dict(
        execute(
            conn,
            "insert into graphile_worker._private_jobs (task_id, job_queue_id, payload, run_at)"
            " select %s, case when n %% 2 = 1 then (select q.id"
            "   from graphile_worker._private_job_queues as q where q.queue_name = 'q-' || n %% 5)"
            " end, '{}', now() - interval '1 hour'"
            " from generate_series(0, 999) as n returning id, job_queue_id",
            (noop,),
        )
    )
    stop = threading.Event()
    statements = 0

    def hold_every_queue() -> None:
        nonlocal statements
        holder = psycopg2.connect(fresh_dsn)
        try:
            while not stop.is_set():
                execute(
                    holder,
                    "select id from graphile_worker._private_job_queues"
                    " where locked_at is null for update skip locked",
                )
                holder.commit()
                statements += 1
        finally:
            holder.close()

    holder = threading.Thread(target=hold_every_queue)
    holder.start()
    order: list[int] = []
    try:
        claimer = Claimer(conn, [noop])
        done: list[int] = []
        while len(order) < len(queue_of):
            done, _ = claimer.claim(4, completed=done)
            order.extend(done)
        claimer.claim(4, completed=done)
    finally:
        stop.set()
        holder.join()
    assert sorted(order) == sorted(queue_of)
    assert statements > 0
    for queue in {q for q in queue_of.values() if q is not None}:
        in_queue = [job for job in order if queue_of[job] == queue]
        assert in_queue == sorted(in_queue), f"queue {queue} claimed out of order"


def test_concurrent_claimers_never_hold_two_jobs_of_one_queue(conn, fresh_dsn) -> None:
    """Four claimers (own connections, own pool ids) drain hot queues, distinct queues and
    jobs in no queue, completing each claim in their next one; a checker watches the table
    between their commits. Every job is claimed exactly once; never two locked per queue."""
    (noop,) = task_ids(conn, "noop")
    add_queued(conn, "noop", 30, 15)
    (task_id,) = task_ids(conn, "noop")
    execute(
        conn,
        "insert into graphile_worker._private_job_queues (queue_name)"
        " select 'solo-' || n from generate_series(1, 150) as n",
    )
    execute(
        conn,
        "insert into graphile_worker._private_jobs (task_id, job_queue_id, payload, run_at)"
        " select %s, q.id, '{}', now() - interval '30 minutes'"
        " from graphile_worker._private_job_queues as q where q.queue_name like 'solo-%%'",
        (task_id,),
    )
    for n in range(150):
        add(conn, "noop", seconds=-n)
    total = execute(conn, "select count(*) from graphile_worker._private_jobs")[0][0]
    claimed_by: list[list[int]] = [[] for _ in range(4)]
    errors: list[BaseException] = []

    def run(n: int) -> None:
        connection = psycopg2.connect(fresh_dsn)
        connection.autocommit = True
        try:
            claimer = Claimer(connection, [noop])
            done: list[int] = []
            idle_turns = 0
            while idle_turns < 50:
                done, _ = claimer.claim(7, completed=done, pool=f"pool-claim-race-{n}")
                claimed_by[n].extend(done)
                idle_turns = 0 if done else idle_turns + 1
        except BaseException as error:  # reported by the main thread
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    checks = 0
    while any(thread.is_alive() for thread in threads):
        doubled = execute(
            conn,
            "select job_queue_id, count(*) from graphile_worker._private_jobs"
            " where locked_at is not null and job_queue_id is not null"
            " group by job_queue_id having count(*) > 1",
        )
        assert doubled == [], doubled
        # Each locked job's queue is held by the same pool.
        mismatched = execute(
            conn,
            "select j.id from graphile_worker._private_jobs j"
            " join graphile_worker._private_job_queues q on q.id = j.job_queue_id"
            " where j.locked_at is not null and q.locked_by is distinct from j.locked_by",
        )
        assert mismatched == [], mismatched
        checks += 1
    for thread in threads:
        thread.join()
    assert not errors, errors
    every = [job for ids in claimed_by for job in ids]
    assert len(every) == len(set(every)) == total
    assert execute(conn, "select count(*) from graphile_worker._private_jobs") == [(0,)]
    assert locked_queue_rows(conn) == []
    assert checks > 0


def test_upgrade_from_migration_7_keeps_held_queues_and_claims_per_queue(fresh_dsn) -> None:
    connection = psycopg2.connect(fresh_dsn)
    try:
        migrate(connection, kongtaskd_target=7)
        connection.autocommit = True
        (noop,) = task_ids(connection, "noop")
        queues = add_queued(connection, "noop", 4, 3)
        execute(
            connection,
            "update graphile_worker._private_job_queues set locked_by = 'graphile-worker-1',"
            " locked_at = now() where queue_name = 'q-1'",
        )
        connection.autocommit = False
        report = migrate(connection)
        connection.autocommit = True
        assert report.applied_kongtaskd == [8, 9]
        body = execute(
            connection,
            "select prosrc from pg_proc where proname = 'kongtaskd_claim'",
        )
        assert len(body) == 1 and "open_queues" not in body[0][0]
        execute(connection, "SET plan_cache_mode = force_generic_plan")
        claimed, more = Claimer(connection, [noop]).claim(10)
        assert sorted(claimed) == [q[0] for q in queues[1:]]
        assert more
        assert execute(
            connection,
            "select locked_by from graphile_worker._private_job_queues where queue_name = 'q-1'",
        ) == [("graphile-worker-1",)]
    finally:
        connection.close()
