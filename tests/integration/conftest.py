"""Fixtures shared by the integration tests (statements against real PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg2
import psycopg2.extensions
import pytest

from kongtaskd.schema import migrate


@pytest.fixture()
def conn(fresh_dsn: str) -> Iterator[psycopg2.extensions.connection]:
    """An autocommit connection to a fresh database with the whole schema (graphile-worker's
    and kongtaskd's migrations); a module may override it to set more on the session."""
    connection = psycopg2.connect(fresh_dsn)
    migrate(connection)
    connection.autocommit = True
    try:
        yield connection
    finally:
        connection.close()
