"""The one action layer: retry, reschedule, fail permanently and remove jobs, by id or by
filter, in bounded batches, each call ending in one audit line (who, what, how many).

Every caller goes through here: the CLI's ``jobs retry|fail|remove|reschedule`` verbs, the
dashboard's buttons and bulk actions (:mod:`kongtaskd.web`), and later the Django admin.
There is no second implementation of an action anywhere.

Everything that changes jobs goes through graphile-worker's own SQL functions
(``reschedule_jobs``, ``permanently_fail_jobs``, ``complete_jobs``), which leave alone jobs
a worker holds: the actions are safe beside running kongtaskd daemons and Node workers alike.
Those functions treat a lock older than four hours as abandoned; a kongtaskd pool that is
still sending heartbeats is not, so jobs it holds are never handed to them.

Selections:

* :class:`Ids`: the jobs named. Ids that cannot be acted on (no such job, or a worker is
  running it) do not stop the others; the result names them.
* :class:`Matching`: every job matching a :class:`JobFilter` *as it was when the operator
  confirmed*: only ids up to ``upto`` (the highest id seen then), so jobs added since are
  not touched, and each job is re-checked against the filter in its batch (a failed job
  somebody retried meanwhile is not retried again).

Both are worked through in batches of :data:`~kongtaskd.tunables.ACTION_BATCH` ids, one
transaction each: 100k jobs never hold row locks on the table for long, and a batch that
fails leaves the ones before it done (the result says how far it got).

``cancel`` is an :class:`Action` on a selection like the others, done by
:func:`kongtaskd.cancel.cancel_jobs` batch by batch (running jobs included: their daemon
interrupts them). ``pause`` / ``resume`` act on tasks and named queues, not on jobs:
:func:`steer` does them through :mod:`kongtaskd.steer`, with the same audit line.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg2
import psycopg2.errors
from psycopg2 import sql
from psycopg2.extensions import connection as Connection
from psycopg2.extensions import cursor as Cursor

from kongtaskd import cancel, tunables
from kongtaskd import steer as steering
from kongtaskd.errors import DatabaseError
from kongtaskd.queries import statement

__all__ = [
    "STATES",
    "Action",
    "ActionResult",
    "Ids",
    "JobFilter",
    "Lock",
    "Matching",
    "Steer",
    "apply",
    "count_matching",
    "fail_jobs",
    "highest_id",
    "remove_jobs",
    "reschedule_jobs",
    "retry_jobs",
    "steer",
]

#: Where every action's audit line goes (one INFO record per call of :func:`apply`).
AUDIT_LOGGER = "kongtaskd.audit"

#: The job states a filter can ask for; the same rules as ``jobs list``'s STATE column
#: (first match wins): running (a worker holds it), failed (no attempts left), retrying
#: (failed before, will run again), scheduled (run_at ahead), ready.
STATES = ("ready", "scheduled", "running", "retrying", "failed")


class Action(enum.Enum):
    """What can be done to jobs; the value is the past tense used in messages."""

    RETRY = "retried"
    RESCHEDULE = "rescheduled"
    FAIL = "failed"
    REMOVE = "removed"
    CANCEL = "cancelled"

    @property
    def verb(self) -> str:
        return self.name.lower()


# --- plumbing shared with kongtaskd.admin ---------------------------------------------------


def execute(cur: Cursor, name: str, schema: str, params: Mapping[str, Any]) -> None:
    """Run ``sql/<name>.sql`` with the schema bound as an identifier; values as parameters."""
    cur.execute(statement(name, schema, cur.connection), params)


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


@contextmanager
def transaction(conn: Connection, schema: str, *, read_only: bool = False) -> Iterator[Cursor]:
    """One transaction (committed when the block succeeds); a missing schema is one line.

    Read-only work uses REPEATABLE READ so every query sees the same moment: the counts
    of ``status`` add up, and now() is the same in all of them.
    """
    try:
        with conn, conn.cursor() as cur:
            if read_only:
                cur.execute("set transaction isolation level repeatable read, read only")
            yield cur
    except (
        psycopg2.errors.UndefinedTable,
        psycopg2.errors.UndefinedFunction,
        psycopg2.errors.InvalidSchemaName,
    ) as error:
        raise DatabaseError(
            f"schema {schema} holds no graphile-worker queue ({first_line(error)}); "
            "run 'kongtaskd migrate' first, or pass the right --schema"
        ) from None


def has_table(cur: Cursor, schema: str, table: str) -> bool:
    """Whether ``schema.table`` exists (kongtaskd's tables are absent where only Node
    workers migrated, and newer ones are absent before their migration ran)."""
    name = sql.Identifier(schema, table).as_string(cur.connection)
    cur.execute("select to_regclass(%s) is not null", (name,))
    row = cur.fetchone()
    return bool(row and row[0])


def has_heartbeats(cur: Cursor, schema: str) -> bool:
    """Whether kongtaskd's heartbeat table exists (not in a schema only Node workers made)."""
    return has_table(cur, schema, "_kongtaskd_heartbeats")


def when(moment: dt.datetime | None) -> str:
    """A timestamp for messages: ISO 8601, UTC, to the second."""
    if moment is None:
        return ""
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _ids(ids: Sequence[int]) -> str:
    return ", ".join(str(i) for i in ids)


# --- selections -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class JobFilter:
    """Which jobs: every field None means "any". ``error`` is a case-insensitive substring
    of ``last_error``; ``state`` one of :data:`STATES`."""

    task: str | None = None
    queue: str | None = None
    state: str | None = None
    error: str | None = None
    key: str | None = None

    def __post_init__(self) -> None:
        if self.state is not None and self.state not in STATES:
            raise ValueError(f"state must be one of {', '.join(STATES)}, got {self.state!r}")

    def params(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "queue": self.queue,
            "state": self.state,
            # ILIKE pattern with the user's text taken literally.
            "error": None if self.error is None else "%" + _like_escape(self.error) + "%",
            "key": self.key,
        }

    def describe(self) -> str:
        parts = [f"{name}={value!r}" for name, value in dataclasses.asdict(self).items() if value]
        return " ".join(parts) if parts else "all jobs"


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


@dataclasses.dataclass(frozen=True)
class Ids:
    """The jobs with these ids."""

    ids: tuple[int, ...]

    def __post_init__(self) -> None:
        for job_id in self.ids:
            if isinstance(job_id, bool) or not isinstance(job_id, int) or job_id < 1:
                raise ValueError(f"job ids are positive integers, got {job_id!r}")

    def describe(self) -> str:
        shown = _ids(self.ids[:10])
        return f"ids {shown}" + (f" and {len(self.ids) - 10} more" if len(self.ids) > 10 else "")


@dataclasses.dataclass(frozen=True)
class Matching:
    """The jobs matching ``filter`` with ``id <= upto`` (the highest id when confirmed)."""

    filter: JobFilter
    upto: int

    def describe(self) -> str:
        return f"{self.filter.describe()} up to id {self.upto}"


Selection = Ids | Matching


def highest_id(conn: Connection, schema: str) -> int:
    """The highest job id now (0 for an empty table): the upper end of a :class:`Matching`."""
    with transaction(conn, schema, read_only=True) as cur:
        execute(cur, "action_highest_id", schema, {})
        row = cur.fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def count_matching(conn: Connection, schema: str, selection: Matching) -> int:
    """How many jobs ``selection`` holds right now: the exact number a confirm page shows.

    An exact count scans every job up to ``upto`` that the filter cannot exclude by
    index; it runs once per confirm page an operator asks for, never on a refresh.
    """
    with transaction(conn, schema, read_only=True) as cur:
        execute(cur, "action_count", schema, {**selection.filter.params(), "upto": selection.upto})
        row = cur.fetchone()
    return int(row[0]) if row else 0


# --- results --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Lock:
    locked_by: str | None
    locked_at: dt.datetime | None


@dataclasses.dataclass(frozen=True)
class ActionResult:
    """What one of the job actions did with the ids it was given."""

    #: Past tense of the action, for messages: retried, failed, removed, rescheduled.
    action: str
    changed: list[int]
    #: Changed, but a lock older than four hours stays (graphile-worker's functions do not
    #: release it): the job runs once the stale-lock sweep or force_unlock_workers frees it.
    still_locked: dict[int, Lock]
    #: Not changed: a worker is running the job.
    running: dict[int, Lock]
    #: Not changed: no such job.
    missing: list[int]
    #: Not changed for another reason, per id (cancel: already permanently failed).
    refused: dict[int, str] = dataclasses.field(default_factory=dict)
    #: One line per changed job saying what happened to it, when the action has more to say
    #: than "changed" (cancel: whether its holder interrupts it now). Empty otherwise.
    notes: dict[int, str] = dataclasses.field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return not self.running and not self.missing and not self.refused

    def summary(self) -> str | None:
        """One line for stdout about what was done, or None if nothing was."""
        if not self.changed:
            return None
        line = f"{self.action} {'job' if len(self.changed) == 1 else 'jobs'} {_ids(self.changed)}"
        if self.still_locked:
            notes = [
                f"job {job_id} keeps its stale lock by {lock.locked_by} from {when(lock.locked_at)}"
                for job_id, lock in sorted(self.still_locked.items())
            ]
            line += (
                f" ({'; '.join(notes)}: it runs once graphile-worker's four-hour sweep or "
                "force_unlock_workers releases it)"
            )
        return line

    def problems(self) -> str | None:
        """One line naming every id that was not acted on, or None."""
        parts = []
        if self.missing:
            verb = "does" if len(self.missing) == 1 else "do"
            noun = "job" if len(self.missing) == 1 else "jobs"
            parts.append(f"{noun} {_ids(self.missing)} {verb} not exist")
        for job_id, lock in sorted(self.running.items()):
            if lock.locked_by is None:
                # Released between the action and our look-up: it was running a moment ago.
                parts.append(f"job {job_id} was running a moment ago, not {self.action}; retry")
            else:
                parts.append(
                    f"job {job_id} is running (locked by {lock.locked_by} since "
                    f"{when(lock.locked_at)}), not {self.action}"
                )
        for job_id, reason in sorted(self.refused.items()):
            parts.append(f"job {job_id} {reason}, not {self.action}")
        return "; ".join(parts) if parts else None


# --- the statements of each action ---------------------------------------------------------

#: Action -> (sql file, whether a kept stale lock is worth reporting).
_STATEMENTS: dict[Action, tuple[str, bool]] = {
    Action.RETRY: ("admin_reschedule", True),
    Action.RESCHEDULE: ("admin_reschedule", True),
    Action.FAIL: ("admin_fail", False),
    Action.REMOVE: ("admin_remove", False),
}


def _action_params(
    action: Action,
    *,
    run_at: dt.datetime | None,
    priority: int | None,
    message: str | None,
) -> dict[str, Any]:
    if action is Action.RETRY:
        return {"run_now": True, "run_at": None, "priority": None, "attempts": 0}
    if action is Action.RESCHEDULE:
        if run_at is not None and (run_at.tzinfo is None or run_at.utcoffset() is None):
            raise ValueError(f"run_at must be timezone-aware, got naive {run_at.isoformat()}")
        return {"run_now": False, "run_at": run_at, "priority": priority, "attempts": None}
    if action is Action.FAIL:
        return {"message": message}
    return {}


def _act_on_batch(
    cur: Cursor,
    schema: str,
    action: Action,
    wanted: list[int],
    params: Mapping[str, Any],
    stale_after: float,
    heartbeats: bool,
) -> ActionResult:
    """One batch of ids, inside the caller's transaction."""
    name, stale_locks_matter = _STATEMENTS[action]
    held: set[int] = set()
    if wanted and heartbeats:
        execute(
            cur, "admin_held_by_live_pools", schema, {"ids": wanted, "stale_after": stale_after}
        )
        held = {row[0] for row in cur.fetchall()}
    execute(cur, name, schema, {**params, "ids": [i for i in wanted if i not in held]})
    done = cur.fetchall()
    changed_ids = {row[0] for row in done}
    rest = [i for i in wanted if i not in changed_ids]
    found: dict[int, Lock] = {}
    if rest:
        execute(cur, "admin_job_locks", schema, {"ids": rest})
        found = {row[0]: Lock(row[1], row[2]) for row in cur.fetchall()}
    return ActionResult(
        action=action.value,
        changed=[i for i in wanted if i in changed_ids],
        still_locked=(
            {row[0]: Lock(row[1], row[2]) for row in done if row[2] is not None}
            if stale_locks_matter
            else {}
        ),
        running={i: found[i] for i in rest if i in found},
        missing=[i for i in rest if i not in found],
    )


def _merge(action: Action, parts: Sequence[ActionResult]) -> ActionResult:
    still: dict[int, Lock] = {}
    running: dict[int, Lock] = {}
    refused: dict[int, str] = {}
    notes: dict[int, str] = {}
    for part in parts:
        still.update(part.still_locked)
        running.update(part.running)
        refused.update(part.refused)
        notes.update(part.notes)
    return ActionResult(
        action=action.value,
        changed=[i for part in parts for i in part.changed],
        still_locked=still,
        running=running,
        missing=[i for part in parts for i in part.missing],
        refused=refused,
        notes=notes,
    )


def _cancel_batch(
    conn: Connection, schema: str, ids: list[int], who: str, stale_after: float
) -> ActionResult:
    """One batch of a cancel, in one transaction: kongtaskd.cancel's one statement."""
    with transaction(conn, schema):
        done = cancel.cancel_jobs(conn, ids, by=who, schema=schema, stale_after=stale_after)
    return ActionResult(
        action=Action.CANCEL.value,
        changed=[job.id for job in done.cancelled],
        still_locked={},
        # Cancel acts on running jobs too: their holder interrupts them.
        running={},
        missing=list(done.missing),
        refused={job_id: "is already permanently failed" for job_id in done.already_failed},
        notes={job.id: job.describe() for job in done.cancelled},
    )


def _batches_of_ids(
    conn: Connection, schema: str, selection: Ids, batch: int
) -> Iterator[list[int]]:
    wanted = list(dict.fromkeys(selection.ids))
    for start in range(0, len(wanted), batch):
        yield wanted[start : start + batch]


def _batches_matching(
    conn: Connection, schema: str, selection: Matching, batch: int
) -> Iterator[list[int]]:
    """The matching ids in ascending order, ``batch`` at a time, each read afresh: a keyset
    walk (id > the last one seen) of the primary key, never an OFFSET."""
    after = 0
    params = {**selection.filter.params(), "upto": selection.upto, "limit": batch}
    while True:
        with transaction(conn, schema, read_only=True) as cur:
            execute(cur, "action_select_batch", schema, {**params, "after": after})
            ids = [row[0] for row in cur.fetchall()]
        if not ids:
            return
        yield ids
        after = ids[-1]
        if len(ids) < batch:
            return


def apply(
    conn: Connection,
    schema: str,
    action: Action,
    selection: Selection,
    *,
    who: str,
    run_at: dt.datetime | None = None,
    priority: int | None = None,
    message: str | None = None,
    stale_after: float = 60.0,
    batch: int = tunables.ACTION_BATCH,
) -> ActionResult:
    """Do ``action`` to every job of ``selection``, ``batch`` ids per transaction.

    ``who`` names the operator for the audit line (a basic-auth user, a token's name,
    ``cli:<os user>``). ``run_at``/``priority`` are reschedule's (None: keep), ``message``
    fail's (None: graphile-worker's 'Manually marked as failed').
    """
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    params = _action_params(action, run_at=run_at, priority=priority, message=message)
    if isinstance(selection, Ids):
        batches = _batches_of_ids(conn, schema, selection, batch)
    else:
        batches = _batches_matching(conn, schema, selection, batch)
    parts: list[ActionResult] = []
    heartbeats: bool | None = None
    try:
        for ids in batches:
            if action is Action.CANCEL:
                parts.append(_cancel_batch(conn, schema, ids, who, stale_after))
                continue
            with transaction(conn, schema) as cur:
                if heartbeats is None:
                    heartbeats = has_heartbeats(cur, schema)
                parts.append(
                    _act_on_batch(cur, schema, action, ids, params, stale_after, heartbeats)
                )
    finally:
        result = _merge(action, parts)
        _audit(who, action, selection, result, run_at=run_at, priority=priority)
    return result


class Steer(enum.Enum):
    """Flow control of tasks and named queues (not of jobs): fleet-wide, persisted."""

    PAUSE = "paused"
    RESUME = "resumed"

    @property
    def verb(self) -> str:
        return self.name.lower()


def steer(
    conn: Connection,
    schema: str,
    what: Steer,
    *,
    tasks: Sequence[str] = (),
    queues: Sequence[str] = (),
    who: str,
) -> steering.Changed:
    """Pause or resume ``tasks`` and named ``queues`` through :mod:`kongtaskd.steer`, in one
    transaction, and log the audit line (who, what, how many changed)."""
    with transaction(conn, schema):
        if what is Steer.PAUSE:
            changed = steering.pause(
                conn, tasks=list(tasks), queues=list(queues), schema=schema, by=who
            )
        else:
            changed = steering.resume(conn, tasks=list(tasks), queues=list(queues), schema=schema)
    targets = [f"task {name!r}" for name in tasks] + [f"queue {name!r}" for name in queues]
    logging.getLogger(AUDIT_LOGGER).info(
        "audit: %s %s %s: %d changed",
        who,
        what.verb,
        ", ".join(targets),
        len(changed.changed),
        extra={"audit_who": who, "audit_action": what.verb, "audit_changed": len(changed.changed)},
    )
    return changed


def _audit(
    who: str,
    action: Action,
    selection: Selection,
    result: ActionResult,
    *,
    run_at: dt.datetime | None,
    priority: int | None,
) -> None:
    extra = ""
    if action is Action.RESCHEDULE:
        kept_priority = "kept" if priority is None else priority
        extra = f" run_at={when(run_at) or 'kept'} priority={kept_priority}"
    logging.getLogger(AUDIT_LOGGER).info(
        "audit: %s %s %s: %d changed, %d running, %d missing%s",
        who,
        action.verb,
        selection.describe(),
        len(result.changed),
        len(result.running),
        len(result.missing),
        extra,
        extra={"audit_who": who, "audit_action": action.verb, "audit_changed": len(result.changed)},
    )


# --- the id-list forms the CLI and kongtaskd.admin's callers use ----------------------------


def retry_jobs(
    conn: Connection,
    schema: str,
    ids: Sequence[int],
    *,
    stale_after: float = 60.0,
    who: str = "api",
) -> ActionResult:
    """Run the jobs again now with their attempts reset to 0 (permanently failed ones too).

    ``last_error`` is kept: it is the record of why the job failed until it fails again or
    succeeds. Jobs a worker is running are left alone and reported in ``running``.
    """
    return apply(conn, schema, Action.RETRY, Ids(tuple(ids)), who=who, stale_after=stale_after)


def reschedule_jobs(
    conn: Connection,
    schema: str,
    ids: Sequence[int],
    *,
    run_at: dt.datetime | None = None,
    priority: int | None = None,
    stale_after: float = 60.0,
    who: str = "api",
) -> ActionResult:
    """Move the jobs to ``run_at`` and/or give them ``priority`` (None: keep as it is)."""
    return apply(
        conn,
        schema,
        Action.RESCHEDULE,
        Ids(tuple(ids)),
        who=who,
        run_at=run_at,
        priority=priority,
        stale_after=stale_after,
    )


def fail_jobs(
    conn: Connection,
    schema: str,
    ids: Sequence[int],
    *,
    message: str | None = None,
    stale_after: float = 60.0,
    who: str = "api",
) -> ActionResult:
    """Fail the jobs permanently (no more attempts); ``last_error`` = ``message``, or
    graphile-worker's 'Manually marked as failed'."""
    return apply(
        conn,
        schema,
        Action.FAIL,
        Ids(tuple(ids)),
        who=who,
        message=message,
        stale_after=stale_after,
    )


def remove_jobs(
    conn: Connection,
    schema: str,
    ids: Sequence[int],
    *,
    stale_after: float = 60.0,
    who: str = "api",
) -> ActionResult:
    """Delete the jobs (graphile-worker's ``complete_jobs``)."""
    return apply(conn, schema, Action.REMOVE, Ids(tuple(ids)), who=who, stale_after=stale_after)
