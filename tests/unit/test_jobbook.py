"""The supervisor's dispatch policy (``kongtaskd.jobbook``), driven with real numbers.

No processes, no database: the book is pure, so each test feeds it durations, claims and
clock readings and checks what it decides against the tunables' documented rules.
"""

from __future__ import annotations

import datetime as dt

import pytest

from kongtaskd import tunables
from kongtaskd.jobbook import JobBook, PrefetchedJob, ewma
from kongtaskd.settle import ClaimedJob, FailedJob, Outcomes, SettleResult

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def job(
    job_id: int, task: str = "noop", priority: int = 0, claimed_at: float = 100.0
) -> PrefetchedJob:
    return PrefetchedJob(job_id, task, priority, T0 + dt.timedelta(seconds=job_id), claimed_at)


def book_with(average: float | None, **task_seconds: float) -> JobBook:
    book = JobBook()
    book.average_job_seconds = average
    book.task_seconds.update(task_seconds)
    return book


def test_ewma_weights_the_newest_duration_a_fifth() -> None:
    assert ewma(None, 0.5) == 0.5
    assert ewma(1.0, 2.0) == pytest.approx(1.2)
    average = None
    for _ in range(50):  # converges on a steady duration
        average = ewma(average, 0.003 if average is None else 0.001)
    assert average == pytest.approx(0.001, rel=1e-3)


def test_durations_feed_the_overall_and_the_per_task_average() -> None:
    book = JobBook()
    book.succeeded(1, "fast", 0.001)
    book.failed(2, "slow", "boom", 0.5)
    book.failed(3, "slow", "child died")  # no duration when the child died
    assert book.average_job_seconds == pytest.approx(0.8 * 0.001 + 0.2 * 0.5)
    assert book.task_seconds == {"fast": 0.001, "slow": 0.5}
    assert book.outcomes == Outcomes(
        completed=[1],
        failed={2: "boom", 3: "child died"},
        seconds={1: 0.001, 2: 0.5},
        tasks={1: "fast"},
    )


@pytest.mark.parametrize(
    ("average", "expected"),
    [
        (None, 1),  # nothing measured yet: one job per hand-over
        (0.003, 1),  # above BATCH_MAX_AVERAGE_JOB_SECONDS
        (0.002, 10),  # 0.02 s of work / 0.002 s
        (0.001, 20),
        (0.0001, tunables.BATCH_MAX_JOBS),  # 200 would fill the target: capped
    ],
)
def test_batch_size_fills_the_target_seconds(average: float | None, expected: int) -> None:
    assert book_with(average).batch_size() == expected


@pytest.mark.parametrize(
    ("average", "expected"),
    [
        (None, 0),
        (0.2, 0),
        (0.05, 4),
        (0.01, 4),
        # One job per hand-over, but two per child: what each runs during the write delay.
        (0.003, 4 * 2),
        (0.001, 4 * 20),
    ],
)
def test_prefetch_only_while_jobs_are_short(average: float | None, expected: int) -> None:
    assert book_with(average).prefetch_target(concurrency=4) == expected


def test_claim_size_is_idle_work_plus_prefetch_minus_what_is_in_hand() -> None:
    book = book_with(0.001)  # batches of 20, prefetch 4 * 20
    assert book.claim_size(idle_children=3, concurrency=4) == 3 * 20 + 80
    book.prefetched.extend(job(i) for i in range(100))
    assert book.claim_size(idle_children=3, concurrency=4) == 40
    book.prefetched.extend(job(i) for i in range(100, 200))
    assert book.claim_size(idle_children=3, concurrency=4) == 0  # never negative
    slow = book_with(1.0)
    assert slow.claim_size(idle_children=2, concurrency=4) == 2  # one each, no prefetch
    assert slow.claim_size(idle_children=0, concurrency=4) == 0


def test_a_claim_is_due_only_when_wanted_and_it_would_ask_for_something() -> None:
    book = book_with(1.0)
    assert book.want_claim  # a fresh book claims at once
    assert book.claim_due(idle_children=1, concurrency=1, now=0.0)
    assert not book.claim_due(idle_children=0, concurrency=1, now=0.0)  # nobody to run it
    book.want_claim = False
    assert not book.claim_due(idle_children=1, concurrency=1, now=0.0)


def test_poll_wants_a_claim_every_interval() -> None:
    book = JobBook()
    book.want_claim = False
    book.poll(now=10.0, interval=2.0)
    assert book.want_claim and book.next_poll == 12.0
    book.want_claim = False
    book.poll(now=11.9, interval=2.0)
    assert not book.want_claim and book.next_poll == 12.0
    book.poll(now=12.0, interval=2.0)
    assert book.want_claim and book.next_poll == 14.0


def test_deal_shares_jobs_evenly_among_idle_children() -> None:
    book = book_with(0.001, noop=0.001)  # batches of up to 20
    book.prefetched.extend(job(i) for i in range(1, 6))
    batches = book.deal(idle_children=3, now=0.0)
    assert [[j.id for j in b] for b in batches] == [[1, 2], [3, 4], [5]]
    assert not book.prefetched


def test_deal_gives_one_job_each_until_durations_are_known() -> None:
    book = JobBook()
    book.prefetched.extend(job(i) for i in range(1, 6))
    batches = book.deal(idle_children=2, now=0.0)
    assert [[j.id for j in b] for b in batches] == [[1], [2]]
    assert [j.id for j in book.prefetched] == [3, 4, 5]
    assert book.deal(idle_children=0, now=0.0) == []


def test_a_batch_ends_at_a_slow_or_unmeasured_task() -> None:
    book = book_with(0.001, noop=0.001, slow=0.5)
    book.prefetched.extend([job(1), job(2), job(3, "slow"), job(4), job(5, "new"), job(6), job(7)])
    assert [j.id for j in book.take_batch(20)] == [1, 2, 3]  # the slow one ends it
    assert [j.id for j in book.take_batch(20)] == [4, 5]  # so does one never measured
    assert [j.id for j in book.take_batch(1)] == [6]  # `most` caps it


def test_a_capped_task_is_never_batched() -> None:
    # A capped job in a batch would hold its fleet-wide slot while the jobs before it run.
    book = book_with(0.001, noop=0.001, capped=0.001)
    book.capped = frozenset({"capped"})
    book.prefetched.extend([job(1, "capped"), job(2, "capped"), job(3), job(4), job(5, "capped")])
    batches = [[j.id for j in book.take_batch(20)] for _ in range(3)]
    assert batches == [[1], [2], [3, 4, 5]]
    assert book.job_task(9) == ""


def test_a_batch_holds_about_the_target_seconds_of_work() -> None:
    per_job = 0.0015
    book = book_with(per_job, noop=per_job)
    book.prefetched.extend(job(i) for i in range(100))
    batch = book.take_batch(tunables.BATCH_MAX_JOBS)
    # Jobs are taken until the budget is spent: the job that spends it is the last one.
    expected = next(n for n in range(1, 100) if tunables.BATCH_TARGET_SECONDS - n * per_job <= 0)
    assert len(batch) == expected == 14


def test_prefetched_jobs_expire_after_the_max_wait() -> None:
    book = JobBook()
    assert book.next_deadline() is None
    book.prefetched.extend([job(1, claimed_at=100.0), job(2, claimed_at=100.5)])
    assert book.next_deadline() == 100.0 + tunables.PREFETCH_MAX_WAIT
    assert book.expire(now=100.0 + tunables.PREFETCH_MAX_WAIT) == 0  # not past it yet
    assert len(book.prefetched) == 2
    assert book.expire(now=100.0 + tunables.PREFETCH_MAX_WAIT + 0.01) == 2
    assert not book.prefetched and book.next_deadline() is None
    assert book.outcomes.released == [1, 2]  # handed back, attempt refunded on the write


def test_drain_hands_back_every_prefetched_job() -> None:
    book = JobBook()
    book.prefetched.extend(job(i) for i in (7, 8, 9))
    book.hand_back([3])
    assert book.release_prefetched() == 3
    assert book.release_prefetched() == 0
    assert book.outcomes.released == [3, 7, 8, 9]
    assert sorted(book.known_ids()) == [3, 7, 8, 9]


def test_settled_books_written_outcomes_lost_ones_and_claims() -> None:
    book = JobBook()
    book.assigned([job(1, "a"), job(2, "b"), job(3, "c"), job(4, "d")])
    book.succeeded(1, "a", 0.01)
    book.failed(2, "b", "boom", 0.01)
    book.hand_back([3])
    book.succeeded(4, "d", 0.01)
    outcomes = book.take_outcomes()
    result = SettleResult(
        completed=[1],
        failed=[FailedJob(2, attempts=3, max_attempts=3, run_at=T0)],
        released=[3],
        # job 4 was taken away by a sweeper meanwhile: not written
        claimed=[
            ClaimedJob(12, task_id=5, priority=1, run_at=T0),
            ClaimedJob(11, task_id=5, priority=0, run_at=T0 + dt.timedelta(seconds=1)),
            ClaimedJob(10, task_id=6, priority=0, run_at=T0 + dt.timedelta(seconds=1)),
        ],
    )
    settled = book.settled(outcomes, 3, result, {5: "five"}, now=50.0)
    assert not book.outcomes  # a fresh batch of outcomes starts
    assert [(f.id, f.permanent, task) for f, task in settled.failed] == [(2, True, "b")]
    assert settled.lost == [4]
    assert settled.claimed == 3 and settled.wrote
    assert book.job_tasks == {}  # every job with a written or lost outcome is forgotten
    # Best first: priority, then run_at, then id; unknown task ids keep their number.
    assert [(j.id, j.task, j.claimed_at) for j in book.prefetched] == [
        (10, "6", 50.0),
        (11, "five", 50.0),
        (12, "five", 50.0),
    ]
    assert book.want_claim


def test_settled_lists_what_the_statistics_count_only_outcomes_written() -> None:
    book = JobBook()
    book.assigned([job(n, "t") for n in (1, 2, 3, 4, 5)])
    book.succeeded(1, "t", 0.25)
    book.failed(2, "t", "boom", 0.5)  # will be retried
    book.failed(3, "t", "boom", 0.75)  # its last attempt
    book.failed(4, "t", "child died")  # no duration
    book.succeeded(5, "t", 1.0)  # taken away by a sweeper: not written, not counted
    result = SettleResult(
        completed=[1],
        failed=[
            FailedJob(2, attempts=1, max_attempts=3, run_at=T0),
            FailedJob(3, attempts=3, max_attempts=3, run_at=T0),
            FailedJob(4, attempts=1, max_attempts=3, run_at=T0),
        ],
    )
    settled = book.settled(book.take_outcomes(), 0, result, {}, now=1.0)
    assert settled.finished == [
        ("t", "succeeded", 0.25),
        ("t", "retried", 0.5),
        ("t", "failed", 0.75),
        ("t", "retried", None),
    ]


def test_a_short_claim_stops_claiming_unless_it_left_jobs_behind() -> None:
    book = JobBook()
    claimed = [ClaimedJob(1, 5, 0, T0)]
    book.settled(book.take_outcomes(), 4, SettleResult(claimed=claimed), {}, now=1.0)
    assert not book.want_claim  # asked for 4, got 1: nothing more was ready
    book.want_claim = True
    book.settled(book.take_outcomes(), 4, SettleResult(claimed=claimed, more=True), {}, now=1.0)
    assert book.want_claim  # a named queue held ready jobs back: claim again
    book.settled(book.take_outcomes(), 1, SettleResult(claimed=claimed), {}, now=1.0)
    assert book.want_claim  # a full claim: there may be more


def test_outcomes_written_without_a_claim_ask_for_the_next_claim() -> None:
    book = JobBook()
    book.want_claim = False
    book.succeeded(1, "a", 0.1)
    settled = book.settled(book.take_outcomes(), 0, SettleResult(completed=[1]), {}, now=1.0)
    assert settled.wrote and settled.lost == []
    assert book.want_claim  # its queue may have unlocked a job this snapshot could not see


def test_claimed_rows_go_with_their_jobs_while_the_claim_is_fresh() -> None:
    """A row vouches for ownership for INLINE_ROW_MAX_AGE after its claim: jobs dealt within
    it carry theirs, also from the hand; later ones go without (the child loads them and
    checks the lock). Nothing else about a job changes."""
    book = book_with(None)
    claimed = [ClaimedJob(1, 5, 0, T0, '[1, "noop"]'), ClaimedJob(2, 5, 0, T0, None)]
    claimed.append(ClaimedJob(3, 5, 0, T0, '[3, "noop"]'))
    claimed.append(ClaimedJob(4, 5, 0, T0, '[4, "noop"]'))
    book.settled(book.take_outcomes(), 4, SettleResult(claimed=claimed), {5: "noop"}, now=1.0)
    (batch,) = book.deal(1, now=1.0)
    assert [(j.id, j.row) for j in batch] == [(1, '[1, "noop"]')]
    (batch,) = book.deal(1, now=1.0 + tunables.INLINE_ROW_MAX_AGE / 2)  # from the hand
    assert [(j.id, j.row) for j in batch] == [(2, None)]
    (batch,) = book.deal(1, now=1.0 + tunables.INLINE_ROW_MAX_AGE)  # the last fresh moment
    assert [(j.id, j.row) for j in batch] == [(3, '[3, "noop"]')]
    (batch,) = book.deal(1, now=1.0 + tunables.INLINE_ROW_MAX_AGE * 1.01)
    assert [(j.id, j.row, j.claimed_at) for j in batch] == [(4, None, 1.0)]


def test_rows_are_forgotten_with_the_session_that_read_them() -> None:
    book = book_with(None)
    claimed = [ClaimedJob(1, 5, 0, T0, '[1, "noop"]'), ClaimedJob(2, 5, 0, T0, '[2, "noop"]')]
    book.settled(book.take_outcomes(), 2, SettleResult(claimed=claimed), {5: "noop"}, now=1.0)
    book.forget_rows()
    assert [(j.id, j.row) for j in book.prefetched] == [(1, None), (2, None)]
    assert [j.claimed_at for j in book.prefetched] == [1.0, 1.0]  # nothing else changes
    assert not book.rows_in_hand
    assert [(j.id, j.row) for j in book.deal(1, now=1.0)[0]] == [(1, None)]


def test_a_better_job_claimed_later_goes_ahead_of_the_jobs_in_hand() -> None:
    """Under load the book holds a prefetch of ordinary jobs; a job of better priority (or
    an earlier run_at) claimed meanwhile is dealt next, not after all of them."""
    book = book_with(0.0001, noop=0.0001)
    tasks = {5: "noop"}
    backlog = [ClaimedJob(i, 5, 0, T0 + dt.timedelta(seconds=i)) for i in range(1, 41)]
    book.settled(book.take_outcomes(), 40, SettleResult(claimed=backlog), tasks, now=1.0)
    urgent = ClaimedJob(99, 5, -1, T0 + dt.timedelta(seconds=100))
    later = ClaimedJob(98, 5, 0, T0 + dt.timedelta(seconds=100))
    book.settled(book.take_outcomes(), 2, SettleResult(claimed=[later, urgent]), tasks, now=2.0)
    order = [job.id for job in book.prefetched]
    assert order == [99, *range(1, 41), 98]
    assert book.deal(1, now=2.0)[0][0].id == 99
    # The expiry still counts from the oldest job in hand, wherever it now stands.
    assert book.next_deadline() == pytest.approx(1.0 + tunables.PREFETCH_MAX_WAIT)


# ---- when outcomes are written (OUTCOME_WRITE_DELAY) ---------------------------------------
def busy_book(in_hand: int) -> JobBook:
    """2 children, 3 ms jobs (prefetch target 4), one outcome in hand seen at t = 10."""
    book = book_with(0.003, noop=0.003)
    book.prefetched.extend(job(i) for i in range(in_hand))
    book.succeeded(1000, "noop", 0.003)
    book.note_outcomes(10.0)
    return book


def test_an_outcome_waits_while_every_child_has_work_then_goes() -> None:
    book = busy_book(in_hand=3)
    delay = tunables.OUTCOME_WRITE_DELAY
    assert not book.write_due(10.0, idle_children=0, concurrency=2)
    assert not book.write_due(10.0 + delay / 2, idle_children=0, concurrency=2)
    assert book.write_due(10.0 + delay, idle_children=0, concurrency=2)
    assert book.write_deadline() == pytest.approx(10.0 + delay)
    # A later outcome does not move the deadline: it counts from the oldest.
    book.succeeded(1001, "noop", 0.003)
    book.note_outcomes(10.004)
    assert book.write_deadline() == pytest.approx(10.0 + delay)


def test_an_outcome_goes_at_once_when_someone_needs_the_claim_or_the_write() -> None:
    # A child with nothing to run and nothing in hand: the claim for it rides along.
    assert busy_book(in_hand=0).write_due(10.0, idle_children=1, concurrency=2)
    # The prefetch below half its target: the claim that refills it must not wait.
    assert busy_book(in_hand=1).write_due(10.0, idle_children=0, concurrency=2)
    # Draining, a capped slot coming free.
    assert busy_book(in_hand=3).write_due(10.0, idle_children=0, concurrency=2, urgent=True)
    failed = busy_book(in_hand=3)
    failed.failed(1001, "noop", "boom", 0.003)
    assert failed.write_due(10.0, idle_children=0, concurrency=2)
    released = busy_book(in_hand=3)
    released.hand_back([1002])
    assert released.write_due(10.0, idle_children=0, concurrency=2)
    many = busy_book(in_hand=3)
    for job_id in range(2000, 2000 + tunables.OUTCOME_WRITE_BATCH):
        many.succeeded(job_id, "noop", 0.003)
    assert many.write_due(10.0, idle_children=0, concurrency=2)
    assert not JobBook().write_due(10.0, idle_children=1, concurrency=2)  # nothing to write
    batched = book_with(0.0005, noop=0.0005)  # batches of 32: outcomes come in bulk
    batched.prefetched.extend(job(i) for i in range(200))
    batched.succeeded(1000, "noop", 0.0005)
    batched.note_outcomes(10.0)
    assert batched.write_due(10.0, idle_children=0, concurrency=2)


def test_a_claim_waits_for_the_write_it_rides_along_with() -> None:
    book = busy_book(in_hand=3)  # 3 of a target of 4 in hand: a claim of 1 is wanted
    assert book.claim_size(idle_children=0, concurrency=2) == 1
    assert not book.claim_due(idle_children=0, concurrency=2, now=10.0)  # the loop may sleep
    assert book.claim_due(idle_children=0, concurrency=2, now=10.0 + tunables.OUTCOME_WRITE_DELAY)
    book.settled(book.take_outcomes(), 1, SettleResult(completed=[1000]), {}, 10.006)
    assert book.outcomes_since is None and book.write_deadline() is None
    assert book.claim_due(idle_children=0, concurrency=2, now=10.006)


def test_outcomes_in_flight_are_kept_apart_from_those_that_arrive_meanwhile() -> None:
    """overlap.py: outcomes read while the settle is out go with the next write; the written
    ones are booked from the statement's input, and a failed write goes back in front."""
    book = JobBook()
    book.assigned([job(1, "a"), job(2, "b"), job(3, "c")])
    book.succeeded(1, "a", 0.01)
    book.note_outcomes(10.0)
    in_flight = book.take_outcomes()
    assert in_flight.completed == [1] and not book.outcomes and book.outcomes_since is None
    book.failed(2, "b", "boom", 0.02)  # arrives while the statement is out
    settled = book.settled(in_flight, 0, SettleResult(completed=[1]), {}, now=11.0)
    assert settled.lost == [] and [task for task, *_ in settled.finished] == ["a"]
    assert book.outcomes.failed == {2: "boom"}  # still in hand, for the next write
    # That write fails: its outcomes go back ahead of those that came in meanwhile.
    second = book.take_outcomes()
    book.succeeded(3, "c", 0.03)
    book.restore_outcomes(second, since=12.0)
    assert book.outcomes.failed == {2: "boom"} and book.outcomes.completed == [3]
    assert book.outcomes.seconds == {2: 0.02, 3: 0.03} and book.outcomes.tasks == {3: "c"}
    assert book.outcomes_since == 12.0
    assert sorted(book.known_ids()) == [2, 3]


def test_merged_outcomes_keep_the_earlier_ones_first() -> None:
    earlier = Outcomes(completed=[1], failed={2: "x"}, released=[3], seconds={1: 0.1})
    later = Outcomes(completed=[4], failed={5: "y"}, released=[6], seconds={4: 0.4})
    merged = earlier.merged(later)
    assert merged.completed == [1, 4] and merged.released == [3, 6]
    assert list(merged.failed) == [2, 5] and merged.seconds == {1: 0.1, 4: 0.4}
    assert merged.ids() == {1, 2, 3, 4, 5, 6}
