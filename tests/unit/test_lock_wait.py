"""How a migration names the lock it waits for and who holds it (pure text, no database)."""

from __future__ import annotations

import datetime as dt

from kongtaskd.schema.waiting import Blocker, LockWait, describe_lock

STARTED = dt.datetime(2026, 12, 1, 9, 30, 5, tzinfo=dt.timezone(dt.timedelta(hours=1)))


def test_a_blocker_is_described_with_what_pg_stat_activity_showed() -> None:
    blocker = Blocker(4242, "billing", "idle in transaction", STARTED, STARTED)
    assert blocker.describe() == (
        "pid 4242 (application_name 'billing', state 'idle in transaction',"
        " transaction started 2026-12-01 08:30:05 UTC, query started 2026-12-01 08:30:05 UTC)"
    )


def test_columns_hidden_from_other_roles_are_left_out() -> None:
    # Without pg_read_all_stats another role's state and start times read as null.
    assert Blocker(7, "", None, None, None).describe() == "pid 7 (application_name '')"


def testdescribe_locks() -> None:
    assert describe_lock("relation", "ShareLock", "graphile_worker._private_jobs") == (
        "ShareLock on graphile_worker._private_jobs"
    )
    assert describe_lock("tuple", "ExclusiveLock", "s.migrations") == (
        "a row lock (ExclusiveLock) on s.migrations"
    )
    assert describe_lock("transactionid", "ShareLock", None) == (
        "another transaction's end (a row it wrote)"
    )
    assert describe_lock("advisory", "ExclusiveLock", None) == "ExclusiveLock (advisory lock)"


def test_a_wait_lists_every_blocker() -> None:
    wait = LockWait(
        "ShareLock on t", (Blocker(1, "a", None, None, None), Blocker(2, "b", None, None, None))
    )
    assert wait.describe() == (
        "ShareLock on t, held by pid 1 (application_name 'a'); pid 2 (application_name 'b')"
    )
