"""The dashboard against a million jobs: every page answers, within its bounds, and a bulk
action acts on exactly the set it counted. The jobs are loaded once (perf/web_bench.py's
loader, generate_series into a template database) and cloned with CREATE DATABASE ...
TEMPLATE; this module runs in the local PostgreSQL pass only (not again on the embedded
server), so CI pays the load once. Timings are printed, not asserted (perf/results/web.md
has the benchmark)."""

from __future__ import annotations

import os
import re
import time
import uuid
from collections.abc import Iterator

import pytest

from perf.web_bench import PAGES, clone, drop, template
from tests.conftest import FORCE_EMBEDDED
from tests.support.daemon import query
from tests.support.web import Web, free_port, write_web_config

pytestmark = pytest.mark.skipif(
    os.environ.get(FORCE_EMBEDDED, "") not in ("", "0"),
    reason="the 1M-job tests run in the local PostgreSQL pass only",
)

TOTAL = 1_000_000


@pytest.fixture(scope="module")
def million(admin_dsn: str) -> Iterator[str]:
    """The name of a template database holding a million jobs."""
    name = f"kt_web1m_tmpl_{uuid.uuid4().hex[:8]}"
    started = time.perf_counter()
    template(admin_dsn, TOTAL, name)
    print(f"\nloaded {TOTAL:,} jobs in {time.perf_counter() - started:.1f} s")
    yield name
    drop(admin_dsn, name)


@pytest.fixture(scope="module")
def million_dsn(admin_dsn: str, million: str) -> Iterator[str]:
    name = f"kt_web1m_{uuid.uuid4().hex[:8]}"
    started = time.perf_counter()
    dsn = clone(admin_dsn, million, name)
    print(f"cloned the template in {time.perf_counter() - started:.1f} s")
    yield dsn
    drop(admin_dsn, name)


@pytest.fixture(scope="module")
def web(million_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Web]:
    config = write_web_config(tmp_path_factory.mktemp("web1m"), million_dsn, refresh=0.001)
    with Web(config, free_port()) as server:
        yield server


def test_every_page_answers_within_its_bounds(web: Web, million_dsn: str) -> None:
    [(job,)] = query(
        million_dsn,
        "select id from graphile_worker._private_jobs where last_error is not null "
        "order by id desc limit 1",
    )
    timings = {}
    for page in PAGES:
        path = page.format(job=job)
        started = time.perf_counter()
        answer = web.get(path)
        timings[path] = (time.perf_counter() - started) * 1000
        assert answer.status == 200, (path, answer.text[:2000])
        assert "Traceback" not in answer.text
    print("\n" + "\n".join(f"{ms:8.1f} ms  {path}" for path, ms in timings.items()))
    overview = web.get("/").text
    # 40,000 ready jobs per task: counted from the index up to the cap, shown capped.
    assert "1,000+" in overview
    assert "among the newest 20,000 jobs" in overview
    listing = web.get("/jobs?state=failed").text
    assert "among the newest 20,000 jobs" in listing and "Search older jobs" in listing
    # A job found by key (unique index) and by id, whatever its age.
    assert web.get("/jobs?key=key-7").header("Location") == "/jobs/7"


def test_older_windows_reach_the_oldest_jobs(web: Web) -> None:
    answer = web.get("/jobs?top=60000&task=t01")
    assert answer.status == 200
    ids = [int(i) for i in re.findall(r'<td class="n"><a href="/jobs/(\d+)"', answer.text)]
    assert ids and max(ids) <= 60000 and all(i % 20 == 1 for i in ids)


def test_bulk_retry_of_one_task_s_failed_jobs_among_a_million(web: Web, million_dsn: str) -> None:
    [(expected,)] = query(
        million_dsn,
        "select count(*) from graphile_worker._private_jobs as j "
        "join graphile_worker._private_tasks as t on t.id = j.task_id "
        "where t.identifier = 't15' and j.locked_at is null and j.attempts >= j.max_attempts",
    )
    listing = web.get("/jobs?task=t15&state=failed")
    started = time.perf_counter()
    ask = web.post(
        "/jobs/bulk",
        {"csrf": listing.csrf("/jobs/bulk"), "action": "retry", "task": "t15", "state": "failed"},
    )
    counted = time.perf_counter() - started
    assert ask.status == 200 and f"<strong>{expected:,}</strong> jobs" in ask.text
    started = time.perf_counter()
    done = web.post("/jobs/bulk", {"csrf": ask.csrf("/jobs/bulk"), "confirmed": "yes"})
    acted = time.perf_counter() - started
    assert f"retried {expected:,} of the {expected:,} jobs" in done.text, done.text[:2000]
    print(f"\nbulk retry of {expected:,} of 1M: confirm page {counted:.2f} s, action {acted:.2f} s")
    [(left,)] = query(
        million_dsn,
        "select count(*) from graphile_worker._private_jobs as j "
        "join graphile_worker._private_tasks as t on t.id = j.task_id "
        "where t.identifier = 't15' and j.attempts >= j.max_attempts",
    )
    assert left == 0
