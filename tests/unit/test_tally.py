"""The statistics recorder (tally.py) and the read side's pure helpers (stats.py)."""

from __future__ import annotations

import datetime
import json

import pytest

from kongtaskd import tally, tunables
from kongtaskd.stats import MinuteStats, percentile, summarise
from kongtaskd.tally import FAILED, RETRIED, SUCCEEDED, Tally, bucket_of, payload

MINUTE = 1_800_000_000  # a Unix time on a minute boundary


def test_buckets_are_fixed_and_increasing() -> None:
    assert list(tunables.STATS_BUCKETS) == sorted(set(tunables.STATS_BUCKETS))
    assert bucket_of(0.0) == 0
    assert bucket_of(0.001) == 0  # a bound belongs to its bucket ("at most")
    assert bucket_of(0.0011) == 1
    assert bucket_of(600.0) == len(tunables.STATS_BUCKETS) - 1
    assert bucket_of(601.0) == len(tunables.STATS_BUCKETS)  # the open last bucket


def test_outcomes_are_counted_per_task_per_minute() -> None:
    counts = Tally()
    counts.add("a", SUCCEEDED, 0.004, MINUTE + 1)
    counts.add("a", SUCCEEDED, 0.2, MINUTE + 59.9)
    counts.add("a", RETRIED, 1.0, MINUTE + 30)
    counts.add("a", FAILED, None, MINUTE + 61)  # next minute; a killed child: no duration
    counts.add("b", SUCCEEDED, 700.0, MINUTE + 2)
    rows = counts.take()
    assert not counts
    first = rows[(MINUTE, "a")]
    assert (first.succeeded, first.retried, first.failed) == (2, 1, 0)
    assert first.run_seconds_sum == pytest.approx(1.204)
    assert sum(first.histogram) == 3
    assert first.histogram[bucket_of(0.004)] == 1 and first.histogram[bucket_of(1.0)] == 1
    later = rows[(MINUTE + 60, "a")]
    assert (later.succeeded, later.retried, later.failed, sum(later.histogram)) == (0, 0, 1, 0)
    assert rows[(MINUTE, "b")].histogram[-1] == 1
    with pytest.raises(ValueError, match="unknown outcome kind 'lost'"):
        counts.add("a", "lost", None, MINUTE)


def test_a_failed_write_puts_the_counts_back_added_to_the_new_ones() -> None:
    counts = Tally()
    counts.add("a", SUCCEEDED, 0.01, MINUTE)
    taken = counts.take()
    counts.add("a", SUCCEEDED, 0.01, MINUTE + 5)
    counts.add("c", FAILED, 0.01, MINUTE)
    counts.restore(taken)
    rows = counts.take()
    assert rows[(MINUTE, "a")].succeeded == 2
    assert sum(rows[(MINUTE, "a")].histogram) == 2
    assert rows[(MINUTE, "c")].failed == 1


def test_payload_is_sorted_so_concurrent_daemons_lock_rows_in_one_order() -> None:
    counts = Tally()
    for task in ("z", "a", "m"):
        counts.add(task, SUCCEEDED, 0.5, MINUTE + 60)
        counts.add(task, SUCCEEDED, 0.5, MINUTE)
    rows = json.loads(payload(counts.take()))
    assert [(r["minute"], r["task"]) for r in rows] == sorted(
        (minute, task) for minute in (MINUTE, MINUTE + 60) for task in ("a", "m", "z")
    )
    assert set(rows[0]) == {
        "minute",
        "task",
        "succeeded",
        "failed",
        "retried",
        "seconds",
        "histogram",
    }
    assert len(rows[0]["histogram"]) == len(tally.BUCKETS) + 1


def test_the_tally_asks_for_an_early_beat_when_it_holds_many_rows() -> None:
    counts = Tally()
    for n in range(tunables.STATS_MAX_PENDING_ROWS - 1):
        counts.add(f"t{n}", SUCCEEDED, None, MINUTE)
    assert not counts.full()
    counts.add("one-more", SUCCEEDED, None, MINUTE)
    assert counts.full()


def test_percentiles_come_from_the_histogram_buckets() -> None:
    histogram = [0] * (len(tally.BUCKETS) + 1)
    assert percentile(histogram, 0.5) is None
    histogram[bucket_of(0.004)] = 90  # 90 jobs of at most 5 ms
    histogram[bucket_of(2.0)] = 10  # 10 of at most 2.5 s
    assert percentile(histogram, 0.5) == 0.005
    assert percentile(histogram, 0.9) == 0.005
    assert percentile(histogram, 0.95) == 2.5
    histogram[-1] = 100
    assert percentile(histogram, 0.99) == float("inf")


def test_summaries_add_the_minutes_of_each_task() -> None:
    at = datetime.datetime(2026, 12, 1, tzinfo=datetime.timezone.utc)
    empty = (0,) * (len(tally.BUCKETS) + 1)
    one = tuple(1 if i == 3 else 0 for i in range(len(empty)))
    rows = [
        MinuteStats(at, "b", 3, 1, 0, 0.03, tuple(3 * v for v in one)),
        MinuteStats(at, "a", 1, 0, 1, 0.02, tuple(2 * v for v in one)),
        MinuteStats(at + datetime.timedelta(minutes=1), "a", 2, 0, 0, 0.0, empty),
    ]
    a, b = summarise(rows)
    assert (a.task, a.succeeded, a.retried, a.attempts) == ("a", 3, 1, 4)
    assert a.failure_rate == pytest.approx(0.25)
    assert a.p50 == tally.BUCKETS[3] and a.mean_seconds == pytest.approx(0.01)
    assert (b.task, b.failed, b.failure_rate) == ("b", 1, 0.25)
