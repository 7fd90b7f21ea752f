"""FastAPI + asyncpg: enqueue in the request's transaction with ``add_job_async``.

    pip install 'kongtaskd[asyncpg]' fastapi uvicorn
    psql "$DATABASE_URL" -f examples/fastapi_app/schema.sql
    DATABASE_URL=postgresql://app@db/app uvicorn --app-dir examples/fastapi_app app:app
    DATABASE_URL=postgresql://app@db/app kongtaskd -c examples/fastapi_app/kongtask.yaml

POST /orders {"item": ..., "quantity": N} reserves stock, records the order and adds a
``ship_order`` job in ONE transaction (``conn.transaction()``). Not enough stock is a 409
raised inside the transaction: the order, the stock change and the job are all rolled back.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from fastapi import FastAPI, HTTPException, Request
from pydantic import BaseModel

import kongtaskd


class Order(BaseModel):
    item: str
    quantity: int


def create_app(database_url: str | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.pool = await asyncpg.create_pool(database_url or os.environ["DATABASE_URL"])
        yield
        await app.state.pool.close()

    app = FastAPI(lifespan=lifespan)

    @app.post("/orders", status_code=201)
    async def place_order(order: Order, request: Request) -> dict[str, int]:
        async with request.app.state.pool.acquire() as conn, conn.transaction():
            order_id = await conn.fetchval(
                "insert into orders (item, quantity) values ($1, $2) returning id",
                order.item,
                order.quantity,
            )
            # In the request's transaction: committed with the order, or not at all.
            await kongtaskd.add_job_async(
                conn,
                "ship_order",
                {"order_id": order_id, "placed_at": dt.datetime.now(dt.timezone.utc)},
            )
            left = await conn.fetchval(
                "update stock set available = available - $2 where item = $1 returning available",
                order.item,
                order.quantity,
            )
            if left is None or left < 0:
                # Raised inside conn.transaction(): everything above is rolled back.
                raise HTTPException(409, f"not enough {order.item} in stock")
        return {"order_id": order_id}

    return app


app = create_app() if "DATABASE_URL" in os.environ else None
