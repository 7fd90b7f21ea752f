"""The job as handlers and API callers see it: one row of ``_private_jobs`` with names resolved."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any


@dataclasses.dataclass(frozen=True)
class Job:
    """A job row. Field names follow graphile-worker's public ``jobs`` view, plus ``payload``."""

    id: int
    task_identifier: str
    queue_name: str | None
    payload: Any
    priority: int
    run_at: dt.datetime
    attempts: int
    max_attempts: int
    last_error: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
    key: str | None
    locked_at: dt.datetime | None
    locked_by: str | None
    revision: int
    #: The flags the job was added with, as a list of names (stored as ``{"flag": true}``).
    flags: list[str] | None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Job:
        """Build from a mapping with the view's column names; ``flags`` may be the jsonb object."""
        values = {f.name: row.get(f.name) for f in dataclasses.fields(cls)}
        flags = values["flags"]
        if isinstance(flags, dict):
            values["flags"] = sorted(flags)
        return cls(**values)
