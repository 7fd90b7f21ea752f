"""The framework recipes (examples/flask_app, fastapi_app, sqlalchemy_app), each run for real.

Per recipe: its schema.sql on a fresh migrated database; requests through Flask's test
client, the FastAPI ASGI app through httpx (lifespan included), or the script as a
process; a request that fails leaves neither its rows nor its job; then the recipe's own
kongtask.yaml runs the daemon once (DATABASE_URL, as the recipe says) and the handler's
writes prove each committed job ran exactly once.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from psycopg2.extensions import parse_dsn

from kongtaskd.dsn import connect
from kongtaskd.schema import migrate
from tests.support.daemon import query

pytestmark = pytest.mark.skipif(
    os.environ.get("KONGTASK_TEST_EMBEDDED", "") not in ("", "0"),
    reason="the recipes run in the local-PostgreSQL pass only (driver code, not server code)",
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def load(recipe: str, module: str) -> ModuleType:
    """The recipe's module under a unique name (every recipe has an app.py and jobs.py)."""
    path = EXAMPLES / recipe / f"{module}.py"
    spec = importlib.util.spec_from_file_location(f"recipe_{recipe}_{module}", path)
    assert spec is not None and spec.loader is not None
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    return loaded


def database_url(dsn: str) -> str:
    params = parse_dsn(dsn)
    return (
        f"postgresql://{params.get('user', 'postgres')}@{params.get('host', '127.0.0.1')}:"
        f"{params.get('port', '5432')}/{params['dbname']}"
    )


def prepared(dsn: str, recipe: str) -> str:
    conn = connect(dsn)
    try:
        migrate(conn)
    finally:
        conn.close()
    query(dsn, (EXAMPLES / recipe / "schema.sql").read_text())
    return database_url(dsn)


def environment(url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    env["DATABASE_URL"] = url
    return env


def run_daemon_once(recipe: str, url: str) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "kongtaskd",
            "-c",
            str(EXAMPLES / recipe / "kongtask.yaml"),
            "--once",
        ],
        env=environment(url),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr


def queued(dsn: str) -> list[tuple[object, ...]]:
    return query(
        dsn,
        "select t.identifier, j.payload::text from graphile_worker._private_jobs j "
        "join graphile_worker._private_tasks t on t.id = j.task_id order by j.id",
    )


def test_flask_recipe(fresh_dsn: str) -> None:
    url = prepared(fresh_dsn, "flask_app")
    client = load("flask_app", "app").create_app(url).test_client()

    first = client.post("/signups", json={"email": "ada@example.com"})
    assert first.status_code == 201, first.text
    second = client.post("/signups", json={"email": "grace@example.com"})
    assert second.status_code == 201, second.text
    duplicate = client.post("/signups", json={"email": "ada@example.com"})
    assert duplicate.status_code == 409, duplicate.text
    # The failed request's insert and its job rolled back together: two users, two jobs.
    assert [task for task, _ in queued(fresh_dsn)] == ["send_welcome", "send_welcome"]

    run_daemon_once("flask_app", url)
    sent = query(fresh_dsn, "select user_id, email from welcome_emails order by user_id")
    assert sent == [
        (first.json["user_id"], "ada@example.com"),
        (second.json["user_id"], "grace@example.com"),
    ]
    assert queued(fresh_dsn) == []


def test_fastapi_recipe(fresh_dsn: str) -> None:
    import httpx

    url = prepared(fresh_dsn, "fastapi_app")
    query(fresh_dsn, "insert into stock (item, available) values ('teapot', 3)")
    app = load("fastapi_app", "app").create_app(url)

    async def requests() -> tuple[httpx.Response, httpx.Response]:
        # The ASGI app itself, lifespan included (its asyncpg pool), as a server would run it.
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://recipe") as client:
                placed = await client.post("/orders", json={"item": "teapot", "quantity": 2})
                too_many = await client.post("/orders", json={"item": "teapot", "quantity": 2})
        return placed, too_many

    placed, too_many = asyncio.run(requests())
    assert placed.status_code == 201, placed.text
    assert too_many.status_code == 409, too_many.text
    # The refused order, its stock change and its job are gone; the first order is intact.
    assert query(fresh_dsn, "select count(*) from orders") == [(1,)]
    assert query(fresh_dsn, "select available from stock") == [(1,)]
    assert [task for task, _ in queued(fresh_dsn)] == ["ship_order"]

    run_daemon_once("fastapi_app", url)
    assert query(fresh_dsn, "select order_id from shipments") == [(placed.json()["order_id"],)]
    assert queued(fresh_dsn) == []


def test_sqlalchemy_recipe(fresh_dsn: str) -> None:
    url = prepared(fresh_dsn, "sqlalchemy_app")
    script = str(EXAMPLES / "sqlalchemy_app" / "report.py")

    def run(month: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, script, month],
            env=environment(url),
            capture_output=True,
            text=True,
            timeout=60,
        )

    requested = run("2030-01")
    assert requested.returncode == 0 and "queued" in requested.stdout, requested.stderr
    again = run("2030-01")
    assert again.returncode == 1 and "already requested" in again.stderr, again.stderr
    assert [task for task, _ in queued(fresh_dsn)] == ["build_report"]

    run_daemon_once("sqlalchemy_app", url)
    built = query(fresh_dsn, "select month, built_by_job is not null from report_requests")
    assert built == [("2030-01", True)]
    assert queued(fresh_dsn) == []
