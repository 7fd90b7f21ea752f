"""A plain kongtaskd handler of the test project (KONGTASKD["tasks"])."""

from tests.django_tests.testapp.models import Note


def plain(payload, ctx):
    Note.objects.create(text=f"plain {payload['text']}")
