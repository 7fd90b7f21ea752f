"""Statistics, completed-job history and daemon details, with real daemons (issue 14).

Each test runs a real supervisor with forked children against a fresh database and reads
what it wrote: the per-minute statistics must add up exactly to the outcomes, be written
once per heartbeat (never per job), and be pruned after ``stats_retention``; history rows
exist only with ``keep_completed`` and carry the job's fields; the heartbeat row says which
child runs which job and when each crontab item runs next. Waits are on database state.
"""

from __future__ import annotations

import datetime
import json
import socket
import zoneinfo
from pathlib import Path

import psycopg2
import pytest

from kongtaskd import stats, tally
from tests.support import wait_for
from tests.support.daemon import Daemon, prepare_database, query, write_config

#: Short beats so the tests see rows soon; stale_after must be more than twice as long.
FAST = {"heartbeat_interval": 0.5, "stale_after": 30}


@pytest.fixture()
def db(fresh_dsn: str) -> str:
    prepare_database(fresh_dsn)
    return fresh_dsn


def add_job(dsn: str, task: str, payload: object = None, **options: object) -> int:
    names = ", ".join(f"{key} => %({key})s" for key in options)
    params = {"task": task, "payload": json.dumps(payload or {}), **options}
    extra = f", {names}" if names else ""
    text = f"select id from graphile_worker.add_job(%(task)s, %(payload)s::json{extra})"
    return int(query(dsn, text, params)[0][0])


def totals(dsn: str) -> dict[str, tuple[int, int, int, int]]:
    """Per task: succeeded, failed, retried, attempts in the histogram."""
    rows = query(
        dsn,
        "select task_identifier, sum(succeeded), sum(failed), sum(retried),"
        " sum((select sum(h) from unnest(histogram) as h))"
        " from graphile_worker._kongtaskd_stats group by 1",
    )
    return {task: (int(a), int(b), int(c), int(d)) for task, a, b, c, d in rows}


def row_writes(dsn: str, table: str) -> int:
    """Rows inserted plus rows updated in ``table`` since the database was created."""
    ((count,),) = query(
        dsn,
        "select n_tup_ins + n_tup_upd from pg_stat_user_tables"
        " where schemaname = 'graphile_worker' and relname = %s",
        (table,),
    )
    return int(count)


def connect(dsn: str) -> psycopg2.extensions.connection:
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    return conn


def test_statistics_add_up_exactly_and_are_written_once_per_heartbeat(db: str, tmp_path: Path):
    # 200 successes of 5 ms (long enough that each goes to a child on its own, so the
    # supervisor writes outcomes in about as many settles as jobs), 5 jobs that fail for
    # good on their only attempt, 4 that fail once (retried) and then succeed.
    for n in range(200):
        add_job(db, "remember", {"n": n, "sleep": 0.005})
    for _ in range(5):
        add_job(db, "fail", max_attempts=1)
    for _ in range(4):
        add_job(db, "fail_then_succeed", {"succeed_on": 2}, max_attempts=3)
    config = write_config(tmp_path, db, concurrency=2, heartbeat_interval=2, stale_after=30)
    with Daemon(config) as daemon:
        daemon.wait_ready()
        expected = {
            "remember": (200, 0, 0, 200),
            "fail": (0, 5, 0, 5),
            "fail_then_succeed": (4, 0, 4, 8),
        }
        wait_for(lambda: totals(db) == expected, timeout=90, what=f"statistics {expected}")
        assert daemon.stop() == 0
    assert totals(db) == expected  # the final flush added nothing twice

    # Once per heartbeat, never per job or per settle: each beat adds at most one row per
    # task and minute it saw (a beat's counts can straddle a minute boundary: two),
    # whatever the number of jobs. Row counters are read after the daemon's backend
    # exited, which flushed them.
    beats = row_writes(db, "_kongtaskd_heartbeats")
    stat_rows = row_writes(db, "_kongtaskd_stats")
    assert 0 < stat_rows <= (beats + 1) * len(expected) * 2, (stat_rows, beats)

    # The read API sees the same.
    with connect(db) as conn:
        since = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=1)
        summaries = {s.task: s for s in stats.task_summaries(conn, "graphile_worker", since)}
    assert summaries["fail_then_succeed"].failure_rate == 0.5
    assert summaries["remember"].p50 is not None
    assert summaries["remember"].run_seconds_sum >= 200 * 0.005


def test_old_statistics_and_history_are_pruned_in_batches_young_ones_kept(db: str, tmp_path: Path):
    empty = "{" + ",".join(["0"] * (len(tally.BUCKETS) + 1)) + "}"
    # More old rows than one prune batch (tunables.PRUNE_BATCH): the backlog is worked off.
    query(
        db,
        "insert into graphile_worker._kongtaskd_stats (minute, task_identifier, succeeded,"
        " histogram) select now() - interval '8 days' - n * interval '1 minute', 'old', 1, %s"
        " from generate_series(1, 2500) as n",
        (empty,),
    )
    query(
        db,
        "insert into graphile_worker._kongtaskd_stats (minute, task_identifier, succeeded,"
        " histogram) values (now() - interval '6 days', 'young', 1, %s)",
        (empty,),
    )
    history = (
        "insert into graphile_worker._kongtaskd_completed_jobs (id, task_identifier, attempts,"
        " created_at, finished_at, pool_id) select n, %s, 1, now(), now() - %s::interval,"
        " 'pool-elsewhere' from generate_series(%s, %s) as n"
    )
    query(db, history, ("old", "3 hours", 1, 2500))
    query(db, history, ("young", "10 minutes", 5000, 5000))
    config = write_config(tmp_path, db, keep_completed="1h", **FAST)  # stats_retention: 7d
    with Daemon(config) as daemon:
        daemon.wait_ready()

        def left() -> list[tuple[object, ...]]:
            return query(
                db,
                "select 'stats', task_identifier, count(*) from graphile_worker._kongtaskd_stats"
                " group by 2 union all select 'history', task_identifier, count(*)"
                " from graphile_worker._kongtaskd_completed_jobs group by 2 order by 1, 2",
            )

        wait_for(
            lambda: left() == [("history", "young", 1), ("stats", "young", 1)],
            timeout=60,
            what="old rows pruned",
        )
        assert daemon.stop() == 0


def test_history_only_with_keep_completed_and_with_the_jobs_fields(db: str, tmp_path: Path):
    without = write_config(tmp_path, db, **FAST)
    first = add_job(db, "remember", {"n": 1})
    with Daemon(without) as daemon:
        daemon.wait_ready()
        wait_for(lambda: not query(db, "select 1 from graphile_worker._private_jobs"))
        assert daemon.stop() == 0
    assert query(db, "select count(*) from graphile_worker._kongtaskd_completed_jobs") == [(0,)]

    queued = add_job(db, "remember", {"sleep": 0.3}, queue_name="q-hist", job_key="key-7")
    retried = add_job(db, "fail_then_succeed", {"succeed_on": 2}, max_attempts=3)
    created = dict(query(db, "select id, created_at from graphile_worker._private_jobs"))
    kept = tmp_path / "kept"
    kept.mkdir()
    with Daemon(write_config(kept, db, keep_completed="24h", **FAST)) as daemon:
        daemon.wait_ready()
        wait_for(
            lambda: not query(db, "select 1 from graphile_worker._private_jobs"),
            timeout=60,
            what="both jobs done",
        )
        ((pool,),) = query(db, "select pool_id from graphile_worker._kongtaskd_heartbeats")
        with connect(db) as conn:
            record = stats.completed(conn, "graphile_worker", queued)
            again = stats.completed(conn, "graphile_worker", retried)
            newest = stats.recent_completed(conn, "graphile_worker", limit=10)
            assert stats.completed(conn, "graphile_worker", first) is None  # ran without
        assert daemon.stop() == 0
    assert record is not None and again is not None
    assert (record.id, record.task, record.queue, record.key, record.attempts) == (
        queued,
        "remember",
        "q-hist",
        "key-7",
        1,
    )
    assert record.created_at == created[queued]
    assert record.pool_id == pool and record.hostname == socket.gethostname()
    assert record.run_seconds is not None and record.run_seconds >= 0.3
    assert record.started_at is not None
    assert (record.finished_at - record.started_at).total_seconds() == pytest.approx(
        record.run_seconds, abs=1e-3
    )
    assert record.started_at >= record.created_at
    assert (again.task, again.queue, again.key, again.attempts) == (
        "fail_then_succeed",
        None,
        None,
        2,
    )
    assert {job.id for job in newest} == {queued, retried}


def test_the_heartbeat_row_shows_which_child_runs_which_job(db: str, tmp_path: Path):
    gate = tmp_path / "gate"
    secret = "Sup3rSecretPassw0rd"
    config = write_config(
        tmp_path, db + f" password={secret}", concurrency=2, keep_completed="2h", **FAST
    )
    with Daemon(config) as daemon:
        daemon.wait_ready()
        job_id = add_job(db, "remember", {"gate": str(gate), "sleep": 60})

        def running() -> dict[str, object] | None:
            for (details,) in query(
                db, "select details from graphile_worker._kongtaskd_heartbeats"
            ):
                for child in (details or {}).get("children", []):
                    if child["job_id"] == job_id:
                        return child
            return None

        child = wait_for(running, timeout=30, what=f"a child running job {job_id} published")
        assert child["state"] == "busy" and child["task"] == "remember"
        assert child["pid"] in daemon.children()
        assert child["since"] is not None
        since = datetime.datetime.fromisoformat(str(child["since"]))
        assert since <= datetime.datetime.now(datetime.timezone.utc)
        with connect(db) as conn:
            (pool,) = stats.daemons(conn, "graphile_worker")
        assert not pool.stale and pool.details is not None
        assert len(pool.children) == 2 and pool.details["children_count"] == 2
        assert [c["state"] for c in pool.children].count("idle") == 1
        summary = pool.details["config"]
        assert summary["concurrency"] == 2 and "remember" in summary["tasks"]
        assert summary["keep_completed"] == 7200.0
        assert pool.details["cron"] is None
        ((text,),) = query(db, "select details::text from graphile_worker._kongtaskd_heartbeats")
        assert secret not in text and "password" not in text
        gate.touch()
        wait_for(lambda: running() is None, timeout=30, what="the child idle again")
        assert daemon.stop() == 0


def test_each_crontab_items_next_run_is_published_in_its_time_zone(db: str, tmp_path: Path):
    config = write_config(
        tmp_path,
        db,
        crontab="0 3 * * * remember ?id=nightly\n*/5 * * * * noop\n",
        timezone="Europe/Paris",
        **FAST,
    )
    with Daemon(config) as daemon:
        daemon.wait_ready()

        def cron() -> dict[str, object] | None:
            rows = query(db, "select details->'cron' from graphile_worker._kongtaskd_heartbeats")
            return rows[0][0] if rows and rows[0][0] else None

        published = wait_for(cron, timeout=30, what="crontab details")
        assert daemon.stop() == 0
    assert published["timezone"] == "Europe/Paris" and published["items_count"] == 2
    items = {item["identifier"]: item for item in published["items"]}  # type: ignore[index]
    paris = zoneinfo.ZoneInfo("Europe/Paris")
    now = datetime.datetime.now(paris)
    nightly = now.replace(hour=3, minute=0, second=0, microsecond=0)
    if nightly <= now:
        nightly = (now + datetime.timedelta(days=1)).replace(
            hour=3, minute=0, second=0, microsecond=0
        )
    assert items["nightly"]["task"] == "remember"
    published_at = datetime.datetime.fromisoformat(items["nightly"]["next_run"])
    assert published_at == nightly.astimezone(datetime.timezone.utc)
    local = datetime.datetime.fromisoformat(items["nightly"]["next_run_local"])
    assert (local.hour, local.minute) == (3, 0) and local.utcoffset() == nightly.utcoffset()
    five = datetime.datetime.fromisoformat(items["noop"]["next_run"])
    assert five.minute % 5 == 0 and five > now - datetime.timedelta(minutes=1)
