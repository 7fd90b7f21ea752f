"""The shipped migration files and the schema-name binding (no database needed)."""

from __future__ import annotations

import re

import pytest

from kongtaskd.schema import BREAKING_GRAPHILE_MIGRATIONS, LATEST_GRAPHILE_MIGRATION
from kongtaskd.schema.files import PLACEHOLDER, bind, load_migrations, load_statements


def test_graphile_files_are_1_to_20_with_graphile_workers_breaking_flags() -> None:
    migrations = load_migrations("graphile")
    assert [m.number for m in migrations] == list(range(1, LATEST_GRAPHILE_MIGRATION + 1))
    assert {m.number for m in migrations if m.breaking} == {1, 3, 11, 13, 14, 16, 19}
    assert frozenset({1, 3, 11, 13, 14, 16, 19}) == BREAKING_GRAPHILE_MIGRATIONS
    for m in migrations:
        first_line = m.text.splitlines()[0]
        assert (first_line == "--! breaking-change") == m.breaking, m.name


def test_pre_014_migrations_are_recorded_no_ops() -> None:
    migrations = load_migrations("graphile")
    assert [m.number for m in migrations if m.is_noop] == [*range(1, 11), 19]
    for m in migrations[:10]:
        assert "no-op" in m.text


def test_files_only_name_the_schema_through_the_placeholder() -> None:
    for kind in ("graphile", "kongtaskd"):
        for m in load_migrations(kind):
            assert "graphile_worker." not in m.text, m.name
            assert ":GRAPHILE_WORKER_SCHEMA" not in m.text, m.name
            # "$" only as the $$ of function bodies, which bind() may re-tag.
            assert re.sub(r"\$\$", "", m.text).count("$") == 0, m.name
    for name, text in load_statements().items():
        assert "graphile_worker." not in text, name


def test_kongtaskd_objects_carry_kongtaskd_prefixes() -> None:
    created = [
        re.findall(
            r"create (?:or replace )?(?:table|function|index) (?:\{\{schema\}\}\.)?(\w+)", m.text
        )
        for m in load_migrations("kongtaskd")
    ]
    assert created == [
        [
            "_kongtaskd_heartbeats",
            "kongtaskd_get_job",
            "kongtaskd_complete_job",
            "kongtaskd_fail_job",
        ],
        ["_kongtaskd_jobs_ready"],
        ["kongtaskd_claim", "kongtaskd_get_job"],
        [],  # 000004: adds the reload columns to _kongtaskd_heartbeats
        [
            "_kongtaskd_stats",
            "_kongtaskd_completed_jobs",
            "_kongtaskd_completed_jobs_id",
            "_kongtaskd_completed_jobs_finished",
        ],
        [
            "_kongtaskd_task_caps",
            "_kongtaskd_pauses",
            "_kongtaskd_jobs_locked",
            "kongtaskd_pause_marker",
            "kongtaskd_claim",
        ],
        ["_kongtaskd_cancels", "_kongtaskd_cancel_guard"],  # 000007: cancels, their trigger
        ["kongtaskd_claim"],  # 000008: the claim without a lock on every queue row
        ["kongtaskd_claim"],  # 000009: a queue gives its first job or none
    ]


def test_ledger_statements_are_all_present() -> None:
    assert set(load_statements()) == {
        "read_graphile_ledger",
        "create_schema",
        "create_graphile_ledger",
        "add_breaking_column",
        "mark_breaking",
        "ledger_in_use",
        "newer_graphile_migrations",
        "insert_graphile_migration",
        "notify_migrate",
        "read_kongtaskd_ledger",
        "bootstrap_kongtaskd_ledger",
        "insert_kongtaskd_migration",
        "set_lock_timeout",
        "lock_wait",
    }


def test_bind_replaces_every_placeholder() -> None:
    text = f"create table {PLACEHOLDER}.a (); select {PLACEHOLDER}.f();"
    assert bind(text, '"x"', with_parameters=False) == 'create table "x".a (); select "x".f();'


@pytest.mark.parametrize(
    "quoted",
    ['"a$$b"', '"$kt0$ and $$"', '"$kt0$$kt1$$$"'],
)
def test_bind_retags_dollar_quotes_the_name_could_close(quoted: str) -> None:
    body = f"create function {PLACEHOLDER}.f() returns int language sql as $$ select 1 $$;"
    bound = bind(body, quoted, with_parameters=False)
    tag = re.search(r"as (\$\w*\$) select", bound).group(1)
    assert tag != "$$" and tag not in quoted
    assert bound == (
        f"create function {quoted}.f() returns int language sql as {tag} select 1 {tag};"
    )


def test_bind_keeps_plain_dollar_quotes_when_the_name_has_no_dollar() -> None:
    body = f"create function {PLACEHOLDER}.f() returns int language sql as $$ select 1 $$;"
    assert "$$ select 1 $$" in bind(body, '"plain"', with_parameters=False)


def test_bind_doubles_percent_only_for_parameterised_statements() -> None:
    text = f"select * from {PLACEHOLDER}.t where id = %(id)s"
    assert bind(text, '"a%s"', with_parameters=True) == 'select * from "a%%s".t where id = %(id)s'
    assert bind(f"select {PLACEHOLDER}.f()", '"a%s"', with_parameters=False) == 'select "a%s".f()'
