"""The SQLAlchemy recipe's handlers (kongtask.yaml: ``build_report: jobs:build_report``)."""

from __future__ import annotations

from typing import Any


def build_report(payload: dict[str, Any], ctx: Any) -> None:
    with ctx.connection.cursor() as cur:
        cur.execute(
            "update report_requests set built_by_job = %s where id = %s",
            [ctx.job.id, payload["request_id"]],
        )
