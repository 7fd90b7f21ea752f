"""The supervisor's claim statement (``kongtaskd/sql/settle.sql``), run as the supervisor runs it.

Each test prepares the real statement on a real connection with a generic plan and checks
what it takes against graphile-worker 0.18's rules, computed independently in Python from
the table: available, due, of our tasks, without a forbidden flag, in a free named queue,
at most one per named queue, ordered by (priority, run_at), skipping rows another
transaction holds. The last tests prove the point of the loose index scan: the work a
claim does stays flat however many jobs of other tasks, or for later, wait in the table.
"""

from __future__ import annotations

import datetime as dt
import random
import threading
from typing import Any

import psycopg2
import psycopg2.extensions
import pytest

from kongtaskd.queries import Queries
from tests.support import wait_for
from tests.support.plans import explain_analyze, index_scans, shared_buffers_hit

POOL = "pool-claim-test-1"
OTHER_POOL = "pool-claim-test-2"


@pytest.fixture()
def conn(conn: psycopg2.extensions.connection) -> psycopg2.extensions.connection:
    """The shared fixture's connection, planning as the supervisor's session does."""
    with conn.cursor() as cur:
        cur.execute("SET plan_cache_mode = force_generic_plan")
    return conn


def execute(conn: psycopg2.extensions.connection, text: str, params: Any = None) -> list[Any]:
    with conn.cursor() as cur:
        cur.execute(text, params)
        return cur.fetchall() if cur.description else []


def task_ids(conn: psycopg2.extensions.connection, *names: str) -> list[int]:
    execute(
        conn,
        "insert into graphile_worker._private_tasks (identifier) select unnest(%s::text[])"
        " on conflict do nothing",
        (list(names),),
    )
    rows = execute(
        conn,
        "select identifier, id from graphile_worker._private_tasks where identifier = any(%s)",
        (list(names),),
    )
    by_name = dict(rows)
    return [by_name[name] for name in names]


def add(
    conn: psycopg2.extensions.connection,
    task: str,
    *,
    priority: int = 0,
    seconds: float = -60.0,
    queue: str | None = None,
    flags: list[str] | None = None,
    attempts: int = 0,
    max_attempts: int = 25,
) -> int:
    """Insert one job row directly; `seconds` places run_at relative to now."""
    (task_id,) = task_ids(conn, task)
    queue_id = None
    if queue is not None:
        queue_id = execute(
            conn,
            "insert into graphile_worker._private_job_queues (queue_name) values (%s)"
            " on conflict (queue_name) do update set queue_name = excluded.queue_name"
            " returning id",
            (queue,),
        )[0][0]
    flag_json = None if flags is None else "{" + ",".join(f'"{f}": true' for f in flags) + "}"
    return int(
        execute(
            conn,
            "insert into graphile_worker._private_jobs"
            " (task_id, job_queue_id, payload, priority, run_at, attempts, max_attempts, flags)"
            " values (%s, %s, '{}', %s, now() + %s * interval '1 second', %s, %s, %s)"
            " returning id",
            (task_id, queue_id, priority, seconds, attempts, max_attempts, flag_json),
        )[0][0]
    )


class Claimer:
    """The claim statement, PREPAREd on one connection exactly as the supervisor does."""

    def __init__(self, conn: psycopg2.extensions.connection, tasks: list[int]) -> None:
        self.conn = conn
        self.tasks = tasks
        self.queries = Queries(conn, "graphile_worker", names=("settle",))

    def claim(
        self,
        size: int,
        *,
        completed: list[int] | None = None,
        forbidden: list[str] | None = None,
        pool: str = POOL,
    ) -> tuple[list[int], bool]:
        """Claimed ids in the order the statement returns them, and its 'more' signal."""
        rows = self.queries.fetchall(
            "settle",
            completed or [],
            [],
            [],
            [],
            pool,
            self.tasks,
            forbidden,
            size,
            [],
            [],
            False,
            0,
            0,
            False,
        )
        claimed = [row[1] for row in rows if row[0] == "claimed"]
        more = any(row[0] == "more" for row in rows)
        return claimed, more

    def plan(self, size: int) -> str:
        """EXPLAIN ANALYZE of one claim, rolled back, with the claim's plan already cached.

        The claim is a plpgsql function (kongtaskd_claim) whose first call in a session
        plans its query; the supervisor runs it thousands of times, so the steady state is
        what counts: a first, discarded run caches the plan.
        """
        self._explain(size)
        return self._explain(size)

    def _explain(self, size: int) -> str:
        return explain_analyze(
            self.conn,
            "execute kongtaskd_settle (" + ", ".join(["%s"] * 14) + ")",
            ([], [], [], [], POOL, self.tasks, None, size, [], [], False, 0, 0, False),
        )


def ready_in_order(conn: psycopg2.extensions.connection, tasks: list[int]) -> list[int]:
    """graphile-worker's claim order, computed without the claim: the rules in plain SQL."""
    rows = execute(
        conn,
        "select j.id from graphile_worker._private_jobs j"
        " left join graphile_worker._private_job_queues q on q.id = j.job_queue_id"
        " where j.locked_at is null and j.attempts < j.max_attempts and j.run_at <= now()"
        "   and j.task_id = any(%s) and (q.id is null or q.locked_at is null)"
        " order by j.priority, j.run_at",
        (tasks,),
    )
    return [row[0] for row in rows]


def test_claims_follow_priority_then_run_at_across_tasks_and_many_priorities(conn) -> None:
    rng = random.Random(7)
    ours = task_ids(conn, "alpha", "beta", "gamma")
    task_ids(conn, "stranger")
    # Many distinct priorities, so the walk stops early at priority boundaries, and jobs of a
    # task we do not run, and jobs for later, interleaved with ours.
    for n in range(300):
        add(
            conn,
            rng.choice(["alpha", "beta", "gamma", "stranger"]),
            priority=rng.randint(-20, 20),
            seconds=-1000 + n * 3 if rng.random() < 0.8 else 3600 + n,
        )
    expected = ready_in_order(conn, ours)
    assert len(expected) > 150
    claimer = Claimer(conn, ours)
    taken: list[int] = []
    for size in (1, 5, 17, 64, 3, 200):
        claimed, _ = claimer.claim(size)
        assert len(claimed) == min(size, len(expected) - len(taken))
        # Each claim takes the next `size` jobs of graphile-worker's order (returned in any
        # order: the supervisor sorts what it dispatches).
        taken.extend(sorted(claimed, key=expected.index))
    assert taken == expected
    locks = execute(
        conn,
        "select count(*) filter (where locked_by = %s and attempts = 1),"
        " count(*) filter (where locked_by is not null)"
        " from graphile_worker._private_jobs",
        (POOL,),
    )
    assert locks == [(len(expected), len(expected))]


def test_jobs_for_later_permanently_failed_or_flagged_are_never_claimed(conn) -> None:
    (noop,) = task_ids(conn, "noop")
    due = add(conn, "noop", seconds=-5)
    add(conn, "noop", seconds=30)
    add(conn, "noop", attempts=3, max_attempts=3)
    add(conn, "noop", flags=["slow"])
    flagged_ok = add(conn, "noop", flags=["fast"])
    claimer = Claimer(conn, [noop])
    claimed, _ = claimer.claim(10, forbidden=["slow"])
    assert sorted(claimed) == [due, flagged_ok]
    assert claimer.claim(10, forbidden=["slow"]) == ([], False)


def test_one_job_per_named_queue_and_none_from_a_held_queue(conn) -> None:
    (noop,) = task_ids(conn, "noop")
    a1 = add(conn, "noop", queue="a", seconds=-30)
    a2 = add(conn, "noop", queue="a", seconds=-20)
    b1 = add(conn, "noop", queue="b", seconds=-25)
    free = add(conn, "noop", seconds=-10)
    claimer = Claimer(conn, [noop])
    claimed, more = claimer.claim(10)
    assert sorted(claimed) == sorted([a1, b1, free])
    assert more, "a2 was ready but left behind: the supervisor must claim again"
    # Queue "a" is held by this pool now: a2 waits for a1's outcome.
    assert claimer.claim(10) == ([], False)
    claimed, _ = claimer.claim(10, completed=[a1])
    assert claimed == []  # one snapshot: the unlock is not visible to the same statement
    claimed, _ = claimer.claim(10)
    assert claimed == [a2]


def test_rows_another_transaction_holds_are_skipped_not_waited_for(conn, fresh_dsn) -> None:
    (noop,) = task_ids(conn, "noop")
    ids = [add(conn, "noop", seconds=-100 + n) for n in range(40)]
    holder = psycopg2.connect(fresh_dsn)
    try:
        with holder.cursor() as cur:
            # A concurrent claimer in the middle of its statement holds the best ten rows.
            cur.execute(
                "select id from graphile_worker._private_jobs where id = any(%s) for update",
                (ids[:10],),
            )
        claimer = Claimer(conn, [noop])
        claimed, more = claimer.claim(8)
        assert claimed == ids[10:18]
        claimed, more = claimer.claim(30)
        assert claimed == ids[18:40]
        # Rows someone else holds are not "more": claiming again at once would spin for as
        # long as a slow transaction holds them.
        assert not more
    finally:
        holder.rollback()
        holder.close()
    claimed, _ = claimer.claim(30)
    assert claimed == ids[:10]


def test_a_claim_of_zero_only_writes_outcomes(conn) -> None:
    (noop,) = task_ids(conn, "noop")
    job = add(conn, "noop")
    claimer = Claimer(conn, [noop])
    assert claimer.claim(1) == ([job], False)
    add(conn, "noop")
    assert claimer.claim(0, completed=[job]) == ([], False)
    assert execute(conn, "select count(*) from graphile_worker._private_jobs") == [(1,)]


@pytest.mark.parametrize("layout", ["other tasks ahead", "all of ours scheduled for later"])
def test_a_claim_does_not_walk_the_backlog(conn, layout: str) -> None:
    """Flat cost: 40,000 waiting jobs the claim cannot take must not be read one by one.

    graphile-worker's index (priority, run_at) puts them in front of ours; the claim used to
    touch a buffer per such row (tens of thousands). Counted in buffers, not milliseconds,
    so the assertion holds on a slow or busy machine and fails on a regression.
    """
    noop, other = task_ids(conn, "noop", "other")
    if layout == "other tasks ahead":
        backlog_task, backlog_at = other, "now() - interval '1 hour'"
    else:
        backlog_task, backlog_at = noop, "now() + interval '1 day'"
    execute(
        conn,
        "insert into graphile_worker._private_jobs (task_id, payload, run_at)"
        f" select %s, '{{}}', {backlog_at} + n * interval '1 ms'"
        " from generate_series(1, 40000) as n",
        (backlog_task,),
    )
    mine = [add(conn, "noop", seconds=-10 + n / 10) for n in range(20)]
    execute(conn, "vacuum analyze graphile_worker._private_jobs")
    claimer = Claimer(conn, [noop])
    scans_before = index_scans(conn, "_kongtaskd_jobs_ready")
    plan = claimer.plan(8)
    assert shared_buffers_hit(plan) < 400, plan
    # The claim's own plan is inside kongtaskd_claim, out of EXPLAIN's sight: the index's
    # scan counter shows that it is the one read.
    assert index_scans(conn, "_kongtaskd_jobs_ready") > scans_before
    claimed, _ = claimer.claim(8)
    assert claimed == mine[:8]


def test_claimed_rows_carry_what_the_supervisor_needs(conn) -> None:
    (noop,) = task_ids(conn, "noop")
    job = add(conn, "noop", priority=3, max_attempts=4)
    claimer = Claimer(conn, [noop])
    rows = claimer.queries.fetchall(
        "settle", [], [], [], [], POOL, [noop], None, 5, [], [], False, 0, 0, False
    )
    (row,) = [row for row in rows if row[0] == "claimed"]
    _kind, job_id, task_id, priority, run_at, attempts, max_attempts, _row = row
    assert (job_id, task_id, priority, attempts, max_attempts) == (job, noop, 3, 1, 4)
    assert isinstance(run_at, dt.datetime) and run_at.tzinfo is not None
    # Another pool cannot complete it: outcomes touch only rows this pool holds.
    claimer.claim(0, completed=[job], pool=OTHER_POOL)
    assert execute(conn, "select locked_by from graphile_worker._private_jobs") == [(POOL,)]


def test_jobs_and_queues_this_turn_hands_back_stay_out_of_its_claim(conn) -> None:
    """The claim runs before the turn's outcomes: what they free is claimed next turn.

    A hand-back (prefetch expired, child died before it saw the job) would be pointless if
    the same statement took the job straight back; and a queue that a completion frees
    gives its next job to the next claim, by anyone.
    """
    (noop,) = task_ids(conn, "noop")
    first = add(conn, "noop", seconds=-30)
    second = add(conn, "noop", seconds=-20)
    serial = add(conn, "noop", queue="serial", seconds=-10)
    behind = add(conn, "noop", queue="serial", seconds=-5)
    claimer = Claimer(conn, [noop])
    claimed, _ = claimer.claim(3)
    assert sorted(claimed) == sorted([first, second, serial])
    rows = claimer.queries.fetchall(
        "settle",
        [serial],
        [second],
        ["boom"],
        [first],
        POOL,
        [noop],
        None,
        10,
        [],
        [],
        False,
        0,
        0,
        False,
    )
    kinds = sorted((row[0], row[1]) for row in rows)
    assert kinds == [("completed", serial), ("failed", second), ("released", first)]
    stored = execute(
        conn,
        "select id, attempts, locked_by from graphile_worker._private_jobs order by id",
    )
    assert stored == [(first, 0, None), (second, 1, None), (behind, 0, None)]
    claimed, _ = claimer.claim(10)
    assert sorted(claimed) == sorted([first, behind])  # `second` waits for its back-off


def test_get_job_and_the_daemon_take_from_one_order(conn) -> None:
    """kongtaskd_get_job and the supervisor's statement are one claim: taking turns on the
    same table, they take graphile-worker's order between them, one job per named queue."""
    rng = random.Random(12)
    ours = task_ids(conn, "alpha", "beta")
    task_ids(conn, "stranger")
    for n in range(120):
        add(
            conn,
            rng.choice(["alpha", "beta", "stranger"]),
            priority=rng.randint(-3, 3),
            seconds=-1000 + n * 3 if rng.random() < 0.85 else 3600 + n,
        )
    expected = ready_in_order(conn, ours)
    claimer = Claimer(conn, ours)
    taken: list[int] = []
    while len(taken) < len(expected):
        (job_id,) = execute(
            conn,
            "select (graphile_worker.kongtaskd_get_job(%s, array['alpha', 'beta'])).id",
            (OTHER_POOL,),
        )[0]
        taken.append(job_id)
        claimed, _ = claimer.claim(rng.randint(1, 4))
        taken.extend(sorted(claimed, key=expected.index))
    assert taken[: len(expected)] == expected
    assert all(job_id is None for job_id in taken[len(expected) :])


def test_outcome_rows_unlocked_by_someone_else_mid_statement_do_not_break_the_turn(
    conn, fresh_dsn
) -> None:
    """An unlock of our rows that commits while the settle statement runs (an operator's
    force_unlock_workers, the four-hour sweep) frees them for the claim inside it. The claim
    may take them again; the outcome must then leave them alone, or the statement fails
    ("tuple to be deleted was already modified by an operation triggered by the current
    command") and the whole turn with it. The unlock is held open until the statement waits
    on it, so the commit lands after the statement's snapshot and before the claim's."""
    (noop,) = task_ids(conn, "noop")
    queued = add(conn, "noop", queue="serial", seconds=-20)
    plain = add(conn, "noop", seconds=-10)
    assert sorted(Claimer(conn, [noop]).claim(5)[0]) == sorted([queued, plain])
    unlocker = psycopg2.connect(fresh_dsn)
    settler = psycopg2.connect(fresh_dsn)
    settler.autocommit = True
    try:
        with unlocker.cursor() as cur:
            cur.execute("select graphile_worker.force_unlock_workers(array[%s])", (POOL,))
        claimer = Claimer(settler, [noop])
        (settler_pid,) = execute(settler, "select pg_backend_pid()")[0]
        result: dict[str, Any] = {}

        def settle() -> None:
            try:
                result["rows"] = claimer.queries.fetchall(
                    "settle",
                    [queued, plain],
                    [],
                    [],
                    [],
                    POOL,
                    [noop],
                    None,
                    5,
                    [],
                    [],
                    False,
                    0,
                    0,
                    False,
                )
            except psycopg2.Error as exc:
                result["error"] = exc

        thread = threading.Thread(target=settle)
        thread.start()
        wait_for(
            lambda: (
                execute(
                    conn,
                    "select wait_event_type = 'Lock' from pg_stat_activity where pid = %s",
                    (settler_pid,),
                )
                == [(True,)]
            ),
            what="the settle statement waiting on the unlocker's row lock",
        )
        unlocker.commit()
        thread.join(timeout=30)
        assert not thread.is_alive()
    finally:
        unlocker.close()
    try:
        assert "error" not in result, result.get("error")
        kinds = sorted((row[0], row[1]) for row in result["rows"])
        # Unlocked before the claim looked: taken again, and not completed by this turn.
        assert kinds == sorted([("claimed", queued), ("claimed", plain)])
        stored = execute(
            conn,
            "select id, attempts, locked_by from graphile_worker._private_jobs order by id",
        )
        assert stored == sorted([(queued, 2, POOL), (plain, 2, POOL)])
        assert execute(conn, "select locked_by from graphile_worker._private_job_queues") == [
            (POOL,)
        ]
    finally:
        settler.close()
