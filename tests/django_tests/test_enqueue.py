"""task.enqueue() adds a kongtaskd job in Django's current transaction; the field mapping;
get_result() from the job row."""

from __future__ import annotations

import datetime as dt
import select
from collections.abc import Iterator

import psycopg2
import pytest

from tests.support.daemon import query

pytestmark = pytest.mark.usefixtures("clean_queue")

SENTINEL = "kt_django_sentinel"


@pytest.fixture()
def listener(django_dsn: str) -> Iterator[psycopg2.extensions.connection]:
    """A connection LISTENing to jobs:insert and to a sentinel channel."""
    conn = psycopg2.connect(django_dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute('listen "jobs:insert"')
        cur.execute(f"listen {SENTINEL}")
    yield conn
    conn.close()


def _channels_until_sentinel(conn: psycopg2.extensions.connection, dsn: str) -> list[str]:
    """Every channel notified before a sentinel NOTIFY sent now (no sleeping: the sentinel
    arrives after anything committed earlier)."""
    query(dsn, f"notify {SENTINEL}")
    seen: list[str] = []
    while SENTINEL not in seen:
        if not select.select([conn], [], [], 10)[0]:
            raise AssertionError("the sentinel NOTIFY never arrived")
        conn.poll()
        seen.extend(n.channel for n in conn.notifies)
        conn.notifies.clear()
    return seen[: seen.index(SENTINEL)]


def _jobs(dsn: str) -> list[tuple[object, ...]]:
    return query(
        dsn,
        "select task_identifier, priority, queue_name, run_at, max_attempts from "
        "graphile_worker.jobs order by id",
    )


def test_a_job_commits_with_the_transaction(django_dsn: str, listener) -> None:  # type: ignore[no-untyped-def]
    from django.db import transaction

    from tests.django_tests.testapp.models import Note
    from tests.django_tests.testapp.tasks import note

    with transaction.atomic():
        Note.objects.create(text="order 1")
        result = note.enqueue("order 1")
        # Not visible outside before the commit.
        assert _jobs(django_dsn) == []
    assert [row[0] for row in _jobs(django_dsn)] == ["django.tasks:default"]
    assert query(django_dsn, "select payload from graphile_worker._private_jobs") == [
        (
            {
                "task": "tests.django_tests.testapp.tasks.note",
                "args": ["order 1"],
                "kwargs": {},
                "backend": "default",
            },
        )
    ]
    assert result.id == str(query(django_dsn, "select id from graphile_worker.jobs")[0][0])
    assert "jobs:insert" in _channels_until_sentinel(listener, django_dsn)


def test_a_rolled_back_transaction_leaves_no_job_and_no_notify(django_dsn: str, listener) -> None:  # type: ignore[no-untyped-def]
    from django.db import transaction

    from tests.django_tests.testapp.models import Note
    from tests.django_tests.testapp.tasks import note

    with pytest.raises(RuntimeError), transaction.atomic():
        Note.objects.create(text="order 2")
        note.enqueue("order 2")
        raise RuntimeError("payment declined")
    assert _jobs(django_dsn) == []
    assert query(django_dsn, "select count(*) from testapp_note") == [(0,)]
    assert _channels_until_sentinel(listener, django_dsn) == []


def test_a_rolled_back_savepoint_drops_its_job_only(django_dsn: str) -> None:
    from django.db import transaction

    from tests.django_tests.testapp.tasks import note, note_attempt

    with transaction.atomic():
        note.enqueue("kept")
        with pytest.raises(RuntimeError), transaction.atomic():
            note_attempt.enqueue("dropped")
            raise RuntimeError("inner block fails")
    assert [row[0] for row in _jobs(django_dsn)] == ["django.tasks:default"]


def test_outside_a_transaction_the_job_is_committed_at_once(django_dsn: str) -> None:
    from tests.django_tests.testapp.tasks import note

    note.enqueue("autocommit")
    assert len(_jobs(django_dsn)) == 1


def test_priority_run_after_and_queue_name_map_onto_the_job(django_dsn: str) -> None:
    from tests.django_tests.testapp.tasks import note

    when = dt.datetime(2031, 5, 6, 7, 8, 9, tzinfo=dt.timezone.utc)
    note.using(priority=50, run_after=when, queue_name="emails").enqueue("later")
    note.using(priority=-100).enqueue("last")
    rows = _jobs(django_dsn)
    # Django's higher-first priority negated into graphile-worker's lower-first one; the
    # Django queue is routing (the identifier), not graphile-worker's serial queue_name.
    assert rows[0] == ("django.tasks:emails", -50, None, when, 1)
    assert rows[1][:3] == ("django.tasks:default", 100, None)
    assert rows[1][4] == 1  # OPTIONS max_attempts


def test_get_result_reads_the_job_and_raises_once_it_is_gone(django_dsn: str) -> None:
    from kongtaskd.contrib.django._compat import TaskResultDoesNotExist, TaskResultStatus
    from tests.django_tests.testapp.tasks import note

    result = note.using(priority=7).enqueue("look me up")
    fetched = note.get_result(result.id)
    assert fetched.status == TaskResultStatus.READY
    assert (fetched.args, fetched.kwargs, fetched.task.priority) == (["look me up"], {}, 7)
    assert fetched.attempts == 0 and fetched.errors == []
    query(django_dsn, "delete from graphile_worker._private_jobs")  # as when it succeeded
    with pytest.raises(TaskResultDoesNotExist, match="kongtaskd keeps no results"):
        note.get_result(result.id)
    with pytest.raises(TaskResultDoesNotExist, match="not a kongtaskd job id"):
        note.get_result("not-a-number")


def test_ctx_add_job_in_django_mode_rolls_back_with_the_orm(django_dsn: str) -> None:
    from django.db import transaction

    from kongtaskd.contrib.django import runtime
    from tests.django_tests.testapp.models import Note

    with pytest.raises(RuntimeError), transaction.atomic():
        Note.objects.create(text="handler write")
        job = runtime.add_job("follow_up", {"n": 1}, priority=3, job_key="k1")
        assert (job.task_identifier, job.payload, job.priority, job.key) == (
            "follow_up",
            {"n": 1},
            3,
            "k1",
        )
        raise RuntimeError("handler fails")
    assert _jobs(django_dsn) == []
    with transaction.atomic():
        Note.objects.create(text="handler write")
        runtime.add_job("follow_up", {"n": 2}, queue_name="serial")
    assert [(r[0], r[2]) for r in _jobs(django_dsn)] == [("follow_up", "serial")]


def test_bad_arguments_get_enqueues_messages(django_dsn: str) -> None:
    from kongtaskd.contrib.django import runtime
    from kongtaskd.enqueue import InvalidJobArgument

    with pytest.raises(InvalidJobArgument, match=r"^priority must be between"):
        runtime.add_job("x", priority=10**6)


def test_aenqueue_adds_the_job_too(django_dsn: str) -> None:
    import asyncio

    from tests.django_tests.testapp.tasks import note

    result = asyncio.run(note.aenqueue("from a coroutine"))
    assert query(django_dsn, "select id::text, task_identifier from graphile_worker.jobs") == [
        (result.id, "django.tasks:default")
    ]
