"""The Django app: connects the schema hook and registers the system checks."""

from __future__ import annotations

from django.apps import AppConfig
from django.core import checks
from django.db.models.signals import post_migrate


class KongtaskdConfig(AppConfig):
    name = "kongtaskd.contrib.django"
    label = "kongtaskd"
    verbose_name = "kongtaskd"
    default = True

    def ready(self) -> None:
        from kongtaskd.contrib.django import checks as kongtaskd_checks
        from kongtaskd.contrib.django.schema import migrate_after_django

        # sender=self: once per `manage.py migrate`, not once per installed app.
        post_migrate.connect(migrate_after_django, sender=self, dispatch_uid="kongtaskd.schema")
        checks.register(kongtaskd_checks.check_settings, "kongtaskd")
