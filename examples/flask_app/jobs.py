"""The Flask recipe's handlers (kongtask.yaml: ``send_welcome: jobs:send_welcome``)."""

from __future__ import annotations

from typing import Any


def send_welcome(payload: dict[str, Any], ctx: Any) -> None:
    # A real app would send mail here. Recorded on ctx.connection, in the job's own
    # transaction: the row commits exactly when the job succeeds.
    with ctx.connection.cursor() as cur:
        cur.execute(
            "insert into welcome_emails (user_id, email, job_id) values (%s, %s, %s)",
            [payload["user_id"], payload["email"], ctx.job.id],
        )
