"""add_job / add_job_async from every driver, in the caller's transaction, on real PostgreSQL.

Per driver: a committed job exists and notified; a rolled-back one leaves no row and no
NOTIFY (proved by a sentinel NOTIFY sent after the rollback on the same channel: NOTIFYs
are delivered in commit order, so one from the job would arrive first); a rolled-back
savepoint drops only its job; the returned Job and the error messages are the same as with
psycopg2. One test commits a job from each driver and runs one ``--once`` daemon over them.

The matrix runs in the local-PostgreSQL pass only: the embedded pass would repeat the same
SQL on another server version, where nothing driver-specific can differ.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import decimal
import json
import os
import select
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import (
    AbstractAsyncContextManager,
    AbstractContextManager,
    asynccontextmanager,
    contextmanager,
)
from pathlib import Path
from typing import Any

import asyncpg
import psycopg
import psycopg2
import psycopg2.extensions
import psycopg2.sql
import pytest
import sqlalchemy
from psycopg2.extensions import parse_dsn
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session, scoped_session, sessionmaker

import kongtaskd
from kongtaskd import Job, JobSpec
from tests.support.daemon import prepare_database, query, run_once, write_config

pytestmark = pytest.mark.skipif(
    os.environ.get("KONGTASK_TEST_EMBEDDED", "") not in ("", "0"),
    reason="the driver matrix runs in the local-PostgreSQL pass only",
)

DJANGO_ALIAS = "kongtaskd_drivers"

# --- handles: one open transaction on one driver ------------------------------------------


class SyncHandle:
    """``target`` (plus ``extra`` keyword arguments) is what the app passes to add_job."""

    target: Any = None
    extra: dict[str, Any] = {}

    def commit(self) -> None:
        raise NotImplementedError

    def rollback(self) -> None:
        raise NotImplementedError

    def savepoint(self) -> AbstractContextManager[None]:
        """A block in a savepoint that is rolled back at its end."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class Psycopg2Handle(SyncHandle):
    def __init__(self, dsn: str, cursor: bool) -> None:
        self.conn = psycopg2.connect(dsn)
        self.target = self.conn.cursor() if cursor else self.conn

    def commit(self) -> None:
        self.conn.commit()

    def rollback(self) -> None:
        self.conn.rollback()

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        with self.conn.cursor() as cur:
            cur.execute("savepoint kt_test")
            yield
            cur.execute("rollback to savepoint kt_test")

    def close(self) -> None:
        self.conn.close()


class PsycopgHandle(SyncHandle):
    def __init__(self, dsn: str, cursor: bool) -> None:
        self.conn = psycopg.connect(dsn)
        self.target = self.conn.cursor() if cursor else self.conn

    def commit(self) -> None:
        self.conn.commit()

    def rollback(self) -> None:
        self.conn.rollback()

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        with self.conn.transaction(force_rollback=True):
            yield

    def close(self) -> None:
        self.conn.close()


def sqlalchemy_url(dsn: str, driver: str) -> sqlalchemy.URL:
    params = parse_dsn(dsn)
    return sqlalchemy.URL.create(
        f"postgresql+{driver}",
        username=params.get("user"),
        host=params.get("host"),
        port=int(params.get("port", 5432)),
        database=params["dbname"],
    )


class SqlAlchemyHandle(SyncHandle):
    def __init__(self, dsn: str, driver: str, kind: str) -> None:
        self.engine = sqlalchemy.create_engine(sqlalchemy_url(dsn, driver))
        self.scoped: scoped_session[Session] | None = None
        if kind == "connection":
            self.conn: Any = self.engine.connect()
            self.target = self.conn
        elif kind == "session":
            self.conn = Session(self.engine)
            self.target = self.conn
        else:
            self.scoped = scoped_session(sessionmaker(self.engine))
            self.conn = self.scoped()
            self.target = self.scoped

    def commit(self) -> None:
        self.conn.commit()

    def rollback(self) -> None:
        self.conn.rollback()

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        nested = self.conn.begin_nested()
        yield
        nested.rollback()

    def close(self) -> None:
        if self.scoped is not None:
            self.scoped.remove()
        else:
            self.conn.close()
        self.engine.dispose()


def django_connections(dsn: str) -> Any:
    """Django's connection handler with an alias for the test database.

    Configures minimal settings when no one has; otherwise (another Django test in this
    process) adds the alias to the configured handler.
    """
    import django
    from django.conf import settings
    from django.db import connections

    params = parse_dsn(dsn)
    database = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": params["dbname"],
        "USER": params.get("user", ""),
        "HOST": params.get("host", ""),
        "PORT": params.get("port", ""),
    }
    if not settings.configured:
        settings.configure(DATABASES={"default": dict(database)}, USE_TZ=True)
        django.setup()
    if DJANGO_ALIAS in connections.settings:
        connections[DJANGO_ALIAS].close()
        del connections[DJANGO_ALIAS]
    configured = connections.configure_settings({"default": {}, DJANGO_ALIAS: database})
    connections.settings[DJANGO_ALIAS] = configured[DJANGO_ALIAS]
    return connections


class DjangoHandle(SyncHandle):
    def __init__(self, dsn: str, kind: str) -> None:
        from django.db import transaction
        from django.utils.connection import ConnectionProxy

        connections = django_connections(dsn)
        self.transaction = transaction
        if kind == "using":
            self.target, self.extra = None, {"using": DJANGO_ALIAS}
        elif kind == "proxy":  # what django.db.connection is, for our alias
            self.target = ConnectionProxy(connections, DJANGO_ALIAS)
        else:
            self.target = connections[DJANGO_ALIAS]
        self.connections = connections
        self.atomic = transaction.atomic(using=DJANGO_ALIAS)
        self.atomic.__enter__()

    def commit(self) -> None:
        self.atomic.__exit__(None, None, None)

    def rollback(self) -> None:
        self.transaction.set_rollback(True, using=DJANGO_ALIAS)
        self.atomic.__exit__(None, None, None)

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        with self.transaction.atomic(using=DJANGO_ALIAS):
            yield
            self.transaction.set_rollback(True, using=DJANGO_ALIAS)

    def close(self) -> None:
        if self.connections[DJANGO_ALIAS].in_atomic_block:
            self.rollback()
        self.connections[DJANGO_ALIAS].close()


SYNC: dict[str, Callable[[str], SyncHandle]] = {
    "psycopg2": lambda dsn: Psycopg2Handle(dsn, cursor=False),
    "psycopg2-cursor": lambda dsn: Psycopg2Handle(dsn, cursor=True),
    "psycopg": lambda dsn: PsycopgHandle(dsn, cursor=False),
    "psycopg-cursor": lambda dsn: PsycopgHandle(dsn, cursor=True),
    "sqlalchemy-psycopg2": lambda dsn: SqlAlchemyHandle(dsn, "psycopg2", "connection"),
    "sqlalchemy-psycopg": lambda dsn: SqlAlchemyHandle(dsn, "psycopg", "connection"),
    "sqlalchemy-session-psycopg2": lambda dsn: SqlAlchemyHandle(dsn, "psycopg2", "session"),
    "sqlalchemy-session-psycopg": lambda dsn: SqlAlchemyHandle(dsn, "psycopg", "session"),
    "sqlalchemy-scoped-session": lambda dsn: SqlAlchemyHandle(dsn, "psycopg", "scoped"),
    "django": lambda dsn: DjangoHandle(dsn, "wrapper"),
    "django-connection-proxy": lambda dsn: DjangoHandle(dsn, "proxy"),
    "django-using": lambda dsn: DjangoHandle(dsn, "using"),
}


class AsyncHandle:
    target: Any = None

    async def commit(self) -> None:
        raise NotImplementedError

    async def rollback(self) -> None:
        raise NotImplementedError

    def savepoint(self) -> AbstractAsyncContextManager[None]:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


class PsycopgAsyncHandle(AsyncHandle):
    @classmethod
    async def open(cls, dsn: str, cursor: bool) -> PsycopgAsyncHandle:
        handle = cls()
        handle.conn = await psycopg.AsyncConnection.connect(dsn)
        handle.target = handle.conn.cursor() if cursor else handle.conn
        return handle

    async def commit(self) -> None:
        await self.conn.commit()

    async def rollback(self) -> None:
        await self.conn.rollback()

    @asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        async with self.conn.transaction(force_rollback=True):
            yield

    async def close(self) -> None:
        await self.conn.close()


class AsyncpgHandle(AsyncHandle):
    """asyncpg autocommits outside ``transaction()``: the handle opens one, as apps do."""

    pool: asyncpg.Pool | None = None

    @classmethod
    async def open(cls, dsn: str, pooled: bool) -> AsyncpgHandle:
        options = asyncpg_options(dsn)
        handle = cls()
        if pooled:
            handle.pool = await asyncpg.create_pool(min_size=1, max_size=1, **options)
            handle.conn = await handle.pool.acquire()
        else:
            handle.conn = await asyncpg.connect(**options)
        handle.target = handle.conn
        handle.tx = handle.conn.transaction()
        await handle.tx.start()
        return handle

    async def commit(self) -> None:
        await self.tx.commit()

    async def rollback(self) -> None:
        await self.tx.rollback()

    @asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        nested = self.conn.transaction()  # inside a transaction: a savepoint
        await nested.start()
        yield
        await nested.rollback()

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.release(self.conn)
            await self.pool.close()
        else:
            await self.conn.close()


class SqlAlchemyAsyncHandle(AsyncHandle):
    @classmethod
    async def open(cls, dsn: str, driver: str, session: bool) -> SqlAlchemyAsyncHandle:
        handle = cls()
        handle.engine = create_async_engine(sqlalchemy_url(dsn, driver))
        if session:
            handle.conn = AsyncSession(handle.engine)
        else:
            handle.conn = await handle.engine.connect()
        handle.target = handle.conn
        return handle

    async def commit(self) -> None:
        await self.conn.commit()

    async def rollback(self) -> None:
        await self.conn.rollback()

    @asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        nested = await self.conn.begin_nested()
        yield
        await nested.rollback()

    async def close(self) -> None:
        await self.conn.close()
        await self.engine.dispose()


ASYNC: dict[str, Callable[[str], Awaitable[AsyncHandle]]] = {
    "psycopg-async": lambda dsn: PsycopgAsyncHandle.open(dsn, cursor=False),
    "psycopg-async-cursor": lambda dsn: PsycopgAsyncHandle.open(dsn, cursor=True),
    "asyncpg": lambda dsn: AsyncpgHandle.open(dsn, pooled=False),
    "asyncpg-pool": lambda dsn: AsyncpgHandle.open(dsn, pooled=True),
    "sqlalchemy-async-asyncpg": lambda dsn: SqlAlchemyAsyncHandle.open(dsn, "asyncpg", False),
    "sqlalchemy-async-psycopg": lambda dsn: SqlAlchemyAsyncHandle.open(dsn, "psycopg", False),
    "sqlalchemy-async-session-asyncpg": lambda dsn: SqlAlchemyAsyncHandle.open(
        dsn, "asyncpg", True
    ),
    "sqlalchemy-async-session-psycopg": lambda dsn: SqlAlchemyAsyncHandle.open(
        dsn, "psycopg", True
    ),
}

# --- fixtures and helpers -----------------------------------------------------------------


@pytest.fixture(scope="module")
def queue_dsn(dsn: str) -> str:
    prepare_database(dsn)  # the schema and the fixture handlers' kt_runs table
    return dsn


@contextmanager
def sync_handle(name: str, dsn: str) -> Iterator[SyncHandle]:
    handle = SYNC[name](dsn)
    try:
        yield handle
    finally:
        handle.close()


def run_async(name: str, dsn: str, body: Callable[[AsyncHandle], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        handle = await ASYNC[name](dsn)
        try:
            return await body(handle)
        finally:
            await handle.close()

    return asyncio.run(main())


def count_jobs(dsn: str, task: str) -> int:
    rows = query(
        dsn, "select count(*) from graphile_worker.jobs where task_identifier = %s", [task]
    )
    return int(rows[0][0])


class Listener:
    """LISTEN on graphile-worker's ``jobs:insert``; :meth:`until_sentinel` collects them."""

    CHANNEL = "jobs:insert"

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.conn = psycopg2.connect(dsn)
        self.conn.autocommit = True
        with self.conn.cursor() as cur:
            cur.execute(f'listen "{self.CHANNEL}"')

    def until_sentinel(self, timeout: float = 30.0) -> list[str]:
        """Send a sentinel NOTIFY now, return the payloads that arrived before it."""
        sentinel = f"kt-sentinel-{uuid.uuid4().hex}"
        query(self.dsn, "select pg_notify(%s, %s)", [self.CHANNEL, sentinel])
        seen: list[str] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            select.select([self.conn], [], [], 0.5)
            self.conn.poll()
            while self.conn.notifies:
                payload = self.conn.notifies.pop(0).payload
                if payload == sentinel:
                    return seen
                seen.append(payload)
        raise AssertionError(f"the sentinel NOTIFY did not arrive within {timeout}s")

    def close(self) -> None:
        self.conn.close()


@pytest.fixture()
def listener(queue_dsn: str) -> Iterator[Listener]:
    listening = Listener(queue_dsn)
    yield listening
    listening.close()


# --- the matrix ---------------------------------------------------------------------------


@pytest.mark.parametrize("driver", list(SYNC))
def test_sync_commit_adds_the_job_and_notifies(
    queue_dsn: str, listener: Listener, driver: str
) -> None:
    task = f"commit_{driver}"
    with sync_handle(driver, queue_dsn) as handle:
        job = kongtaskd.add_job(handle.target, task, {"n": 1}, **handle.extra)
        assert count_jobs(queue_dsn, task) == 0  # not committed yet: not visible elsewhere
        handle.commit()
    assert job.task_identifier == task
    assert count_jobs(queue_dsn, task) == 1
    assert any(json.loads(p).get("count") == 1 for p in listener.until_sentinel())


@pytest.mark.parametrize("driver", list(SYNC))
def test_sync_rollback_leaves_no_job_and_no_notify(
    queue_dsn: str, listener: Listener, driver: str
) -> None:
    task = f"rollback_{driver}"
    with sync_handle(driver, queue_dsn) as handle:
        kongtaskd.add_job(handle.target, task, **handle.extra)
        kongtaskd.add_jobs(handle.target, [JobSpec(task), JobSpec(task)], **handle.extra)
        handle.rollback()
    assert listener.until_sentinel() == []
    assert count_jobs(queue_dsn, task) == 0


@pytest.mark.parametrize("driver", list(SYNC))
def test_sync_rolled_back_savepoint_drops_only_its_job(queue_dsn: str, driver: str) -> None:
    kept, dropped = f"kept_{driver}", f"dropped_{driver}"
    with sync_handle(driver, queue_dsn) as handle:
        kongtaskd.add_job(handle.target, kept, **handle.extra)
        with handle.savepoint():
            kongtaskd.add_job(handle.target, dropped, **handle.extra)
        handle.commit()
    assert (count_jobs(queue_dsn, kept), count_jobs(queue_dsn, dropped)) == (1, 0)


@pytest.mark.parametrize("driver", list(ASYNC))
def test_async_commit_adds_the_job_and_notifies(
    queue_dsn: str, listener: Listener, driver: str
) -> None:
    task = f"commit_{driver}"

    async def body(handle: AsyncHandle) -> Job:
        job = await kongtaskd.add_job_async(handle.target, task, {"n": 1})
        assert count_jobs(queue_dsn, task) == 0
        await handle.commit()
        return job

    job = run_async(driver, queue_dsn, body)
    assert job.task_identifier == task
    assert count_jobs(queue_dsn, task) == 1
    assert any(json.loads(p).get("count") == 1 for p in listener.until_sentinel())


@pytest.mark.parametrize("driver", list(ASYNC))
def test_async_rollback_leaves_no_job_and_no_notify(
    queue_dsn: str, listener: Listener, driver: str
) -> None:
    task = f"rollback_{driver}"

    async def body(handle: AsyncHandle) -> None:
        await kongtaskd.add_job_async(handle.target, task)
        await kongtaskd.add_jobs_async(handle.target, [JobSpec(task), JobSpec(task)])
        await handle.rollback()

    run_async(driver, queue_dsn, body)
    assert listener.until_sentinel() == []
    assert count_jobs(queue_dsn, task) == 0


@pytest.mark.parametrize("driver", list(ASYNC))
def test_async_rolled_back_savepoint_drops_only_its_job(queue_dsn: str, driver: str) -> None:
    kept, dropped = f"kept_{driver}", f"dropped_{driver}"

    async def body(handle: AsyncHandle) -> None:
        await kongtaskd.add_job_async(handle.target, kept)
        async with handle.savepoint():
            await kongtaskd.add_job_async(handle.target, dropped)
        await handle.commit()

    run_async(driver, queue_dsn, body)
    assert (count_jobs(queue_dsn, kept), count_jobs(queue_dsn, dropped)) == (1, 0)


# --- same rows, same errors ---------------------------------------------------------------

RUN_AT = dt.datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=dt.timezone.utc)
RICH_PAYLOAD = {
    "at": dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.timezone(dt.timedelta(hours=2))),
    "day": dt.date(2030, 1, 2),
    "price": decimal.Decimal("19.990"),
    "id": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "text": "snow ☃ and 'quotes' %s %(x)s $1",
    "nested": [1, 2.5, None, True, {"k": "v"}],
}
RICH_DECODED = {
    "at": "2030-01-02T03:04:05+02:00",
    "day": "2030-01-02",
    "price": "19.990",
    "id": "12345678-1234-5678-1234-567812345678",
    "text": "snow ☃ and 'quotes' %s %(x)s $1",
    "nested": [1, 2.5, None, True, {"k": "v"}],
}


def comparable(job: Job, driver: str) -> dict[str, Any]:
    """The fields a driver could get wrong; ids and timestamps differ by nature."""
    return {
        "task": job.task_identifier,
        "payload": job.payload,
        "queue": job.queue_name,
        "run_at": job.run_at,
        "max_attempts": job.max_attempts,
        "priority": job.priority,
        "key": job.key.replace(driver, "D") if job.key else None,
        "flags": job.flags,
        "attempts": job.attempts,
        "locked": (job.locked_at, job.locked_by),
        "last_error": job.last_error,
    }


def expected_rows(driver: str) -> list[dict[str, Any]]:
    base = {"attempts": 0, "locked": (None, None), "last_error": None}
    return [
        # add_job with every option
        {
            **base,
            "task": f"rows_{driver}",
            "payload": RICH_DECODED,
            "queue": f"q_{driver}",
            "run_at": RUN_AT,
            "max_attempts": 3,
            "priority": -4,
            "key": "k-D",
            "flags": ["a", "b"],
        },
        # add_jobs: two specs (a new task and queue name registered by the same statement)
        {
            **base,
            "task": f"rows_batch_{driver}",
            "payload": {"price": "1.5"},
            "queue": f"qb_{driver}",
            "run_at": RUN_AT,
            "max_attempts": 25,
            "priority": 0,
            "key": "kb-D",
            "flags": None,
        },
        {
            **base,
            "task": f"rows_batch_{driver}",
            "payload": {},
            "queue": None,
            "run_at": RUN_AT,
            "max_attempts": 2,
            "priority": 7,
            "key": None,
            "flags": ["x"],
        },
        # remove_job returns the removed job as it was
        {
            **base,
            "task": f"rows_{driver}",
            "payload": RICH_DECODED,
            "queue": f"q_{driver}",
            "run_at": RUN_AT,
            "max_attempts": 3,
            "priority": -4,
            "key": "k-D",
            "flags": ["a", "b"],
        },
    ]


def specs(driver: str) -> list[JobSpec]:
    return [
        JobSpec(
            f"rows_batch_{driver}",
            {"price": decimal.Decimal("1.5")},
            queue_name=f"qb_{driver}",
            run_at=RUN_AT,
            job_key=f"kb-{driver}",
        ),
        JobSpec(f"rows_batch_{driver}", run_at=RUN_AT, max_attempts=2, priority=7, flags=["x"]),
    ]


OPTIONS: dict[str, Any] = {
    "run_at": RUN_AT,
    "max_attempts": 3,
    "priority": -4,
    "flags": ["b", "a"],
}

BAD_CALLS: list[tuple[tuple[Any, ...], dict[str, Any], type, str]] = [
    (("",), {}, ValueError, "identifier must not be empty"),
    (("t", {"a": [1, {"b": b"x"}]}), {}, TypeError, "payload['a'][1]['b'] is not JSON-serial"),
    (("t", {"s": {1}}), {}, TypeError, "payload['s'] is not JSON-serialisable: Object of type"),
    (("t",), {"run_at": dt.datetime(2030, 1, 1)}, ValueError, "run_at must be timezone-aware"),
]


def expected_errors() -> list[tuple[type, str]]:
    """What psycopg2 (the reference) raises for BAD_CALLS."""
    found = []
    for args, options, _, _ in BAD_CALLS:
        with pytest.raises(Exception) as caught:
            kongtaskd.add_job("host=/nonexistent", *args, **options)
        found.append((type(caught.value), str(caught.value)))
    return found


@pytest.mark.parametrize("driver", list(SYNC))
def test_sync_same_rows_and_errors(queue_dsn: str, driver: str) -> None:
    with sync_handle(driver, queue_dsn) as handle:
        target, extra = handle.target, handle.extra
        added = kongtaskd.add_job(
            target,
            f"rows_{driver}",
            RICH_PAYLOAD,
            queue_name=f"q_{driver}",
            job_key=f"k-{driver}",
            **OPTIONS,
            **extra,
        )
        batch = kongtaskd.add_jobs(target, specs(driver), **extra)
        removed = kongtaskd.remove_job(target, f"k-{driver}", **extra)
        assert kongtaskd.remove_job(target, f"k-{driver}", **extra) is None
        got = [comparable(job, driver) for job in (added, *batch, removed)]
        errors = []
        for (args, options, kind, message), reference in zip(
            BAD_CALLS, expected_errors(), strict=True
        ):
            with pytest.raises(kind) as caught:
                kongtaskd.add_job(target, *args, **options, **extra)
            assert str(caught.value).startswith(message), str(caught.value)
            errors.append((type(caught.value), str(caught.value)) == reference)
        handle.rollback()
    assert got[0] == expected_rows(driver)[0]
    assert sorted(got[1:3], key=lambda r: r["priority"]) == expected_rows(driver)[1:3]
    assert got[3] == expected_rows(driver)[3]
    assert removed is not None and removed.id == added.id
    assert all(errors)


@pytest.mark.parametrize("driver", list(ASYNC))
def test_async_same_rows_and_errors(queue_dsn: str, driver: str) -> None:
    async def body(handle: AsyncHandle) -> tuple[list[Job], list[bool]]:
        target = handle.target
        added = await kongtaskd.add_job_async(
            target,
            f"rows_{driver}",
            RICH_PAYLOAD,
            queue_name=f"q_{driver}",
            job_key=f"k-{driver}",
            **OPTIONS,
        )
        batch = await kongtaskd.add_jobs_async(target, specs(driver))
        removed = await kongtaskd.remove_job_async(target, f"k-{driver}")
        assert removed is not None
        assert await kongtaskd.remove_job_async(target, f"k-{driver}") is None
        errors = []
        for (args, options, kind, message), reference in zip(
            BAD_CALLS, expected_errors(), strict=True
        ):
            with pytest.raises(kind) as caught:
                await kongtaskd.add_job_async(target, *args, **options)
            assert str(caught.value).startswith(message), str(caught.value)
            errors.append((type(caught.value), str(caught.value)) == reference)
        await handle.rollback()
        return [added, *batch, removed], errors

    jobs, errors = run_async(driver, queue_dsn, body)
    got = [comparable(job, driver) for job in jobs]
    assert got[0] == expected_rows(driver)[0]
    assert sorted(got[1:3], key=lambda r: r["priority"]) == expected_rows(driver)[1:3]
    assert got[3] == expected_rows(driver)[3]
    assert jobs[3].id == jobs[0].id
    assert all(errors)


# --- the daemon runs what every driver committed ------------------------------------------


def test_committed_jobs_from_every_driver_run_in_a_daemon(queue_dsn: str, tmp_path: Path) -> None:
    for driver in SYNC:
        with sync_handle(driver, queue_dsn) as handle:
            payload = {"driver": driver, "price": decimal.Decimal("2.50"), "day": RUN_AT.date()}
            kongtaskd.add_job(handle.target, "remember", payload, **handle.extra)
            handle.commit()
    for driver in ASYNC:

        async def body(handle: AsyncHandle, driver: str = driver) -> None:
            payload = {"driver": driver, "price": decimal.Decimal("2.50"), "day": RUN_AT.date()}
            await kongtaskd.add_job_async(handle.target, "remember", payload)
            await handle.commit()

        run_async(driver, queue_dsn, body)
    done = run_once(write_config(tmp_path, queue_dsn))
    assert done.returncode == 0, done.stderr
    rows = query(queue_dsn, "select payload::text from public.kt_runs where task = 'remember'")
    ran = sorted(json.loads(payload)["driver"] for (payload,) in rows)
    assert ran == sorted([*SYNC, *ASYNC])
    assert {json.loads(p)["price"] for (p,) in rows} == {"2.50"}
    assert count_jobs(queue_dsn, "remember") == 0


# --- what is refused ----------------------------------------------------------------------


def test_unsupported_objects_get_a_type_error_naming_what_is_accepted(queue_dsn: str) -> None:
    with pytest.raises(TypeError, match=r"^conn_or_dsn must be a psycopg2 or psycopg 3 .* got "):
        kongtaskd.add_job(object(), "t")
    engine = sqlalchemy.create_engine(sqlalchemy_url(queue_dsn, "psycopg"))
    with pytest.raises(TypeError, match=r"an Engine has no transaction: pass engine.begin"):
        kongtaskd.add_job(engine, "t")
    engine.dispose()
    sqlite = sqlalchemy.create_engine("sqlite://")
    with sqlite.connect() as conn, pytest.raises(TypeError, match="to sqlite, not PostgreSQL"):
        kongtaskd.add_job(conn, "t")
    with pytest.raises(TypeError, match="pass either conn_or_dsn or using="):
        kongtaskd.add_job(queue_dsn, "t", using="default")
    with pytest.raises(TypeError, match=r"^conn_or_dsn must be a psycopg2"):
        kongtaskd.add_jobs(object(), [])  # an empty batch still checks what it was given

    async def wrong_way_round() -> None:
        conn = await psycopg.AsyncConnection.connect(queue_dsn)
        try:
            with pytest.raises(TypeError, match=r"it is async: use await kongtaskd.add_job_async"):
                kongtaskd.add_job(conn, "t")
        finally:
            await conn.close()
        pool = await asyncpg.create_pool(dsn=None, **asyncpg_options(queue_dsn), min_size=1)
        try:
            with pytest.raises(TypeError, match=r"pass a connection from pool.acquire\(\)"):
                await kongtaskd.add_job_async(pool, "t")
        finally:
            await pool.close()
        with pytest.raises(TypeError, match=r"it is synchronous: use kongtaskd.add_job"):
            await kongtaskd.add_job_async(queue_dsn, "t")
        with pytest.raises(TypeError, match=r"^conn_or_dsn must be a psycopg 3 AsyncConnection"):
            await kongtaskd.add_job_async(42, "t")
        with pytest.raises(TypeError, match=r"^conn_or_dsn must be a psycopg 3 AsyncConnection"):
            await kongtaskd.add_jobs_async(42, [])

    asyncio.run(wrong_way_round())
    assert count_jobs(queue_dsn, "t") == 0


def asyncpg_options(dsn: str) -> dict[str, Any]:
    params = parse_dsn(dsn)
    return {
        "host": params.get("host"),
        "port": int(params.get("port", 5432)),
        "user": params.get("user"),
        "database": params["dbname"],
    }


# --- the one schema binder, whatever the paramstyle ---------------------------------------

WORST_NAMES = [
    "percent %s %(id)s %%",
    "it's $1, 100% ünïcødé",
    'Wëird "schema"; drop table x; --',
]


def test_hostile_schema_names_bind_the_same_for_every_paramstyle(fresh_dsn: str) -> None:
    """``%`` doubled for psycopg, undone for asyncpg's ``$n``; ``$1`` inside the quoted
    name is no parameter. A wrong binding would hit another schema or fail to parse."""
    from kongtaskd.schema import migrate

    conn = psycopg2.connect(fresh_dsn)
    try:
        for schema in WORST_NAMES:
            migrate(conn, schema)
    finally:
        conn.close()
    drivers = ["psycopg", "sqlalchemy-psycopg2", "django"]
    async_drivers = ["asyncpg", "psycopg-async", "sqlalchemy-async-asyncpg"]
    for schema in WORST_NAMES:
        for driver in drivers:
            with sync_handle(driver, fresh_dsn) as handle:
                job = kongtaskd.add_job(
                    handle.target,
                    driver,
                    queue_name="q",
                    job_key="k",
                    schema=schema,
                    **handle.extra,
                )
                batch = kongtaskd.add_jobs(
                    handle.target, [JobSpec(driver)], schema=schema, **handle.extra
                )
                removed = kongtaskd.remove_job(handle.target, "k", schema=schema, **handle.extra)
                assert (job.queue_name, batch[0].task_identifier) == ("q", driver)
                assert removed is not None and removed.id == job.id
                handle.commit()
        for driver in async_drivers:

            async def body(handle: AsyncHandle, driver: str = driver, schema: str = schema) -> None:
                job = await kongtaskd.add_job_async(
                    handle.target, driver, queue_name="q", job_key="k", schema=schema
                )
                batch = await kongtaskd.add_jobs_async(
                    handle.target, [JobSpec(driver)], schema=schema
                )
                removed = await kongtaskd.remove_job_async(handle.target, "k", schema=schema)
                assert (job.queue_name, batch[0].task_identifier) == ("q", driver)
                assert removed is not None and removed.id == job.id
                await handle.commit()

            run_async(driver, fresh_dsn, body)
        rows = query(
            fresh_dsn,
            psycopg2.sql.SQL("select task_identifier from {}.jobs order by id").format(
                psycopg2.sql.Identifier(schema)
            ),
        )
        assert [task for (task,) in rows] == [*drivers, *async_drivers]


# --- Django's other driver ----------------------------------------------------------------

DJANGO_OVER_PSYCOPG2 = """
import sys
sys.modules["psycopg"] = None  # Django's backend prefers psycopg 3: make it fall back
import django
from django.conf import settings
settings.configure(DATABASES={"default": {
    "ENGINE": "django.db.backends.postgresql", "NAME": sys.argv[1], "USER": sys.argv[2],
    "HOST": sys.argv[3], "PORT": sys.argv[4]}}, USE_TZ=True)
django.setup()
from django.db import connection, transaction
import kongtaskd
with transaction.atomic():
    kept = kongtaskd.add_job(connection, "django_psycopg2_kept", {"n": 1})
    with transaction.atomic():
        kongtaskd.add_job(None, "django_psycopg2_dropped", using="default")
        transaction.set_rollback(True)
with transaction.atomic():
    kongtaskd.add_job(connection, "django_psycopg2_dropped")
    transaction.set_rollback(True)
print(type(connection.connection).__module__, kept.task_identifier, kept.payload)
"""


def test_django_over_psycopg2(queue_dsn: str) -> None:
    """The in-process Django tests get psycopg 3 (Django prefers it); psycopg2 here."""
    import subprocess
    import sys

    params = parse_dsn(queue_dsn)
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            DJANGO_OVER_PSYCOPG2,
            params["dbname"],
            params.get("user", ""),
            params.get("host", ""),
            params.get("port", ""),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["psycopg2.extensions", "django_psycopg2_kept", "{'n':", "1}"]
    assert count_jobs(queue_dsn, "django_psycopg2_kept") == 1
    assert count_jobs(queue_dsn, "django_psycopg2_dropped") == 0
