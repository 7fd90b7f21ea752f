"""Cancelling jobs, running or not: ``kongtaskd.cancel_job`` and ``kongtaskd jobs cancel``.

A cancelled job ends permanently failed with ``last_error`` = ``cancelled by <who> at
<time>`` (UTC, the database's clock) and is never retried; ``jobs retry`` revives it,
``jobs remove`` deletes it. All of it is one statement (``sql/cancel_jobs.sql``), safe
beside running workers:

* a job nobody holds: attempts = max_attempts and last_error set; run_at stays;
* a job somebody holds: the same, plus a record in ``_kongtaskd_cancels`` (kongtaskd
  migration 7) and a NOTIFY to the holder. A live kongtaskd daemon interrupts the handler
  (``ctx.cancelled`` at once, ``JobInterrupted`` after ``cancel_grace``, or for an
  ``async def`` handler its task cancelled; SIGKILL after the kill grace) and writes the
  cancel's failure; a daemon reconnecting when the NOTIFY went out reads the record when
  it is back. A graphile-worker worker, or a kongtaskd
  daemon that died, is not interrupted: the job runs on (graphile-worker) or is swept
  (kongtaskd's sweep of a dead pool), and whoever lets go of it leaves it permanently
  failed with the cancel message (the migration's trigger), unless its handler succeeded
  first, in which case the job is gone as usual.

Refused, changing nothing: ids that do not exist (a job that just finished is gone) and
jobs already permanently failed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import getpass
import socket
from collections.abc import Sequence
from typing import Any

from kongtaskd.drivers import quote_identifier, sync_target
from kongtaskd.errors import KongtaskError
from kongtaskd.queries import bind, source

__all__ = ["CancelError", "CancelResult", "Cancelled", "cancel_job", "cancel_jobs", "canceller"]


class CancelError(KongtaskError):
    """A job could not be cancelled (no such job, or already permanently failed)."""


@dataclasses.dataclass(frozen=True)
class Cancelled:
    """One cancelled job and who held it at that moment."""

    id: int
    #: The job's last_error from now on: 'cancelled by <who> at <time>'.
    message: str
    #: Who held the job (a kongtaskd pool id, a graphile-worker worker id), or None.
    locked_by: str | None = None
    locked_at: dt.datetime | None = None
    #: The holder is a kongtaskd daemon sending heartbeats: it interrupts the handler.
    interrupted: bool = False

    @property
    def running(self) -> bool:
        return self.locked_by is not None

    def describe(self) -> str:
        """One line: what happened to this job."""
        if not self.running:
            return f"cancelled job {self.id}: {self.message}"
        if self.interrupted:
            return (
                f"cancelled job {self.id}: {self.message}; it is running on {self.locked_by}, "
                "which interrupts it now"
            )
        return (
            f"cancelled job {self.id}: {self.message}; it is held by {self.locked_by} (a "
            f"graphile-worker worker or a kongtaskd daemon without a recent heartbeat, since "
            f"{self.locked_at.isoformat() if self.locked_at else '?'}), which is not "
            "interrupted: the job is never retried, and fails with this message when let go"
        )


@dataclasses.dataclass(frozen=True)
class CancelResult:
    """What ``cancel_jobs`` did with the ids it was given."""

    cancelled: list[Cancelled]
    #: Not changed: no such job (never existed, or finished and deleted).
    missing: list[int]
    #: Not changed: already permanently failed.
    already_failed: list[int]

    @property
    def complete(self) -> bool:
        return not self.missing and not self.already_failed

    def problems(self) -> str | None:
        """One line naming every id left alone, or None."""
        parts = []
        if self.missing:
            ids = ", ".join(str(i) for i in self.missing)
            noun, verb = ("job", "does") if len(self.missing) == 1 else ("jobs", "do")
            parts.append(f"{noun} {ids} {verb} not exist (finished and deleted, or never added)")
        for job_id in self.already_failed:
            parts.append(
                f"job {job_id} is already permanently failed, not cancelled "
                "('kongtaskd jobs retry' revives it, 'jobs remove' deletes it)"
            )
        return "; ".join(parts) if parts else None


def canceller() -> str:
    """Who cancels, by default: ``user@host`` of this process."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def _check_ids(ids: Sequence[int]) -> list[int]:
    for job_id in ids:
        if isinstance(job_id, bool) or not isinstance(job_id, int) or job_id < 1:
            raise ValueError(f"job ids are positive integers, got {job_id!r}")
    return list(dict.fromkeys(ids))


def _check_who(who: str | None) -> str:
    if who is None:
        return canceller()
    if not isinstance(who, str) or not who.strip():
        raise ValueError(f"by must be a non-empty string naming who cancels, got {who!r}")
    return who.strip()


def cancel_jobs(
    conn_or_dsn: Any,
    ids: Sequence[int],
    *,
    by: str | None = None,
    schema: str = "graphile_worker",
    stale_after: float = 60.0,
) -> CancelResult:
    """Cancel the jobs ``ids`` in one statement; see the module docstring.

    ``conn_or_dsn``: any connection ``kongtaskd.add_job`` takes (the statement runs in its
    transaction and is not committed) or a DSN (committed). ``by``: who cancels (default
    ``user@host``). ``stale_after``: a holder whose heartbeat is older is not counted on to
    interrupt the job (only the result's wording depends on it).
    """
    wanted = _check_ids(ids)
    who = _check_who(by)
    if not wanted:
        return CancelResult([], [], [])
    text = bind(source("cancel_jobs"), quote_identifier(schema), with_parameters=True)
    with sync_target(conn_or_dsn) as fetch:
        rows = fetch(text, {"ids": wanted, "who": who, "stale_after": float(stale_after)})
    by_id = {row["id"]: row for row in rows}
    cancelled: list[Cancelled] = []
    failed: list[int] = []
    for job_id in wanted:
        row = by_id.get(job_id)
        if row is None:
            continue
        if row["changed"]:
            cancelled.append(
                Cancelled(
                    id=job_id,
                    message=row["message"],
                    locked_by=row["locked_by"],
                    locked_at=row["locked_at"],
                    interrupted=bool(row["live"]),
                )
            )
        else:
            failed.append(job_id)
    return CancelResult(cancelled, [i for i in wanted if i not in by_id], failed)


def cancel_job(
    conn_or_dsn: Any, job_id: int, *, by: str | None = None, schema: str = "graphile_worker"
) -> Cancelled:
    """Cancel one job: it ends permanently failed with 'cancelled by <by> at <time>'.

    Returns what was cancelled and who held it; raises :class:`CancelError` (message naming
    the id) if the job does not exist or is already permanently failed.
    """
    result = cancel_jobs(conn_or_dsn, [job_id], by=by, schema=schema)
    problems = result.problems()
    if problems:
        raise CancelError(problems)
    return result.cancelled[0]
