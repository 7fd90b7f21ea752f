"""The supervisor's one round trip, typed: ``settle(outcomes, want) -> SettleResult``.

``sql/settle.sql`` writes the outcomes collected since the last loop turn and claims new
jobs in one statement (one transaction, one commit); a turn with no outcome runs
``sql/claim.sql``, the claim alone, with the same parameters and answer. The parameters are
positional (``$1..$14``) and the answer is a union of row kinds; this module is the only
place that knows either shape, so callers deal in named fields:

* the supervisor: ``Settle.settle(outcomes, want)`` every loop turn;
* a child whose supervisor is gone: ``Settle.record(outcomes)`` writes its outcome itself,
  ``Settle.hand_back(job_ids)`` returns unstarted jobs (no claim: ``want`` is ``NO_CLAIM``).

The statement's parameter types are declared once, here (``PARAM_TYPES``); ``queries.py``
PREPAREs it with them. No import of ``queries`` at run time: it imports this module.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kongtaskd import tunables

if TYPE_CHECKING:
    from kongtaskd.queries import Queries

#: The statement's name (``sql/settle.sql``) and the PostgreSQL types of ``$1..$11``, in
#: order: completed ids, failed ids, their error texts, handed-back ids, pool id, claimable
#: task ids, forbidden flags (or null), how many jobs to claim, the run seconds and the task
#: identifiers of the completed jobs (same order as their ids; null: unknown), whether to
#: keep a history record of each completed job (``keep_completed``,
#: ``_kongtaskd_completed_jobs``), the payload size up to which a claimed job's row comes
#: back with it (``ClaimedJob.row``; 0: never), and for how many claimed jobs at most;
#: whether a claim without outcomes may commit asynchronously (``Want.async_commit``).
NAME = "settle"
#: ``sql/claim.sql``: the same parameters and answer, for a turn without outcomes (the
#: outcome steps' executor set-up, ~0.4 ms, was a quarter of an idle claim's round trip).
CLAIM_NAME = "claim"
PARAM_TYPES = (
    "bigint[]",
    "bigint[]",
    "text[]",
    "bigint[]",
    "text",
    "integer[]",
    "text[]",
    "int",
    "float8[]",
    "text[]",
    "boolean",
    "int",
    "int",
    "boolean",
)


@dataclass
class Outcomes:
    """Outcomes reported by children and not yet written to the database."""

    completed: list[int] = field(default_factory=list)
    #: job id -> error text (``last_error``), in the order the failures arrived.
    failed: dict[int, str] = field(default_factory=dict)
    #: Claimed but never started: back to the queue, attempt refunded.
    released: list[int] = field(default_factory=list)
    #: job id -> how long its handler ran (completed and failed attempts that reported it):
    #: the history record's duration and start, and the statistics' run-time histogram.
    seconds: dict[int, float] = field(default_factory=dict)
    #: job id -> its task identifier, for the history record of a completed job.
    tasks: dict[int, str] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.completed or self.failed or self.released)

    def ids(self) -> set[int]:
        """Every job these outcomes are about."""
        return set(self.completed) | set(self.failed) | set(self.released)

    def merged(self, later: Outcomes) -> Outcomes:
        """These outcomes followed by ``later``'s (a write that failed, back in front of
        what arrived while it was in flight)."""
        failed = dict(self.failed)
        failed.update(later.failed)
        return Outcomes(
            completed=self.completed + later.completed,
            failed=failed,
            released=self.released + later.released,
            seconds={**self.seconds, **later.seconds},
            tasks={**self.tasks, **later.tasks},
        )


@dataclass(frozen=True, slots=True)
class Want:
    """What to claim in the same round trip: up to ``count`` jobs of these tasks."""

    count: int
    task_ids: list[int]
    forbidden_flags: list[str] | None = None
    #: How many of the jobs claimed (best first) should come with their row
    #: (``ClaimedJob.row``): the supervisor asks for all of them, since a job handed out
    #: from the hand within ``INLINE_ROW_MAX_AGE`` travels with its row too (jobbook).
    rows: int = 0
    #: A statement that carries no outcome commits without waiting for its WAL flush
    #: (``sql/settle.sql``'s ``commit_mode``: a database crash right after may forget the
    #: claim, and the job runs again). Only on a connection of our own: on a caller's
    #: (``run_jobs``) it would make the caller's whole transaction asynchronous.
    async_commit: bool = False


#: No claim at all (a child handing jobs back, the final flush).
NO_CLAIM = Want(0, [], None)


@dataclass(frozen=True, slots=True)
class ClaimedJob:
    """One job the statement locked for this pool."""

    id: int
    task_id: int
    priority: int
    run_at: datetime.datetime
    #: The row the child would load (``sql/load_job.sql``'s columns, the task identifier
    #: null: the supervisor sends it beside), as the JSON array text the statement made of
    #: it, never decoded here: the child decodes it and skips its row load. None: too big,
    #: or not visible to the statement (the child loads it).
    row: str | None = None


@dataclass(frozen=True, slots=True)
class FailedJob:
    """One failure written: the row stays, retried at ``run_at`` unless attempts ran out."""

    id: int
    attempts: int
    max_attempts: int
    run_at: datetime.datetime

    @property
    def permanent(self) -> bool:
        return self.attempts >= self.max_attempts


@dataclass(frozen=True)
class SettleResult:
    """What the statement did: outcomes it wrote (only rows this pool still held) and claims."""

    completed: list[int] = field(default_factory=list)
    failed: list[FailedJob] = field(default_factory=list)
    released: list[int] = field(default_factory=list)
    claimed: list[ClaimedJob] = field(default_factory=list)
    #: The claim left ready jobs behind (several were in one named queue): claim again.
    more: bool = False
    #: A rate-limited task ran out of tokens: its next one comes at this time (migration 6).
    wait_until: datetime.datetime | None = None

    def written(self) -> set[int]:
        """Ids whose outcome reached the database."""
        return set(self.completed) | {job.id for job in self.failed} | set(self.released)


def parse(rows: list[tuple[Any, ...]]) -> SettleResult:
    """The statement's rows ``(kind, id, task_id, priority, run_at, attempts, max_attempts,
    row)``."""
    completed: list[int] = []
    failed: list[FailedJob] = []
    released: list[int] = []
    claimed: list[ClaimedJob] = []
    more = False
    wait_until: datetime.datetime | None = None
    for kind, job_id, task_id, priority, run_at, attempts, max_attempts, row in rows:
        if kind == "claimed":
            claimed.append(ClaimedJob(job_id, task_id, priority, run_at, row))
        elif kind == "completed":
            completed.append(job_id)
        elif kind == "failed":
            failed.append(FailedJob(job_id, attempts, max_attempts, run_at))
        elif kind == "released":
            released.append(job_id)
        elif kind == "more":
            more = True
        elif kind == "wait":
            wait_until = run_at
        else:
            raise ValueError(f"sql/settle.sql returned a row of unknown kind {kind!r}")
    return SettleResult(completed, failed, released, claimed, more, wait_until)


class Settle:
    """The settle statement of one connection, for one pool."""

    def __init__(self, queries: Queries, pool_id: str) -> None:
        self.queries = queries
        self.pool_id = pool_id

    def settle(
        self,
        outcomes: Outcomes,
        want: Want,
        *,
        keep_completed: bool = False,
        inline_row_max_bytes: int = tunables.INLINE_ROW_MAX_BYTES,
    ) -> SettleResult:
        """Write ``outcomes`` and claim ``want.count`` jobs, in one statement (with no
        outcomes, ``sql/claim.sql``: the claim alone).

        ``keep_completed``: the same statement records each completed job in
        ``_kongtaskd_completed_jobs`` (the ``keep_completed`` config key is set).
        ``inline_row_max_bytes``: claimed jobs whose payload is at most this big come back
        with their row (``ClaimedJob.row``); 0 for none.
        """
        if not outcomes and want.count <= 0:
            return SettleResult()  # nothing to write, nothing wanted: no round trip
        failed_ids = list(outcomes.failed)
        rows = self.queries.fetchall(
            NAME if outcomes else CLAIM_NAME,
            outcomes.completed,
            failed_ids,
            [outcomes.failed[job_id] for job_id in failed_ids],
            outcomes.released,
            self.pool_id,
            want.task_ids,
            want.forbidden_flags,
            want.count,
            [outcomes.seconds.get(job_id) for job_id in outcomes.completed],
            [outcomes.tasks.get(job_id) for job_id in outcomes.completed],
            keep_completed,
            inline_row_max_bytes,
            want.rows,
            want.async_commit,
        )
        return parse(rows)

    def record(self, outcomes: Outcomes) -> SettleResult:
        """Write outcomes, claim nothing."""
        return self.settle(outcomes, NO_CLAIM)

    def hand_back(self, job_ids: list[int]) -> SettleResult:
        """Return jobs this pool claimed but never started (attempts refunded)."""
        return self.settle(Outcomes(released=list(job_ids)), NO_CLAIM)
