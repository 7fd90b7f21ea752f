"""get_result() of a job that succeeded: SUCCESSFUL from the completed-job history
(keep_completed) when it holds a record, the documented Django error when it does not or
when the schema has no history table."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest

from tests.support.daemon import query

pytestmark = pytest.mark.usefixtures("clean_queue")

#: The history table as engineer W2's kongtaskd migration 000005 (branch ``stats``) creates it;
#: used only while that migration is not merged, and dropped after the test.
HISTORY_DDL = """
create table graphile_worker._kongtaskd_completed_jobs (
  id bigint not null, task_identifier text not null, queue_name text, key text,
  attempts smallint not null, created_at timestamptz not null, started_at timestamptz,
  finished_at timestamptz not null, run_seconds double precision, pool_id text not null
)
"""


def _has_history(dsn: str) -> bool:
    found = query(dsn, "select to_regclass('graphile_worker._kongtaskd_completed_jobs')")
    return found[0][0] is not None


@pytest.fixture()
def history(django_dsn: str) -> Iterator[None]:
    made = not _has_history(django_dsn)
    if made:
        query(django_dsn, HISTORY_DDL)
    query(django_dsn, "delete from graphile_worker._kongtaskd_completed_jobs")
    yield
    if made:
        query(django_dsn, "drop table graphile_worker._kongtaskd_completed_jobs")
    else:
        query(django_dsn, "delete from graphile_worker._kongtaskd_completed_jobs")


def test_a_succeeded_job_is_successful_from_its_history_record(
    django_dsn: str, history: None
) -> None:
    from kongtaskd.contrib.django._compat import (
        TaskResultDoesNotExist,
        TaskResultStatus,
        task_backends,
    )
    from tests.django_tests.testapp.tasks import note

    result = note.using(queue_name="emails").enqueue("done soon")
    other = note.enqueue("removed, never ran")
    started = dt.datetime(2026, 11, 30, 8, 0, 0, tzinfo=dt.timezone.utc)
    finished = started + dt.timedelta(seconds=2)
    # What settle does with keep_completed: the row leaves the table, the record stays.
    query(
        django_dsn,
        "with gone as (delete from graphile_worker._private_jobs where id = %(id)s "
        "returning id, created_at) "
        "insert into graphile_worker._kongtaskd_completed_jobs (id, task_identifier, "
        "queue_name, key, attempts, created_at, started_at, finished_at, run_seconds, pool_id) "
        "select id, 'django.tasks:emails', null, null, 2, created_at, %(s)s, %(f)s, 2.0, "
        "'pool-7' from gone",
        {"id": int(result.id), "s": started, "f": finished},
    )
    query(
        django_dsn,
        "delete from graphile_worker._private_jobs where id = %(id)s",
        {"id": int(other.id)},
    )
    backend = task_backends["default"]
    fetched = backend.get_result(result.id)
    assert fetched.status == TaskResultStatus.SUCCESSFUL
    assert (fetched.started_at, fetched.finished_at) == (started, finished)
    assert fetched.enqueued_at == result.enqueued_at
    assert fetched.task.queue_name == "emails"
    assert fetched.worker_ids == ["unknown", "pool-7"]
    assert fetched.errors == [] and fetched.return_value is None
    # No record (removed, not completed): the documented error.
    with pytest.raises(TaskResultDoesNotExist, match="kongtaskd keeps no results"):
        backend.get_result(other.id)


def test_without_the_history_table_a_gone_job_does_not_exist(django_dsn: str) -> None:
    from kongtaskd.contrib.django._compat import TaskResultDoesNotExist, task_backends
    from tests.django_tests.testapp.tasks import note

    if _has_history(django_dsn):
        pytest.skip("the schema has the history table (migration 000005 is merged)")
    result = note.enqueue("gone")
    query(django_dsn, "delete from graphile_worker._private_jobs")
    with pytest.raises(TaskResultDoesNotExist, match="kongtaskd keeps no results"):
        task_backends["default"].get_result(result.id)
