"""kongtaskd's schema under ``manage.py migrate``: our migrator, run after Django's.

A ``post_migrate`` handler rather than Django migration files: every ``manage.py migrate``
calls :func:`kongtaskd.schema.migrate`, which applies whatever graphile-worker and kongtaskd
migrations the database lacks (none, usually: one ledger read). A Django migration would be
recorded once and never run again, so a later kongtaskd release's migrations would not
reach the database; and the SQL stays in one place, kongtaskd's migrator. It uses its own
psycopg2 connection to the same database (the migrator runs its own transactions, with
graphile-worker's insert-first ledger protocol, so it is safe next to running daemons).
"""

from __future__ import annotations

from typing import Any

from django.db import DEFAULT_DB_ALIAS

from kongtaskd.dsn import connect
from kongtaskd.schema import MigrationReport, migrate


def migrate_schema() -> tuple[str, MigrationReport]:
    """Install or upgrade the schema of ``settings.KONGTASKD``; returns (schema, report)."""
    from kongtaskd.contrib.django import conf

    config = conf.load()
    conn = connect(config.dsn, application_name="kongtaskd migrate (django)")
    try:
        # As `kongtaskd migrate`: give up after migration_lock_timeout naming the session
        # that holds the lock (found through a second, short-lived connection).
        report = migrate(
            conn,
            config.schema,
            lock_timeout=config.migration_lock_timeout,
            observer=lambda: connect(config.dsn, application_name="kongtaskd migrate (lock watch)"),
        )
        return config.schema, report
    finally:
        conn.close()


def describe(schema: str, report: MigrationReport) -> str:
    """One line, as ``kongtaskd migrate`` prints it."""
    done = []
    if report.applied:
        done.append(f"graphile-worker migrations {min(report.applied)}-{max(report.applied)}")
    if report.applied_kongtaskd:
        first, last = min(report.applied_kongtaskd), max(report.applied_kongtaskd)
        done.append(f"kongtaskd migrations {first}-{last}")
    summary = f"applied {', '.join(done)}" if done else "nothing to apply"
    return f"schema {schema} is up to date ({summary})"


def migrate_after_django(
    sender: Any, *, using: str = DEFAULT_DB_ALIAS, verbosity: int = 1, stdout: Any = None, **_: Any
) -> None:
    """``post_migrate`` receiver: migrate kongtaskd's schema when Django migrated the
    database kongtaskd uses (the "default" alias, whose connection it derives from)."""
    if using != DEFAULT_DB_ALIAS:
        return
    schema, report = migrate_schema()
    if verbosity >= 1 and stdout is not None:
        stdout.write(f"  kongtaskd: {describe(schema, report)}\n")
