"""``python manage.py kongtaskd [run] [--once] [--concurrency N] [--queue NAME ...]`` runs
the daemon (exec'd as a clean ``python -m kongtaskd``, see
:mod:`kongtaskd.contrib.django.daemon`); ``python manage.py kongtaskd migrate`` installs or
upgrades the schema."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from kongtaskd.errors import ExitCode, KongtaskError

LEVELS = ("debug", "info", "warning", "error")


class Command(BaseCommand):
    help = "Run the kongtaskd daemon with this project's settings, or migrate its schema."
    # The daemon runs for hours: Django's checks ran at deploy time (manage.py check); the
    # command's own configuration is checked below either way.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "verb",
            nargs="?",
            choices=("run", "migrate"),
            default="run",
            help="run (default): the daemon; migrate: install or upgrade the schema",
        )
        parser.add_argument(
            "--once",
            action="store_true",
            help="run until no job is ready, then exit 0 (default: until SIGTERM/SIGINT)",
        )
        parser.add_argument(
            "--concurrency",
            type=int,
            metavar="N",
            help="child processes (default: KONGTASKD['concurrency'], else 4)",
        )
        parser.add_argument(
            "--queue",
            action="append",
            default=[],
            metavar="NAME",
            help="run only this Django task queue (repeatable; default: every queue of the "
            "kongtaskd TASKS backends)",
        )
        parser.add_argument("--log-level", choices=LEVELS, help="lowest level logged")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            if options["verb"] == "migrate":
                from kongtaskd.contrib.django.schema import describe, migrate_schema

                schema, report = migrate_schema()
                self.stdout.write(describe(schema, report))
                return
            from kongtaskd.contrib.django.daemon import exec_daemon, invocation

            argv, environ, _ = invocation(
                options["queue"],
                once=options["once"],
                concurrency=options["concurrency"],
                log_level=options["log_level"],
            )
        except KongtaskError as error:
            code = error.exit_code if error.exit_code != ExitCode.OK else ExitCode.FAILURE
            raise CommandError(error.message, returncode=int(code)) from None
        exec_daemon(argv, environ)
