"""The Prometheus endpoint: scrape a live daemon after jobs ran; counters match what ran."""

from __future__ import annotations

import signal
import socket
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.acceptance.test_daemon import add_job, job_row, jobs_left
from tests.support import wait_for
from tests.support.daemon import Daemon, prepare_database, write_config


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert response.status == 200
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


@pytest.fixture()
def db(fresh_dsn: str) -> str:
    prepare_database(fresh_dsn)
    return fresh_dsn


def test_metrics_count_what_ran(db: str, tmp_path: Path):
    port = free_port()
    tasks = {
        "remember": "handlers:remember",
        "fail": "handlers:fail",
        "fail_then_succeed": "handlers:fail_then_succeed",
        "spin": {"handler": "handlers:spin", "timeout": 0.5},
    }
    config = write_config(
        tmp_path,
        db,
        concurrency=2,
        tasks=tasks,
        task_modules=[],
        metrics={"host": "127.0.0.1", "port": port},
    )
    with Daemon(config) as daemon:
        daemon.wait_ready()
        ok = [add_job(db, "remember", {"n": n}) for n in range(5)]
        retried = add_job(db, "fail_then_succeed", {"succeed_on": 2})
        final = add_job(db, "fail", {}, max_attempts=1)
        stuck = add_job(db, "spin", {}, max_attempts=1)
        add_job(db, "remember", {}, run_at="2999-01-01T00:00:00Z")
        wait_for(lambda: all(job_row(db, i) is None for i in [*ok, retried]), what="successes")
        wait_for(
            lambda: all((job_row(db, i) or {}).get("last_error") for i in (final, stuck)),
            timeout=20,
            what="the failures",
        )
        samples = scrape(port)
        task = lambda name: (("task", name),)  # noqa: E731
        assert samples[("kongtaskd_jobs_succeeded_total", task("remember"))] == 5
        assert samples[("kongtaskd_jobs_started_total", task("remember"))] == 5
        assert samples[("kongtaskd_jobs_failed_total", task("fail_then_succeed"))] == 1
        assert samples[("kongtaskd_jobs_retried_total", task("fail_then_succeed"))] == 1
        assert samples[("kongtaskd_jobs_succeeded_total", task("fail_then_succeed"))] == 1
        assert samples[("kongtaskd_jobs_failed_total", task("fail"))] == 1
        assert samples[("kongtaskd_jobs_retried_total", task("fail"))] == 0  # max_attempts 1
        assert samples[("kongtaskd_jobs_timed_out_total", task("spin"))] == 1
        assert samples[("kongtaskd_jobs_failed_total", task("spin"))] == 1
        assert samples[("kongtaskd_job_duration_seconds_count", task("remember"))] == 5
        assert samples[("kongtaskd_child_restarts_total", (("reason", "timeout"),))] == 1
        assert samples[("kongtaskd_notify_wakeups_total", ())] >= 1
        assert samples[("kongtaskd_claim_batch_size_sum", ())] == 5 + 2 + 1 + 1
        busy = samples[("kongtaskd_children", (("state", "busy"),))]
        idle = samples[("kongtaskd_children", (("state", "idle"),))]
        assert busy + idle <= 2
        # Left: two permanently failed jobs (neither ready, scheduled nor locked) and one
        # scheduled far in the future.
        depth = {
            s: samples[("kongtaskd_queue_depth", (("state", s),))]
            for s in ("ready", "scheduled", "locked")
        }
        assert depth == {"ready": 0, "scheduled": 1, "locked": 0}
        assert jobs_left(db) == 3
        assert daemon.stop() == 0


#: Every per-task series, by the sample name a scrape shows (counters end in _total).
TASK_SERIES = (
    "kongtaskd_jobs_started_total",
    "kongtaskd_jobs_succeeded_total",
    "kongtaskd_jobs_failed_total",
    "kongtaskd_jobs_retried_total",
    "kongtaskd_jobs_timed_out_total",
    "kongtaskd_job_duration_seconds_count",
)


def test_every_known_task_has_its_series_at_zero_before_its_first_job(db: str, tmp_path: Path):
    # Absent series break rate() and alerts: each task the daemon runs (configured, found by
    # @kongtaskd.task in a task module, added by a reload) is exported at 0 from the start.
    port = free_port()
    tasks = {"remember": "handlers:remember", "fail": "handlers:fail"}
    metrics = {"host": "127.0.0.1", "port": port}
    config = write_config(tmp_path, db, tasks=tasks, task_modules=["handlers"], metrics=metrics)
    with Daemon(config) as daemon:
        daemon.wait_ready()
        samples = scrape(port)
        for name in ("remember", "fail", "decorated"):
            for series in TASK_SERIES:
                assert samples.get((series, (("task", name),))) == 0, (series, name)
        for reason in ("start_failed", "timeout", "died", "recycled", "reload"):
            assert samples[("kongtaskd_child_restarts_total", (("reason", reason),))] == 0
        config = write_config(
            tmp_path, db, tasks={**tasks, "noop": "handlers:noop"}, task_modules=[], metrics=metrics
        )
        daemon.signal(signal.SIGHUP)
        wait_for(
            lambda: ("kongtaskd_jobs_succeeded_total", (("task", "noop"),)) in scrape(port),
            timeout=30,
            what="the series of the task the reload added",
        )
        samples = scrape(port)
        for series in TASK_SERIES:
            assert samples[(series, (("task", "noop"),))] == 0, series
        # A task no longer configured keeps its series (counters never go back).
        assert samples[("kongtaskd_jobs_started_total", (("task", "decorated"),))] == 0
        job_id = add_job(db, "noop", {})
        wait_for(lambda: job_row(db, job_id) is None, what="a noop job")
        wait_for(
            lambda: scrape(port)[("kongtaskd_jobs_succeeded_total", (("task", "noop"),))] == 1,
            what="the first noop success counted",
        )
        assert daemon.stop() == 0


def test_metrics_are_off_by_default_and_bind_loopback(db: str, tmp_path: Path):
    config = write_config(tmp_path, db)
    with Daemon(config) as daemon:
        daemon.wait_ready()
        assert "metrics at" not in daemon.log()
        assert daemon.stop() == 0
    port = free_port()
    config = write_config(tmp_path, db, metrics={"port": port})
    with Daemon(config) as daemon:
        daemon.wait_ready()
        assert f"metrics at http://127.0.0.1:{port}/metrics" in daemon.log()
        assert scrape(port)
        assert daemon.stop() == 0
