"""The FastAPI recipe's handlers. ``async def`` runs in the child's event loop."""

from __future__ import annotations

from typing import Any


async def ship_order(payload: dict[str, Any], ctx: Any) -> None:
    # A real app would call the carrier here. The row commits exactly when the job succeeds.
    with ctx.connection.cursor() as cur:
        cur.execute(
            "insert into shipments (order_id, placed_at, job_id) values (%s, %s, %s)",
            [payload["order_id"], payload["placed_at"], ctx.job.id],
        )
