"""``kongtaskd.run_jobs`` on Django's connection: it sees what a TestCase-style atomic block
enqueued, handlers use the ORM inside it, and the block's rollback takes everything back."""

from __future__ import annotations

from typing import Any

import pytest

import kongtaskd
import kongtaskd.testing
from tests.support.daemon import query

pytestmark = pytest.mark.usefixtures("clean_queue")


class Rollback(Exception):
    """Ends the atomic block the way a Django TestCase ends its test: rolled back."""


def make_note(payload: Any, ctx: Any) -> None:
    from tests.django_tests.testapp.models import Note

    Note.objects.create(text=payload["text"], attempt=ctx.job.attempts)


def note_then_fail(payload: Any, ctx: Any) -> None:
    make_note(payload, ctx)
    raise RuntimeError("after the ORM write")


def test_run_jobs_inside_an_atomic_block(django_dsn: str) -> None:
    from django.db import connection, transaction

    from tests.django_tests.testapp.models import Note

    tasks = {"make_note": make_note, "note_then_fail": note_then_fail}
    with pytest.raises(Rollback), transaction.atomic():
        kongtaskd.add_job(connection, "make_note", {"text": "kept"})
        kongtaskd.add_job(connection, "note_then_fail", {"text": "undone"})
        summary = kongtaskd.run_jobs(connection, tasks)
        assert (len(summary.succeeded), len(summary.failed)) == (1, 1)
        assert list(Note.objects.values_list("text", flat=True)) == ["kept"]
        kongtaskd.testing.assert_enqueued(connection, "note_then_fail", {"text": "undone"})
        # Django still sees a usable transaction after the failed job's savepoint.
        assert Note.objects.count() == 1
        raise Rollback
    assert query(django_dsn, "select count(*) from testapp_note") == [(0,)]
    assert query(django_dsn, "select count(*) from graphile_worker.jobs") == [(0,)]


def test_outside_atomic_run_jobs_asks_for_a_transaction(django_dsn: str) -> None:
    from django.db import connection

    with pytest.raises(ValueError, match=r"outside transaction.atomic\(\)"):
        kongtaskd.run_jobs(connection, {"make_note": make_note})
