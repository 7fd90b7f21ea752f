"""The statistics recorder: outcomes counted per task per minute, in memory, between beats.

Pure policy, no I/O and no clock of its own: the supervisor passes in what a settle wrote
and the wall-clock time it wrote it (``add``); the heartbeat takes the rows (``take``),
writes them in its one statement (``sql/heartbeat.sql``, an upsert that adds into
``_kongtaskd_stats``), and gives them back if that write failed (``restore``), so a lost
connection loses no count. Nothing is written per job: a fleet completing 15,000 jobs a
second still writes one statement per heartbeat.

What is counted (docs/statistics.md): outcomes as the database took them (the settle
statement's answer, so a late outcome of a job a sweeper took away is not counted), in the
minute they were written (UTC, floored). ``succeeded``: completions; ``retried``: failed
attempts that will run again; ``failed``: failed attempts that were the job's last.
Durations (sum and a fixed-bucket histogram, ``tunables.STATS_BUCKETS``) of every attempt
whose handler reported one (a child that died or was killed reports none).
"""

from __future__ import annotations

import bisect
import json
from dataclasses import dataclass, field

from kongtaskd import tunables

SUCCEEDED = "succeeded"
FAILED = "failed"
RETRIED = "retried"
KINDS = (SUCCEEDED, FAILED, RETRIED)

#: Upper bounds (seconds) of the histogram's buckets; one more bucket holds the rest.
BUCKETS: tuple[float, ...] = tunables.STATS_BUCKETS


def bucket_of(seconds: float) -> int:
    """The histogram bucket of a duration: the first whose bound is >= it, or the last."""
    return bisect.bisect_left(BUCKETS, seconds)


@dataclass
class Row:
    """One task's counts in one minute."""

    succeeded: int = 0
    failed: int = 0
    retried: int = 0
    run_seconds_sum: float = 0.0
    histogram: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))

    def merge(self, other: Row) -> None:
        self.succeeded += other.succeeded
        self.failed += other.failed
        self.retried += other.retried
        self.run_seconds_sum += other.run_seconds_sum
        self.histogram = [a + b for a, b in zip(self.histogram, other.histogram, strict=True)]


#: (minute as Unix seconds, task identifier)
RowKey = tuple[int, str]


class Tally:
    """Counts not yet written, keyed by (minute, task)."""

    def __init__(self) -> None:
        self.rows: dict[RowKey, Row] = {}

    def __bool__(self) -> bool:
        return bool(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def add(self, task: str, kind: str, seconds: float | None, at: float) -> None:
        """One outcome of ``task`` written at Unix time ``at``; ``seconds``: its run time."""
        key = (int(at // 60) * 60, task)
        row = self.rows.get(key)
        if row is None:
            row = self.rows[key] = Row()
        if kind == SUCCEEDED:
            row.succeeded += 1
        elif kind == FAILED:
            row.failed += 1
        elif kind == RETRIED:
            row.retried += 1
        else:
            raise ValueError(f"unknown outcome kind {kind!r}; expected one of {KINDS}")
        if seconds is not None and seconds >= 0:
            row.run_seconds_sum += seconds
            row.histogram[bucket_of(seconds)] += 1

    def full(self) -> bool:
        """So many rows wait that the heartbeat should write them now."""
        return len(self.rows) >= tunables.STATS_MAX_PENDING_ROWS

    def take(self) -> dict[RowKey, Row]:
        """Every pending row; the tally is empty afterwards."""
        rows, self.rows = self.rows, {}
        return rows

    def restore(self, rows: dict[RowKey, Row]) -> None:
        """Rows whose write failed come back, added to whatever was counted meanwhile."""
        for key, row in rows.items():
            mine = self.rows.get(key)
            if mine is None:
                self.rows[key] = row
            else:
                mine.merge(row)


def payload(rows: dict[RowKey, Row]) -> str:
    """The rows as the JSON array ``sql/heartbeat.sql`` reads (``jsonb_to_recordset``),
    sorted by (minute, task): concurrent daemons then lock shared rows in the same order,
    so their upserts can wait for each other but never deadlock."""
    return json.dumps(
        [
            {
                "minute": minute,
                "task": task,
                "succeeded": row.succeeded,
                "failed": row.failed,
                "retried": row.retried,
                "seconds": row.run_seconds_sum,
                "histogram": row.histogram,
            }
            for (minute, task), row in sorted(rows.items())
        ],
        separators=(",", ":"),
    )
