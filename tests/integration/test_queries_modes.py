"""``Queries`` in its two modes against real PostgreSQL: PREPAREd (a direct session) and
unprepared (``child_connection``, a transaction pooler), one code path.

Unprepared, the same files run with ``$n`` as parameters cast to the PREPARE's types: the
same rows come back for the same values, an empty list is still a ``bigint[]``, a list of
nulls a ``float8[]``, and nothing is left in ``pg_prepared_statements``.
"""

from __future__ import annotations

from typing import Any

import psycopg2
import psycopg2.extensions
import pytest
from psycopg2 import sql

from kongtaskd.child import CHILD_STATEMENTS
from kongtaskd.queries import STATEMENTS, Queries, pyformat, source
from kongtaskd.schema import migrate
from kongtaskd.settle import CLAIM_NAME, Outcomes, Settle, Want

POOL = "pool-queries-modes-1"


def rows(conn: psycopg2.extensions.connection, text: Any, params: Any = None) -> list[Any]:
    with conn.cursor() as cur:
        cur.execute(text, params)
        return cur.fetchall() if cur.description else []


def task_with_jobs(conn: psycopg2.extensions.connection, schema: str, count: int) -> int:
    add_job = sql.SQL("select {}.add_job('t', '{{}}', run_at => now() - interval '1 minute')")
    for _ in range(count):
        rows(conn, add_job.format(sql.Identifier(schema)))
    ((task_id,),) = rows(
        conn,
        sql.SQL("select id from {}._private_tasks where identifier = 't'").format(
            sql.Identifier(schema)
        ),
    )
    return int(task_id)


def test_every_childs_statement_has_an_unprepared_text_with_typed_parameters() -> None:
    # A statement a child runs that pyformat refuses would fail only on child_connection.
    for name in CHILD_STATEMENTS:
        types = STATEMENTS[name].param_types
        text = pyformat(source(name), types)
        for number, type_ in enumerate(types, start=1):
            assert f"(%(p{number})s::{type_})" in text, (name, number)
        assert "$" not in text.replace("$$", ""), name


@pytest.mark.parametrize("prepared", [True, False], ids=["prepared", "unprepared"])
def test_the_childs_statements_give_the_same_answers_in_both_modes(
    prepared: bool, conn: psycopg2.extensions.connection
) -> None:
    task_id = task_with_jobs(conn, "graphile_worker", 3)
    # The claim (the supervisor's statement, never a child's) only sets the jobs up.
    names = (*CHILD_STATEMENTS, CLAIM_NAME)
    queries = Queries(conn, "graphile_worker", names=names, prepared=prepared)
    settle = Settle(queries, POOL)
    # An empty outcome is three empty bigint[] and a text[], a float8[] of nothing.
    claimed = sorted(job.id for job in settle.settle(Outcomes(), Want(3, [task_id])).claimed)
    assert len(claimed) == 3
    (one,) = queries.fetchall("load_job", claimed[0], POOL)
    assert one[0] == claimed[0] and one[1] == "t" and one[-3] == POOL
    assert sorted(row[0] for row in queries.fetchall("load_jobs", claimed, POOL)) == claimed
    assert queries.fetchall("load_job", claimed[0], "another-pool") == []
    # Completed without a known duration or task (lists of nulls), one failure, one back.
    done = settle.settle(
        Outcomes(completed=[claimed[0]], failed={claimed[1]: "it's 100% 'broken'"}),
        Want(0, []),
        keep_completed=True,
    )
    assert done.completed == [claimed[0]] and [f.id for f in done.failed] == [claimed[1]]
    assert settle.hand_back([claimed[2]]).released == [claimed[2]]
    assert rows(
        conn, "select last_error from graphile_worker._private_jobs where id = %s", (claimed[1],)
    ) == [("it's 100% 'broken'",)]
    prepared_here = rows(conn, "select count(*) from pg_prepared_statements")[0][0]
    assert prepared_here == (len(names) if prepared else 0)


def test_unprepared_statements_work_in_a_schema_whose_name_needs_quoting(
    conn: psycopg2.extensions.connection,
) -> None:
    schema = 'odd "%s$$ name'
    migrate(conn, schema=schema)
    task_id = task_with_jobs(conn, schema, 1)
    queries = Queries(conn, schema, names=(*CHILD_STATEMENTS, CLAIM_NAME), prepared=False)
    (job,) = Settle(queries, POOL).settle(Outcomes(), Want(1, [task_id])).claimed
    assert queries.fetchall("load_job", job.id, POOL)[0][0] == job.id
