"""The database schema: graphile-worker 0.18.0's objects, object for object, plus kongtaskd's.

``migrate(conn, schema)`` installs or upgrades a schema with graphile-worker's own ledger
protocol (see :mod:`kongtaskd.schema.ledger`), so kongtaskd and graphile-worker can share a
database and even start against it at the same moment. The SQL lives next to this file:
``graphile/NNNNNN.sql`` (graphile-worker's migrations 1..20, written for kongtaskd),
``kongtaskd/NNNNNN.sql`` (kongtaskd's own, recorded in a separate ledger) and ``ledger.sql``.
"""

from __future__ import annotations

from kongtaskd.schema.files import BREAKING_GRAPHILE_MIGRATIONS
from kongtaskd.schema.ledger import LATEST_GRAPHILE_MIGRATION, MigrationReport, migrate

__all__ = [
    "BREAKING_GRAPHILE_MIGRATIONS",
    "LATEST_GRAPHILE_MIGRATION",
    "MigrationReport",
    "migrate",
]
