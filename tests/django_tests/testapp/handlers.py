"""A plain kongtaskd handler of the test project (KONGTASKD["tasks"])."""

from tests.django_tests.testapp.models import Note


def plain(payload, ctx):
    Note.objects.create(text=f"plain {payload['text']}")


def note_and_follow_up(payload, ctx):
    """ORM write + ctx.add_job, then (if asked) fail: in Django mode both commit or neither.

    The note records whether the follow-up job is visible on Django's connection: it is
    when ctx.add_job went through that connection's transaction.
    """
    from django.db import connection

    follow_up = ctx.add_job("testapp.plain", {"text": f"after {payload['text']}"})
    with connection.cursor() as cursor:
        cursor.execute(
            "select count(*) from graphile_worker._private_jobs where id = %s", [follow_up.id]
        )
        (seen,) = cursor.fetchone()
    Note.objects.create(text=f"{payload['text']} sees its follow-up: {bool(seen)}")
    if payload.get("fail"):
        raise RuntimeError(f"failing after the writes of {payload['text']!r}")
