"""Reading what a statement did from PostgreSQL itself: buffers touched, index scans made.

Counted in buffers, not milliseconds, so assertions about a query's work hold on a slow or
busy machine and still fail on a regression.
"""

from __future__ import annotations

from typing import Any

import psycopg2.extensions


def explain_analyze(conn: psycopg2.extensions.connection, statement: str, params: Any) -> str:
    """EXPLAIN (ANALYZE, BUFFERS) of one run of ``statement``, rolled back."""
    with conn.cursor() as cur:
        cur.execute("begin")
        try:
            cur.execute(f"explain (analyze, buffers, costs off) {statement}", params)
            return "\n".join(str(row[0]) for row in cur.fetchall())
        finally:
            cur.execute("rollback")


def shared_buffers_hit(plan: str) -> int:
    """Buffers the whole statement touched (functions it called included): the top node's
    'Buffers:' line."""
    for line in plan.splitlines():
        line = line.strip()
        if line.startswith("Buffers: shared"):
            total = 0
            for part in line.removeprefix("Buffers: shared ").split():
                kind, _, count = part.partition("=")
                if kind in ("hit", "read"):
                    total += int(count)
            return total
    raise AssertionError(f"no Buffers line in plan:\n{plan}")


def index_scans(conn: psycopg2.extensions.connection, index: str) -> int:
    """The index's scan count, including every scan this session made so far.

    EXPLAIN does not show the plans of queries inside a function; this counter does count
    them. Statistics reach the shared counters when a session goes idle, at most once a
    second unless forced: the first statement forces this session's out as it ends.
    """
    with conn.cursor() as cur:
        cur.execute("select pg_stat_force_next_flush()")
        cur.execute("select idx_scan from pg_stat_user_indexes where indexrelname = %s", (index,))
        row = cur.fetchone()
    if row is None:
        raise AssertionError(f"no index {index!r}")
    return int(row[0])
