"""The admin's view of the queue: graphile-worker's public ``jobs`` view as an unmanaged model.

``managed = False``: Django never creates, alters or deletes it (kongtaskd's migrator owns
the schema), and rows change only through :mod:`kongtaskd.actions` (the admin's actions),
never through the ORM: the view is read-only to Django.

The schema is ``KONGTASKD["schema"]`` (the environment over it) when Django loads the app;
a setting that does not load falls back to graphile-worker's default, and
``manage.py check`` reports the setting (``kongtaskd.E001``).

The module also exists because Django sends ``post_migrate``, which installs kongtaskd's
schema, only to apps that have one.
"""

from __future__ import annotations

from django.db import models

from kongtaskd import actions
from kongtaskd.errors import ConfigError

DEFAULT_SCHEMA = "graphile_worker"


def configured_schema() -> str:
    """The queue's schema as the daemon would read it from the settings."""
    from kongtaskd.contrib.django import conf

    try:
        return conf.load(resolve_connection=False).schema
    except ConfigError:
        return DEFAULT_SCHEMA


def jobs_view(schema: str) -> str:
    """``"schema"."jobs"`` as a db_table: Django leaves a name in double quotes as it is."""
    return '"{}"."jobs"'.format(schema.replace('"', '""'))


def state_expression() -> models.Case:
    """A job's state as the ORM expression of the CASE in kongtaskd/sql/action_count.sql and
    action_select_batch.sql (first match wins), so the admin's state filter selects exactly
    what ``kongtaskd jobs`` and the dashboard's filter do (tests/django_tests/test_admin.py
    compares them state by state). Its values are :data:`kongtaskd.actions.STATES`."""
    ready, scheduled, running, retrying, failed = actions.STATES
    return models.Case(
        models.When(locked_at__isnull=False, then=models.Value(running)),
        models.When(attempts__gte=models.F("max_attempts"), then=models.Value(failed)),
        models.When(attempts__gt=0, last_error__isnull=False, then=models.Value(retrying)),
        models.When(run_at__gt=models.functions.Now(), then=models.Value(scheduled)),
        default=models.Value(ready),
        output_field=models.TextField(),
    )


#: The schema the model reads, fixed when Django loads the app (as the daemon's is at start).
SCHEMA = configured_schema()


class Job(models.Model):
    """One row of graphile-worker's ``jobs`` view (its columns are the stable interface)."""

    id = models.BigIntegerField(primary_key=True)
    queue_name = models.TextField(null=True)
    task_identifier = models.TextField()
    priority = models.SmallIntegerField()
    run_at = models.DateTimeField()
    attempts = models.SmallIntegerField()
    max_attempts = models.SmallIntegerField()
    last_error = models.TextField(null=True)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()
    key = models.TextField(null=True)
    locked_at = models.DateTimeField(null=True)
    locked_by = models.TextField(null=True)
    revision = models.IntegerField()
    flags = models.JSONField(null=True)

    class Meta:
        managed = False
        db_table = jobs_view(SCHEMA)
        # Newest first over the primary key: the page query is an index scan backwards.
        ordering = ("-id",)
        verbose_name = "job"
        verbose_name_plural = "jobs"
        default_permissions = ("change", "view")

    def __str__(self) -> str:
        return f"job {self.id} ({self.task_identifier})"
