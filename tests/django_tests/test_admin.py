"""The jobs in Django's admin: the changelist (each state, hostile strings escaped), filters
and search, the actions through kongtaskd.actions (the rows end as the CLI leaves them), and
a paginator that never counts the jobs view. Real PostgreSQL, Django's test client."""

from __future__ import annotations

import datetime as dt
import html
import logging
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from kongtaskd import actions
from tests.support.daemon import query

pytestmark = pytest.mark.usefixtures("clean_queue")

URL = "/admin/kongtaskd/job/"
HOSTILE_TASK = "<script>alert('task')</script>"
HOSTILE_KEY = '"><img src=x onerror=alert(1)>'
HOSTILE_ERROR = "Error: <b onmouseover=alert(2)>boom</b>"


@pytest.fixture()
def client(django_dsn: str) -> Iterator[Any]:
    from django.contrib.auth import get_user_model
    from django.test import Client

    user_model = get_user_model()
    user_model.objects.filter(username="ops").delete()
    user = user_model.objects.create_superuser("ops", "ops@example.com", "pw")
    browser = Client()
    browser.force_login(user)
    yield browser
    user.delete()


def _add(dsn: str, task: str, **options: Any) -> int:
    """A job by graphile-worker's own add_job; options are its named arguments."""
    named = "".join(f", {name} => %({name})s" for name in options)
    text = f"select id from graphile_worker.add_job(%(task)s, '{{}}'::json{named})"
    return int(query(dsn, text, {"task": task, **options})[0][0])


def _set(dsn: str, job_id: int, assignments: str, params: dict[str, Any] | None = None) -> None:
    query(
        dsn,
        f"update graphile_worker._private_jobs set {assignments} where id = %(id)s",
        {"id": job_id, **(params or {})},
    )


def _one_of_each(dsn: str, prefix: str = "") -> dict[str, int]:
    """One job in each state (ids by state), the failed one with hostile strings."""
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=3)
    found = {
        "ready": _add(dsn, f"{prefix}mail", queue_name=f"{prefix}q1"),
        "scheduled": _add(dsn, f"{prefix}mail", run_at=later),
        "running": _add(dsn, f"{prefix}report"),
        "retrying": _add(dsn, f"{prefix}report", max_attempts=5),
        "failed": _add(dsn, prefix + HOSTILE_TASK, job_key=prefix + HOSTILE_KEY, max_attempts=2),
    }
    _set(dsn, found["running"], "locked_at = now(), locked_by = 'pool-x', attempts = 1")
    _set(dsn, found["retrying"], "attempts = 1, last_error = 'Error: flaky'")
    _set(dsn, found["failed"], "attempts = 2, last_error = %(e)s", {"e": HOSTILE_ERROR})
    return found


def _ids_on_page(body: str) -> list[int]:
    import re

    return [int(i) for i in re.findall(r'name="_selected_action" value="(\d+)"', body)]


def test_the_changelist_shows_every_state_and_escapes_hostile_strings(
    django_dsn: str, client: Any
) -> None:
    found = _one_of_each(django_dsn)
    response = client.get(URL)
    assert response.status_code == 200
    body = response.content.decode()
    assert sorted(_ids_on_page(body)) == sorted(found.values())
    for state in ("ready", "scheduled", "running", "retrying", "failed"):
        assert f'<td class="field-state">{state}</td>' in body
    for hostile in (HOSTILE_TASK, HOSTILE_KEY, HOSTILE_ERROR):
        assert hostile not in body
        assert html.escape(hostile) in body
    # Jobs change only through kongtaskd.actions: no ORM delete, no add.
    assert 'value="delete_selected"' not in body
    assert 'value="retry_now"' in body
    # Newest first.
    assert _ids_on_page(body) == sorted(found.values(), reverse=True)


def test_the_state_filter_selects_what_the_action_layer_selects(
    django_dsn: str, client: Any
) -> None:
    import psycopg2

    found = _one_of_each(django_dsn)
    conn = psycopg2.connect(django_dsn)
    try:
        upto = actions.highest_id(conn, "graphile_worker")
        for state in actions.STATES:
            body = client.get(URL, {"state": state}).content.decode()
            shown = _ids_on_page(body)
            assert shown == [found[state]], state
            matching = actions.Matching(actions.JobFilter(state=state), upto)
            assert actions.count_matching(conn, "graphile_worker", matching) == len(shown)
    finally:
        conn.close()


def test_task_and_queue_filters_and_search_by_id_and_key(django_dsn: str, client: Any) -> None:
    found = _one_of_each(django_dsn)
    body = client.get(URL).content.decode()
    # The filters offer the names from graphile-worker's tasks and queues tables, escaped.
    assert "?task=mail" in body and "?queue=q1" in body
    assert html.escape(HOSTILE_TASK) in body
    by_task = _ids_on_page(client.get(URL, {"task": "mail"}).content.decode())
    assert sorted(by_task) == sorted([found["ready"], found["scheduled"]])
    assert _ids_on_page(client.get(URL, {"queue": "q1"}).content.decode()) == [found["ready"]]
    by_id = client.get(URL, {"q": str(found["retrying"])}).content.decode()
    assert _ids_on_page(by_id) == [found["retrying"]]
    by_key = client.get(URL, {"q": HOSTILE_KEY}).content.decode()
    assert _ids_on_page(by_key) == [found["failed"]]
    assert _ids_on_page(client.get(URL, {"q": "no such key"}).content.decode()) == []


def _rows(dsn: str, prefix: str) -> list[tuple[Any, ...]]:
    """The jobs of one twin set, without their ids, as comparable tuples (run_at rounded: the
    two sets are acted on a moment apart)."""
    rows = query(
        dsn,
        "select substr(task_identifier, length(%(p)s) + 1), attempts, max_attempts, "
        "last_error, locked_by is not null, priority, "
        "run_at > now() + interval '1 day', revision from graphile_worker.jobs "
        "where task_identifier like %(p)s || '%%' order by id",
        {"p": prefix},
    )
    return rows


def _cli(dsn: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "kongtaskd", "jobs", *args, "--connection", dsn],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.stdout + done.stderr


@pytest.mark.parametrize(
    ("action", "cli_args", "form"),
    [
        ("retry_now", ["retry"], {}),
        ("fail_permanently", ["fail", "--message", "stop it"], {"message": "stop it"}),
        ("remove", ["remove"], {}),
        (
            "reschedule",
            ["reschedule", "--run-at", "2031-01-02T03:04:05Z", "--priority", "7"],
            {"run_at": "2031-01-02 03:04:05", "priority": "7"},
        ),
    ],
)
def test_each_action_changes_the_rows_as_the_cli_does(
    django_dsn: str,
    client: Any,
    caplog: pytest.LogCaptureFixture,
    action: str,
    cli_args: list[str],
    form: dict[str, str],
) -> None:
    admin_set = _one_of_each(django_dsn, "a.")
    cli_set = _one_of_each(django_dsn, "c.")
    before = _rows(django_dsn, "a.")
    assert before == _rows(django_dsn, "c.")
    with caplog.at_level(logging.INFO, logger=actions.AUDIT_LOGGER):
        response = client.post(
            URL,
            {"action": action, "_selected_action": list(admin_set.values()), **form},
            follow=True,
        )
    assert response.status_code == 200
    _cli(django_dsn, cli_args[0], *[str(i) for i in cli_set.values()], *cli_args[1:])
    after = _rows(django_dsn, "a.")
    assert after == _rows(django_dsn, "c.")
    assert after != before  # the action did something (the running job is left alone)
    assert any(record.message.startswith("audit: django:ops ") for record in caplog.records), [
        r.message for r in caplog.records
    ]
    # The running job was not acted on, and the page says so.
    body = response.content.decode()
    assert f"job {admin_set['running']} is running" in html.unescape(body).lower()


def test_the_paginator_never_counts_the_jobs_view(django_dsn: str, client: Any) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from kongtaskd import tunables

    query(
        django_dsn,
        "select graphile_worker.add_job('bulk', '{}'::json) from generate_series(1, %(n)s)",
        {"n": tunables.DJANGO_ADMIN_EXACT_COUNT + 50},
    )
    # With statistics the unfiltered list takes pg_class.reltuples; filtered ones EXPLAIN's.
    query(django_dsn, "analyze graphile_worker._private_jobs")
    for params in ({}, {"task": "bulk"}, {"state": "ready"}, {"p": "2"}):
        with CaptureQueriesContext(connection) as captured:
            response = client.get(URL, params)
        assert response.status_code == 200, params
        texts = [q["sql"].lower() for q in captured.captured_queries]
        assert not [t for t in texts if "count(" in t], texts
        estimated = [t for t in texts if "reltuples" in t or t.startswith("explain")]
        assert estimated, f"{params}: more than the cap, yet no estimate was asked for"
        if not params:
            assert "reltuples" in estimated[0]
        assert len(_ids_on_page(response.content.decode())) == 100


def test_the_change_page_is_read_only(django_dsn: str, client: Any) -> None:
    found = _one_of_each(django_dsn)
    response = client.get(f"{URL}{found['failed']}/change/")
    assert response.status_code == 200
    body = response.content.decode()
    assert html.escape(HOSTILE_ERROR) in body and HOSTILE_ERROR not in body
    assert 'name="_save"' not in body and "<textarea" not in body
    # A POST cannot change the row through the ORM either.
    before = query(
        django_dsn, "select * from graphile_worker.jobs where id = %s", (found["failed"],)
    )
    client.post(f"{URL}{found['failed']}/change/", {"priority": "5", "_save": "Save"})
    after = query(
        django_dsn, "select * from graphile_worker.jobs where id = %s", (found["failed"],)
    )
    assert after == before


def test_select_all_acts_on_the_filter_up_to_the_highest_id(
    django_dsn: str, client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    found = _one_of_each(django_dsn)
    with caplog.at_level(logging.INFO, logger=actions.AUDIT_LOGGER):
        response = client.post(
            f"{URL}?task=report",
            # Django's "select all N": one ticked id stands for the whole filtered list.
            {
                "action": "fail_permanently",
                "select_across": "1",
                "index": "0",
                "_selected_action": [found["retrying"]],
            },
        )
    assert response.status_code == 302
    audits = [r.message for r in caplog.records if r.name == actions.AUDIT_LOGGER]
    assert audits == [
        f"audit: django:ops fail task='report' up to id {max(found.values())}: "
        "1 changed, 1 running, 0 missing"
    ]
    rows = dict(query(django_dsn, "select id, attempts = max_attempts from graphile_worker.jobs"))
    assert rows == {
        found["ready"]: False,
        found["scheduled"]: False,
        found["running"]: False,
        found["retrying"]: True,
        found["failed"]: True,
    }


def test_the_cancel_action_cancels_through_the_action_layer(
    django_dsn: str, client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    ready = _add(django_dsn, "c.ready")
    done = _add(django_dsn, "c.done")
    _set(django_dsn, done, "attempts = max_attempts, last_error = 'boom'")
    with caplog.at_level(logging.INFO, logger=actions.AUDIT_LOGGER):
        response = client.post(
            URL, {"action": "cancel", "_selected_action": [ready, done]}, follow=True
        )
    assert response.status_code == 200
    rows = dict(
        query(
            django_dsn,
            "select id, (attempts = max_attempts, last_error) "
            "from graphile_worker._private_jobs where id = any(%s)",
            ([ready, done],),
        )
    )
    assert rows[ready].startswith('(t,"cancelled by django:ops at '), rows
    assert rows[done] == "(t,boom)", rows
    body = html.unescape(response.content.decode()).lower()
    assert f"cancelled job {ready}" in body
    assert f"job {done} is already permanently failed, not cancelled" in body
    assert any(r.message.startswith("audit: django:ops cancel ") for r in caplog.records)
