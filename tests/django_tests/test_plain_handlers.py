"""A plain kongtaskd handler (KONGTASKD["tasks"], not django.tasks) in Django mode, end to end
with ``manage.py kongtaskd --once``: it runs in ``transaction.atomic()``, and ``ctx.add_job``
goes through Django's connection, so its ORM writes and its follow-up jobs commit together
when it returns and roll back together when it raises."""

from __future__ import annotations

import pytest

from kongtaskd.enqueue import add_job
from tests.django_tests.test_daemon import manage
from tests.support.daemon import query

pytestmark = pytest.mark.usefixtures("clean_queue")


def test_orm_writes_and_follow_up_jobs_commit_or_roll_back_together(
    django_dsn: str, django_env: dict[str, str]
) -> None:
    add_job(django_dsn, "testapp.note_and_follow_up", {"text": "kept"})
    failing = add_job(
        django_dsn, "testapp.note_and_follow_up", {"text": "lost", "fail": True}, max_attempts=1
    ).id
    done = manage(django_env, "kongtaskd", "--once")
    assert done.returncode == 0, done.stderr
    notes = [text for (text,) in query(django_dsn, "select text from testapp_note order by id")]
    # The follow-up ran too (--once runs what became ready), written by the plain handler.
    assert sorted(notes) == ["kept sees its follow-up: True", "plain after kept"]
    jobs = query(django_dsn, "select id, task_identifier, last_error from graphile_worker.jobs")
    assert [(job_id, task) for job_id, task, _ in jobs] == [(failing, "testapp.note_and_follow_up")]
    assert jobs[0][2].startswith("RuntimeError: failing after the writes of 'lost'")
