"""django.tasks functions of the tests."""

from __future__ import annotations

from pathlib import Path

from kongtaskd.contrib.django._compat import Task

try:
    from django.tasks import task
except ImportError:
    from django_tasks import task

from tests.django_tests.testapp.models import Note


@task()
def note(text: str) -> None:
    Note.objects.create(text=text)


@task(queue_name="emails", takes_context=True)
def note_attempt(context, text: str) -> None:
    Note.objects.create(text=text, attempt=context.attempt)


@task()
def note_then_fail(text: str) -> None:
    """Writes, enqueues a follow-up, then fails: neither the write nor the job may remain."""
    Note.objects.create(text=text)
    note.enqueue(f"{text} follow-up")
    raise ValueError(f"failed after writing {text!r}")


@task()
async def note_async(text: str) -> None:
    await Note.objects.acreate(text=f"async {text}")


@task(queue_name="slow")
def wait_for_file(path: str) -> None:
    """Runs until ``path`` exists (the test creates it once it has seen the job RUNNING)."""
    import time

    while not Path(path).exists():
        time.sleep(0.02)
    Note.objects.create(text=f"waited for {path}")


assert isinstance(note, Task)
