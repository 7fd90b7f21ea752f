"""The supervisor's job bookkeeping and dispatch policy: pure, no I/O, no clock of its own.

``JobBook`` holds what the supervisor knows about jobs between the database and the
children, and decides how much to claim and how to share it out:

* outcomes reported by children and not yet written (``outcomes``, see ``settle.Outcomes``);
* jobs claimed but not started (``prefetched``), handed back when they wait longer than
  ``PREFETCH_MAX_WAIT`` (``expire``) or when a drain starts (``release_prefetched``);
* the task of every job between its hand-over and the write of its outcome (``job_tasks``,
  for metrics and logs);
* moving averages of job durations, overall and per task (``ewma``), from which come the
  batch size (``batch_size``), the prefetch target (``prefetch_target``) and the claim
  size (``claim_size``);
* whether a claim is wanted (``want_claim``: a NOTIFY, a poll, a full claim, an outcome that
  may have unlocked a queue) and the next poll;
* the rows the claims read (``PrefetchedJob.row``), sent with a job while they are fresh
  (``deal``) and dropped when the session is lost (``forget_rows``): see "Inline rows".

Claims are sized to the idle children plus, only while jobs are short, a prefetch, so a
child that finishes gets its next ids at once. A claimed job never waits for a child while
another is idle (idle children are served first, best jobs first, shared out evenly by
``deal``). While jobs take well under a couple of milliseconds, a child is handed a small
batch of ids (about ``BATCH_TARGET_SECONDS`` of work), cut at a task that is slow or not
yet measured. Times are passed in (``now``), so tests drive the policy with real numbers.

Inline rows. A claimed job travels to its child with the row the claim read, and the child
skips its row load, while the claim is the ownership check a load would have been: the
lock was taken and committed on the session that is still the supervisor's, at most
``INLINE_ROW_MAX_AGE`` before the hand-over (``deal(now)``). That bound is the one a batch
already has: a batch's rows are loaded when the child receives it, and its last job starts
up to ``BATCH_TARGET_SECONDS`` later. A job that waits in hand longer (prefetched while
every child was busy) goes without its row: the sweep or ``force_unlock_workers`` may have
taken it back meanwhile, and the child's load (``locked_by = pool``) keeps such a job from
running. Rows read on a session that was lost since are dropped (``forget_rows``): after a
reconnect, maybe to a promoted standby, only that server's word counts.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import heapq
import math
from dataclasses import dataclass, field

from kongtaskd import tally, tunables
from kongtaskd.settle import FailedJob, Outcomes, SettleResult


@dataclass(frozen=True, slots=True)
class PrefetchedJob:
    """A job claimed for this pool that no child has started yet."""

    id: int
    task: str
    priority: int
    run_at: datetime.datetime
    claimed_at: float
    #: The row its claim read (``settle.ClaimedJob.row``): sent with it while fresh (``deal``).
    row: str | None = None


@dataclass(frozen=True)
class Settled:
    """What one round trip changed, for the supervisor to log and count."""

    #: Failures written, with their task (``""`` when unknown).
    failed: list[tuple[FailedJob, str]] = field(default_factory=list)
    #: Outcomes the database no longer let us write (a sweeper took the job away).
    lost: list[int] = field(default_factory=list)
    claimed: int = 0
    #: It carried at least one outcome.
    wrote: bool = False
    #: Every completion and failure written, as (task, tally kind, run seconds or None),
    #: for the statistics (``tally.Tally``).
    finished: list[tuple[str, str, float | None]] = field(default_factory=list)


def claim_order(job: PrefetchedJob) -> tuple[int, datetime.datetime, int]:
    """graphile-worker's order of ready jobs: priority, then run_at, then id."""
    return (job.priority, job.run_at, job.id)


def ewma(previous: float | None, value: float) -> float:
    """Moving average of job durations: recent jobs count most, one outlier does not rule."""
    return value if previous is None else 0.8 * previous + 0.2 * value


class JobBook:
    """Outcomes, prefetched jobs, durations and the claim/dispatch policy of one supervisor."""

    def __init__(self) -> None:
        self.outcomes = Outcomes()
        self.prefetched: collections.deque[PrefetchedJob] = collections.deque()
        #: Task of every job between its hand-over to a child and the write of its outcome.
        self.job_tasks: dict[int, str] = {}
        self.average_job_seconds: float | None = None
        #: The same per task: batches are cut at a task that is slow or not yet measured.
        self.task_seconds: dict[str, float] = {}
        self.want_claim = True
        self.next_poll = 0.0
        #: When the oldest outcome not yet written was first seen (``note_outcomes``).
        self.outcomes_since: float | None = None
        #: Tasks with a fleet-wide cap or rate: never batched (each job is one slot).
        self.capped: frozenset[str] = frozenset()
        #: A claim brought rows since the last ``forget_rows``: while none did, ``deal``
        #: and ``forget_rows`` skip their pass over the rows.
        self.rows_in_hand = False

    # ---- outcomes -------------------------------------------------------------------------
    def succeeded(self, job_id: int, task: str, seconds: float) -> None:
        self.outcomes.completed.append(job_id)
        self.outcomes.seconds[job_id] = seconds
        self.outcomes.tasks[job_id] = task
        self.record_duration(task, seconds)

    def failed(self, job_id: int, task: str, text: str, seconds: float | None = None) -> None:
        """A failed attempt (raised, timed out, its child died: then ``seconds`` is None)."""
        self.outcomes.failed[job_id] = text
        if seconds is not None:
            self.outcomes.seconds[job_id] = seconds
            self.record_duration(task, seconds)

    def hand_back(self, job_ids: list[int] | tuple[int, ...]) -> None:
        """Jobs no child started: back to the queue with the next write, attempt refunded."""
        self.outcomes.released.extend(job_ids)

    def skipped(self, job_id: int) -> None:
        """A child found the job gone (deleted meanwhile): nothing to write."""
        self.job_tasks.pop(job_id, None)

    def job_task(self, job_id: int) -> str:
        """The task of a job this book holds (``""`` when unknown)."""
        task = self.job_tasks.get(job_id)
        if task is not None:
            return task
        return next((job.task for job in self.prefetched if job.id == job_id), "")

    def record_duration(self, task: str, seconds: float) -> None:
        self.average_job_seconds = ewma(self.average_job_seconds, seconds)
        self.task_seconds[task] = ewma(self.task_seconds.get(task), seconds)

    def take_outcomes(self) -> Outcomes:
        """The outcomes in hand, for a write about to go out; those that arrive while it is
        in flight (``overlap.py``) collect afresh, for the next one."""
        outcomes = self.outcomes
        self.outcomes = Outcomes()
        self.outcomes_since = None
        return outcomes

    def restore_outcomes(self, outcomes: Outcomes, since: float | None) -> None:
        """A write that failed: its outcomes back in hand, ahead of the newer ones."""
        if outcomes:
            self.outcomes = outcomes.merged(self.outcomes)
            if since is not None:
                self.outcomes_since = since

    def known_ids(self) -> list[int]:
        """Every job this book holds (prefetched or with an outcome not yet written)."""
        outcomes = self.outcomes
        known = [job.id for job in self.prefetched]
        return known + outcomes.completed + list(outcomes.failed) + outcomes.released

    # ---- claims ---------------------------------------------------------------------------
    def poll(self, now: float, interval: float) -> None:
        """Without a NOTIFY, look for jobs every ``poll_interval`` anyway."""
        if now >= self.next_poll:
            self.want_claim = True
            self.next_poll = now + interval

    def batch_size(self) -> int:
        """Jobs per hand-over: 1, or while jobs take well under a millisecond or two, as
        many as fill ``BATCH_TARGET_SECONDS`` of work (capped). One batch costs the child a
        single row-load round trip and the supervisor a single pipe write."""
        average = self.average_job_seconds
        if average is None or average > tunables.BATCH_MAX_AVERAGE_JOB_SECONDS:
            return 1
        fill = int(tunables.BATCH_TARGET_SECONDS / max(average, 1e-6))
        return max(1, min(tunables.BATCH_MAX_JOBS, fill))

    def prefetch_target(self, concurrency: int) -> int:
        """How many claimed-but-unstarted jobs to keep in hand.

        Only when jobs are short: then a child frees up within milliseconds and a job in
        hand starts "soon". With long jobs a prefetched job would sit locked while another
        daemon could have run it, so then we claim only for idle children. Per child, a
        batch, and at least what it runs while outcomes wait to be written
        (``OUTCOME_WRITE_DELAY``): the next claim rides along with that write.
        """
        average = self.average_job_seconds
        if average is None or average > tunables.PREFETCH_MAX_AVERAGE_JOB_SECONDS:
            return 0
        batch = self.batch_size()
        if batch > 1:  # batched: outcomes come in bulk and are written at once
            return concurrency * batch
        return concurrency * max(1, math.ceil(tunables.OUTCOME_WRITE_DELAY / average))

    def claim_size(self, idle_children: int, concurrency: int) -> int:
        """Work for the idle children, plus the prefetch target, minus what is in hand."""
        wanted = idle_children * self.batch_size() + self.prefetch_target(concurrency)
        return max(0, wanted - len(self.prefetched))

    def claim_due(self, idle_children: int, concurrency: int, now: float) -> bool:
        """A claim is wanted and would ask for something, and no outcome waits for its
        write's time (the claim rides along then): the loop must not sleep."""
        if not (self.want_claim and self.claim_size(idle_children, concurrency) > 0):
            return False
        return not self.outcomes or self.write_due(now, idle_children, concurrency)

    # ---- when outcomes are written ----------------------------------------------------------
    def note_outcomes(self, now: float) -> None:
        """Start the write delay at the first loop turn that sees an outcome pending."""
        if self.outcomes and self.outcomes_since is None:
            self.outcomes_since = now

    def write_due(
        self, now: float, idle_children: int, concurrency: int, *, urgent: bool = False
    ) -> bool:
        """The outcomes in hand must be written this turn (``OUTCOME_WRITE_DELAY``).

        At once: ``urgent`` (draining, a capped task's slot came free), a failure or a
        hand-back (rare; the retry's schedule and the job's row go back at once), a child
        with nothing to run (the claim for it rides along), the prefetch below half its
        target (the claim that refills it must not wait), ``OUTCOME_WRITE_BATCH`` of them
        waiting, and always while jobs are batched (their outcomes come in bulk). Otherwise
        when the oldest has waited ``OUTCOME_WRITE_DELAY``.
        """
        outcomes = self.outcomes
        if not outcomes:
            return False
        if urgent or outcomes.failed or outcomes.released:
            return True
        if self.batch_size() > 1:
            # Jobs short enough to be batched: their outcomes arrive many per loop turn, and
            # waiting for more would only hold up the claim (measured: no-op throughput
            # dropped by a fifth). The delay pays where each turn brings one outcome.
            return True
        if idle_children > 0 and not self.prefetched:
            return True
        if len(self.prefetched) * 2 < self.prefetch_target(concurrency):
            return True
        if len(outcomes.completed) >= tunables.OUTCOME_WRITE_BATCH:
            return True
        since = self.outcomes_since if self.outcomes_since is not None else now
        return now >= since + tunables.OUTCOME_WRITE_DELAY

    def write_deadline(self) -> float | None:
        """When the outcomes in hand are due at the latest (None: none in hand)."""
        if not self.outcomes:
            return None
        if self.outcomes_since is None:
            return 0.0  # not noted yet: at once
        return self.outcomes_since + tunables.OUTCOME_WRITE_DELAY

    def settled(
        self,
        outcomes: Outcomes,
        want: int,
        result: SettleResult,
        task_names: dict[int, str],
        now: float,
    ) -> Settled:
        """Book what one round trip wrote and claimed; ``outcomes`` were its input, taken
        from the book (``take_outcomes``) before it went out."""
        failed = [(job, self.job_tasks.pop(job.id, "")) for job in result.failed]
        seconds = outcomes.seconds
        finished = [
            (self.job_tasks.pop(job_id, ""), tally.SUCCEEDED, seconds.get(job_id))
            for job_id in result.completed
        ]
        finished.extend(
            (task, tally.FAILED if job.permanent else tally.RETRIED, seconds.get(job.id))
            for job, task in failed
        )
        for job_id in result.released:
            self.job_tasks.pop(job_id, None)
        lost = sorted(outcomes.ids() - result.written())
        for job_id in lost:
            self.job_tasks.pop(job_id, None)
        claimed = [
            PrefetchedJob(
                job.id,
                task_names.get(job.task_id, str(job.task_id)),
                job.priority,
                job.run_at,
                now,
                job.row if job.task_id in task_names else None,  # it travels with the task
            )
            for job in result.claimed
        ]
        self.rows_in_hand = self.rows_in_hand or any(job.row is not None for job in claimed)
        if want:
            # A short claim means nothing more was ready for us, as this statement saw it,
            # unless it says that it left ready jobs behind.
            self.want_claim = len(claimed) >= want or result.more
            # Into the jobs in hand in graphile-worker's order, not behind them: a job of
            # better priority claimed while a backlog streams through must start next, not
            # after everything prefetched before it (under load that was ~70 ms of wait).
            claimed.sort(key=claim_order)
            if (
                self.prefetched
                and claimed
                and claim_order(claimed[0]) < claim_order(self.prefetched[-1])
            ):
                self.prefetched = collections.deque(
                    heapq.merge(self.prefetched, claimed, key=claim_order)
                )
            else:
                self.prefetched.extend(claimed)
        wrote = bool(outcomes)
        if wrote:
            # The claim in this statement could not see the queues these outcomes unlocked
            # (one snapshot): claim again next turn, or a queue's next job would wait for
            # the next poll.
            self.want_claim = True
        return Settled(
            failed=failed, lost=lost, claimed=len(claimed), wrote=wrote, finished=finished
        )

    # ---- dispatch -------------------------------------------------------------------------
    def deal(self, idle_children: int, now: float) -> list[list[PrefetchedJob]]:
        """Batches for up to ``idle_children`` children, best jobs first, shared out evenly
        (no child idles while another holds a batch). The caller assigns them in order.
        A job claimed more than ``INLINE_ROW_MAX_AGE`` before ``now`` goes without its row."""
        if not self.prefetched or idle_children <= 0:
            return []
        share = min(self.batch_size(), -(-len(self.prefetched) // idle_children))
        batches = []
        for _ in range(idle_children):
            batch = self.take_batch(share)
            if not batch:
                break
            batches.append(batch)
        if self.rows_in_hand:
            oldest = now - tunables.INLINE_ROW_MAX_AGE
            batches = [
                [
                    dataclasses.replace(job, row=None)
                    if job.row is not None and job.claimed_at < oldest
                    else job
                    for job in batch
                ]
                for batch in batches
            ]
        return batches

    def take_batch(self, most: int) -> list[PrefetchedJob]:
        """Up to ``most`` prefetched jobs for one child, about ``BATCH_TARGET_SECONDS`` of work.

        Judged per task: a job whose task is slow, or not yet measured, ends the batch, so
        nothing ever waits behind it while another child could have run it.
        """
        batch: list[PrefetchedJob] = []
        budget = tunables.BATCH_TARGET_SECONDS
        while self.prefetched and len(batch) < most:
            job = self.prefetched.popleft()
            batch.append(job)
            seconds = self.task_seconds.get(job.task)
            if seconds is None or seconds > tunables.BATCH_MAX_AVERAGE_JOB_SECONDS:
                break
            if job.task in self.capped:  # its slot is held while it waits in a batch
                break
            budget -= seconds
            if budget <= 0:
                break
        return batch

    def forget_rows(self) -> None:
        """The session that read the rows in hand is gone: those jobs go without them (the
        child loads each and checks that this pool still holds it)."""
        if not self.rows_in_hand:
            return
        self.rows_in_hand = False
        self.prefetched = collections.deque(
            dataclasses.replace(job, row=None) if job.row is not None else job
            for job in self.prefetched
        )

    def assigned(self, batch: list[PrefetchedJob]) -> None:
        """A child took the batch: its jobs' tasks are remembered until their outcomes."""
        for job in batch:
            self.job_tasks[job.id] = job.task

    # ---- prefetch expiry and hand-back ----------------------------------------------------
    def release_prefetched(self) -> int:
        """Give back jobs claimed but not started (attempt refunded on the next write)."""
        count = len(self.prefetched)
        self.hand_back([job.id for job in self.prefetched])
        self.prefetched.clear()
        return count

    def expire(self, now: float) -> int:
        """Jobs that waited too long in hand (children got slow) go back; how many did."""
        deadline = self.next_deadline()
        if deadline is None or now <= deadline:
            return 0
        return self.release_prefetched()

    def next_deadline(self) -> float | None:
        """When the oldest prefetched job must go back, if there is one."""
        if not self.prefetched:
            return None
        # The oldest is not always first: a better job claimed later is merged in ahead of
        # older ones (settled). The deque holds at most the prefetch target (concurrency x
        # BATCH_MAX_JOBS), so the scan is short.
        oldest = min(job.claimed_at for job in self.prefetched)
        return oldest + tunables.PREFETCH_MAX_WAIT
