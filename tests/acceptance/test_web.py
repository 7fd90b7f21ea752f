"""The dashboard as people use it: a real ``kongtaskd web`` process, real PostgreSQL, real
HTTP; a real daemon where jobs must run. Pages empty and with hostile strings, bad input,
the shared cache (queries counted), keyset pagination, and the actions (one-time forms,
confirm pages, bulk on a filter as it was at confirm time).
"""

from __future__ import annotations

import json
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest

from tests.support import wait_for
from tests.support.daemon import Daemon, prepare_database, query, write_config
from tests.support.web import HOSTILE, Answer, Web, free_port, write_web_config

PAGES = ("/", "/jobs", "/daemons", "/queues", "/cron")


@pytest.fixture(scope="module")
def web_dsn(dsn: str) -> str:
    prepare_database(dsn)
    return dsn


@pytest.fixture(scope="module")
def web(web_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Web]:
    # Answers kept for a millisecond: every test sees the database as it just made it (the
    # cache has a test and a server of its own).
    config = write_web_config(tmp_path_factory.mktemp("web"), web_dsn, refresh=0.001)
    with Web(config, free_port()) as server:
        yield server


@pytest.fixture(autouse=True)
def empty(web_dsn: str) -> None:
    query(
        web_dsn,
        "truncate graphile_worker._private_jobs, graphile_worker._private_job_queues, "
        "graphile_worker._private_tasks, graphile_worker._kongtaskd_heartbeats, "
        "graphile_worker._kongtaskd_stats, graphile_worker._kongtaskd_completed_jobs",
    )


def add(dsn: str, task: str, count: int = 1, **options: object) -> list[int]:
    names = "".join(f", {key} => %({key})s" for key in options)
    rows = query(
        dsn,
        f"select (graphile_worker.add_job(%(task)s, %(payload)s::json{names})).id "
        "from generate_series(1, %(count)s)",
        {"task": task, "payload": json.dumps({"n": 1}), "count": count, **options},
    )
    return [row[0] for row in rows]


def fail(dsn: str, ids: list[int], error: str = "RuntimeError: boom") -> None:
    query(
        dsn,
        "update graphile_worker._private_jobs set attempts = max_attempts, last_error = %s "
        "where id = any(%s)",
        (error, ids),
    )


def no_traceback(answer: Answer) -> None:
    assert "Traceback" not in answer.text
    assert 'File "' not in answer.text


# --- pages ---------------------------------------------------------------------------------


def test_every_page_answers_on_an_empty_database(web: Web) -> None:
    for path in PAGES:
        answer = web.get(path + "?empty=1")
        assert answer.status == 200, (path, answer.text[:2000])
        no_traceback(answer)
        assert "<h1>" in answer.text
    assert "No jobs." in web.get("/?empty=2").text
    assert "No kongtaskd daemon" in web.get("/daemons?empty=2").text
    assert "No named queues" in web.get("/queues?empty=2").text


def test_every_response_carries_the_security_headers(web: Web) -> None:
    for path in (*PAGES, "/jobs/1", "/static/style.css", "/nowhere"):
        answer = web.get(path)
        csp = answer.header("Content-Security-Policy") or ""
        assert "default-src 'none'" in csp and "script-src 'self'" in csp, path
        assert "frame-ancestors 'none'" in csp, path
        assert answer.header("X-Frame-Options") == "DENY", path
        assert answer.header("X-Content-Type-Options") == "nosniff", path


def test_no_inline_script_or_handler_in_any_page(web: Web, web_dsn: str) -> None:
    [job] = add(web_dsn, "t")
    fail(web_dsn, [job])
    for path in (*PAGES, f"/jobs/{job}", "/jobs?task=t"):
        text = web.get(path + ("&" if "?" in path else "?") + "inline=1").text
        assert not re.search(r"<script(?![^>]*\bsrc=)", text), path
        assert not re.search(r"\son[a-z]+\s*=", text), path
        assert "style=" not in text, path


def test_hostile_strings_are_escaped_on_every_page(web: Web, web_dsn: str) -> None:
    ids = []
    for index, text in enumerate(HOSTILE):
        [job_id] = add(
            web_dsn,
            text[:128],
            queue_name=text[:128],
            job_key=f"{text}-{index}"[:512],
            max_attempts=1,
        )
        query(
            web_dsn,
            "update graphile_worker._private_jobs set payload = %s::json, attempts = 1, "
            "last_error = %s, flags = %s::jsonb where id = %s",
            (
                json.dumps({"x": text}),
                f"Error: {text}\n  File {text}",
                json.dumps({text: True}),
                job_id,
            ),
        )
        ids.append(job_id)
    paths = [*PAGES, *(f"/jobs/{i}" for i in ids)]
    paths += [
        "/jobs?" + "&".join(f"{k}={v}" for k, v in (("task", "%3Cscript%3E"), ("q", "onerror")))
    ]
    for path in paths:
        answer = web.get(path + ("&" if "?" in path else "?") + "hostile=1")
        assert answer.status == 200, (path, answer.text[:2000])
        no_traceback(answer)
        assert "<script>alert" not in answer.text, path
        assert "<img src=x" not in answer.text, path
    job_page = web.get(f"/jobs/{ids[0]}?hostile=2").text
    assert "&lt;script&gt;alert(" in job_page  # shown, as text
    long_page = web.get(f"/jobs/{ids[2]}?hostile=2").text
    assert HOSTILE[2][:128] in long_page  # unicode survives, unmangled


def test_bad_input_gets_a_clear_4xx_page(web: Web) -> None:
    cases = {
        "/jobs?state=exploded": (400, "state"),
        "/jobs?sort=payload": (400, "sort"),
        "/jobs?top=12abc": (400, "top"),
        "/jobs?id=-4": (400, "id"),
        "/jobs?after=nonsense": (400, "after"),
        "/jobs?task=" + "x" * 600: (400, "task"),
        "/jobs/99999999": (404, "No job 99999999"),
        "/jobs/notanumber": (404, "Not Found"),
        "/jobs?key=nobody-has-it": (404, "no job has the key"),
        "/static/../setup.cfg": (404, "Not Found"),
        "/nowhere": (404, "Not Found"),
    }
    for path, (status, words) in cases.items():
        answer = web.get(path)
        assert answer.status == status, (path, answer.status, answer.text[:500])
        assert words in answer.text, (path, answer.text[:1500])
        no_traceback(answer)
    assert web.get("/jobs/1/retry").status == 405
    refused = web.post("/jobs/1/retry", {})
    assert refused.status == 403 and "no security token" in refused.text
    assert web.post("/jobs/1/explode", {"csrf": "x"}).status == 404


def test_ten_viewers_cost_the_database_what_one_does(web_dsn: str, tmp_path: Path) -> None:
    add(web_dsn, "counted", 3)
    # A long refresh: no answer may expire between the requests on a slow machine.
    with Web(write_web_config(tmp_path, web_dsn, refresh=120), free_port()) as cached:
        before = cached.queries()
        assert cached.get("/").status == 200
        one_viewer = cached.queries() - before
        assert one_viewer >= 5  # the overview's queries did run, and were counted
        before = cached.queries()
        for _ in range(10):
            assert cached.get("/").status == 200
        assert cached.queries() == before, "answers are shared for a refresh interval"
        # The jobs page: the first viewer pays, the next nine do not.
        assert "counted" in cached.get("/jobs?task=counted").text
        before = cached.queries()
        for _ in range(9):
            cached.get("/jobs?task=counted")
        assert cached.queries() == before
        # A different filter is a different answer.
        cached.get("/jobs?task=other")
        assert cached.queries() > before


def test_jobs_list_pages_by_keyset_without_repeats(web: Web, web_dsn: str) -> None:
    ids = add(web_dsn, "paged", 120)
    seen: list[int] = []
    path: str | None = "/jobs?task=paged"
    pages = 0
    while path:
        answer = web.get(path.replace("&amp;", "&"))
        assert answer.status == 200, answer.text[:1000]
        seen += [int(i) for i in re.findall(r'<td class="n"><a href="/jobs/(\d+)"', answer.text)]
        found = re.search(r'<a href="([^"]+)" rel="next">', answer.text)
        path = found.group(1) if found else None
        pages += 1
        assert pages < 10
    assert pages == 3
    assert seen == sorted(ids, reverse=True)
    assert "120 jobs match" in web.get("/jobs?task=paged").text
    # Another sort pages through the same set, each job once.
    query(web_dsn, "update graphile_worker._private_jobs set attempts = id % 7")
    seen = []
    path = "/jobs?task=paged&sort=attempts"
    while path:
        answer = web.get(path.replace("&amp;", "&") + "&v=2")
        seen += [int(i) for i in re.findall(r'<td class="n"><a href="/jobs/(\d+)"', answer.text)]
        found = re.search(r'<a href="([^"]+)" rel="next">', answer.text)
        path = found.group(1) if found else None
    assert sorted(seen) == sorted(ids) and len(seen) == len(set(seen))


def test_filters_by_state_queue_error_key_and_id(web: Web, web_dsn: str) -> None:
    [a] = add(web_dsn, "f", queue_name="qa")
    [b] = add(web_dsn, "f", job_key="the-key")
    fail(web_dsn, [b], "ValueError: needle in a haystack")
    assert f'/jobs/{a}"' in web.get("/jobs?queue=qa").text
    listed = web.get("/jobs?state=failed&f=1").text
    assert f'/jobs/{b}"' in listed and f'/jobs/{a}"' not in listed
    searched = web.get("/jobs?q=NEEDLE").text
    assert f'/jobs/{b}"' in searched and "searched in that window" in searched
    assert web.get("/jobs?key=the-key").header("Location") == f"/jobs/{b}"
    assert web.get(f"/jobs?id={a}").header("Location") == f"/jobs/{a}"


# --- actions -------------------------------------------------------------------------------


def test_retry_through_the_confirm_page_and_a_replay_does_nothing(web: Web, web_dsn: str) -> None:
    [job] = add(web_dsn, "r")
    fail(web_dsn, [job])
    page = web.get(f"/jobs/{job}")
    token = page.csrf(f"/jobs/{job}/retry")
    # Without JavaScript the first POST asks on a page of its own; nothing changes yet.
    ask = web.post(f"/jobs/{job}/retry", {"csrf": token})
    assert ask.status == 200 and f"retry job {job}?" in ask.text
    assert query(web_dsn, "select attempts from graphile_worker._private_jobs")[0][0] == 25
    confirm = ask.csrf(f"/jobs/{job}/retry")
    done = web.post(f"/jobs/{job}/retry", {"csrf": confirm, "confirmed": "yes"})
    assert done.status == 200 and f"retried job {job}" in done.text, done.text[:2000]
    assert query(web_dsn, "select attempts from graphile_worker._private_jobs")[0][0] == 0
    # Fail it again, then replay both forms: neither acts.
    fail(web_dsn, [job])
    for form in ({"csrf": token}, {"csrf": confirm, "confirmed": "yes"}):
        replay = web.post(f"/jobs/{job}/retry", form)
        assert replay.status == 403 and "already used" in replay.text
    assert query(web_dsn, "select attempts from graphile_worker._private_jobs")[0][0] == 25
    assert re.search(rf"audit: anonymous@127\.0\.0\.1 retry ids {job}: 1 changed", web.log())


def test_a_token_works_only_for_its_own_form(web: Web, web_dsn: str) -> None:
    a, b = add(web_dsn, "own", 2)
    token = web.get(f"/jobs/{a}").csrf(f"/jobs/{a}/remove")
    wrong = web.post(f"/jobs/{b}/remove", {"csrf": token, "confirmed": "yes"})
    assert wrong.status == 403
    forged = web.post(f"/jobs/{a}/remove", {"csrf": "forged-token", "confirmed": "yes"})
    assert forged.status == 403
    assert sorted(r[0] for r in query(web_dsn, "select id from graphile_worker._private_jobs")) == [
        a,
        b,
    ]


def test_reschedule_fail_and_remove(web: Web, web_dsn: str) -> None:
    a, b, c = add(web_dsn, "acts", 3)

    def act(job: int, action: str, **fields: str) -> Answer:
        token = web.get(f"/jobs/{job}").csrf(f"/jobs/{job}/{action}")
        return web.post(f"/jobs/{job}/{action}", {"csrf": token, "confirmed": "yes", **fields})

    assert "rescheduled" in act(a, "reschedule", run_at="2031-01-02T03:04:05Z", priority="-3").text
    row = query(
        web_dsn, "select run_at, priority from graphile_worker._private_jobs where id=%s", (a,)
    )
    assert row[0][0].year == 2031 and row[0][1] == -3
    bad = act(a, "reschedule", run_at="next tuesday")
    assert bad.status == 400 and "ISO 8601" in bad.text
    assert "failed job" in act(b, "fail", message="given up <b>").text
    assert query(
        web_dsn, "select last_error from graphile_worker._private_jobs where id=%s", (b,)
    ) == [("given up <b>",)]
    assert "removed job" in act(c, "remove").text
    assert query(
        web_dsn, "select count(*) from graphile_worker._private_jobs where id=%s", (c,)
    ) == [(0,)]


def test_bulk_retry_acts_on_the_set_seen_at_confirm_time(web: Web, web_dsn: str) -> None:
    failed = add(web_dsn, "bulk", 50)
    fail(web_dsn, failed)
    others = add(web_dsn, "bulk", 5)  # not failed: not in the filter
    listing = web.get("/jobs?task=bulk&state=failed")
    ask = web.post(
        "/jobs/bulk",
        {"csrf": listing.csrf("/jobs/bulk"), "action": "retry", "task": "bulk", "state": "failed"},
    )
    assert ask.status == 200 and "<strong>50</strong> jobs" in ask.text, ask.text[:3000]
    later = add(web_dsn, "bulk", 1)  # arrives after the confirm page: left alone
    fail(web_dsn, later)
    done = web.post("/jobs/bulk", {"csrf": ask.csrf("/jobs/bulk"), "confirmed": "yes"})
    assert done.status == 200 and "retried 50 of the 50 jobs" in done.text, done.text[:2000]
    rows = dict(query(web_dsn, "select id, attempts from graphile_worker._private_jobs"))
    assert all(rows[i] == 0 for i in failed)
    assert rows[later[0]] == 25
    assert all(rows[i] == 0 for i in others)
    replay = web.post("/jobs/bulk", {"csrf": ask.csrf("/jobs/bulk"), "confirmed": "yes"})
    assert replay.status == 403
    assert re.search(
        r"audit: anonymous@127\.0\.0\.1 retry task='bulk' state='failed' up to id \d+: 50 changed",
        web.log(),
    )


def test_bulk_on_a_filter_matching_nothing_says_so(web: Web, web_dsn: str) -> None:
    add(web_dsn, "fine", 2)
    listing = web.get("/jobs?task=fine&state=failed")
    ask = web.post(
        "/jobs/bulk",
        {"csrf": listing.csrf("/jobs/bulk"), "action": "remove", "task": "fine", "state": "failed"},
    )
    assert ask.status == 200 and "No job matches" in ask.text
    assert 'name="confirmed"' not in ask.text
    assert query(web_dsn, "select count(*) from graphile_worker._private_jobs") == [(2,)]


# --- with real daemons ---------------------------------------------------------------------


def test_daemons_page_and_a_retried_job_runs(web: Web, web_dsn: str, tmp_path: Path) -> None:
    config = write_config(tmp_path, web_dsn, heartbeat_interval=1, stale_after=10)
    [job] = add(web_dsn, "remember")
    fail(web_dsn, [job])
    with Daemon(config) as daemon:
        daemon.wait_ready()
        page = web.get("/daemons?live=1")
        pool = query(web_dsn, "select pool_id, hostname from graphile_worker._kongtaskd_heartbeats")
        assert pool and pool[0][0] in page.text and pool[0][1] in page.text
        token = web.get(f"/jobs/{job}").csrf(f"/jobs/{job}/retry")
        web.post(f"/jobs/{job}/retry", {"csrf": token, "confirmed": "yes"})
        wait_for(
            lambda: (
                not query(
                    web_dsn, "select 1 from graphile_worker._private_jobs where id=%s", (job,)
                )
            ),
            timeout=30,
            what="the retried job to run",
        )
        gone = web.get(f"/jobs/{job}")
        assert gone.status == 404 and "completed" in gone.text
        daemon.stop()


def test_stops_on_sigterm_with_stopping(web_dsn: str, tmp_path: Path) -> None:
    config = write_web_config(tmp_path, web_dsn)
    server = Web(config, free_port())
    try:
        assert server.get("/").status == 200
        assert server.stop() == 0
    finally:
        server.close()


def test_a_database_only_graphile_worker_migrated_still_has_pages(
    web_dsn: str, tmp_path: Path, database_factory: object
) -> None:
    # No kongtaskd tables at all: the pages say so instead of failing.
    other = database_factory()  # type: ignore[operator]
    conn = psycopg2.connect(other)
    conn.autocommit = True
    with conn.cursor() as cur:
        from kongtaskd.schema import migrate

        migrate(conn)
        cur.execute("drop table graphile_worker._kongtaskd_heartbeats cascade")
        cur.execute("drop index graphile_worker._kongtaskd_jobs_ready")
        cur.execute("select graphile_worker.add_job('node_task', '{}')")
    conn.close()
    with Web(write_web_config(tmp_path, other), free_port()) as server:
        for path in PAGES:
            answer = server.get(path)
            assert answer.status == 200, (path, answer.text[:1500])
        assert "node_task" in server.get("/").text
        assert "graphile-worker only" in server.get("/").text
        assert "No kongtaskd heartbeat table" in server.get("/daemons").text


SLEEPY_TASK = """\
module.exports = async () => {
  await new Promise((resolve) => setTimeout(resolve, 60000));
};
"""


@pytest.mark.interop
def test_beside_a_running_graphile_worker_and_a_kongtaskd_daemon(
    web: Web, web_dsn: str, tmp_path: Path
) -> None:
    from tests.support.graphile import start_graphile

    node = tmp_path / "node"
    (node / "tasks").mkdir(parents=True)
    (node / "tasks" / "sleepy.js").write_text(SLEEPY_TASK)
    (node / "package.json").write_text('{"type": "commonjs"}')
    [job] = add(web_dsn, "sleepy", queue_name="slow")
    worker = start_graphile(["--jobs", "1"], web_dsn, cwd=node)
    config = write_config(tmp_path, web_dsn, heartbeat_interval=1, stale_after=10)
    try:

        def locked_by() -> str | None:
            if worker.poll() is not None:
                raise AssertionError(f"graphile-worker exited: {worker.communicate()}")
            rows = query(
                web_dsn, "select locked_by from graphile_worker._private_jobs where id=%s", (job,)
            )
            return rows[0][0] if rows else None

        pool = wait_for(locked_by, timeout=30, what="graphile-worker to claim the job")
        with Daemon(config) as daemon:
            daemon.wait_ready()
            [(kongtaskd_pool,)] = query(
                web_dsn, "select pool_id from graphile_worker._kongtaskd_heartbeats"
            )
            daemons = web.get("/daemons").text
            assert kongtaskd_pool in daemons  # the kongtaskd daemon, from its heartbeat
            assert f"/jobs/{job}" in daemons and pool in daemons  # the Node worker's job
            page = web.get(f"/jobs/{job}").text
            assert "running" in page and "no kongtaskd heartbeat" in page and pool in page
            queues = web.get("/queues").text
            assert "slow" in queues and f"/jobs/{job}" in queues  # who holds the queue
            overview = web.get("/").text
            assert "sleepy" in overview
            token = web.get(f"/jobs/{job}").csrf(f"/jobs/{job}/fail")
            refused = web.post(f"/jobs/{job}/fail", {"csrf": token, "confirmed": "yes"})
            assert "is running (locked by" in refused.text  # left alone, said so
            daemon.stop()
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.communicate(timeout=30)


def test_red_lines_for_a_stale_daemon_a_held_queue_and_a_failing_task(
    web: Web, web_dsn: str
) -> None:
    query(
        web_dsn,
        "insert into graphile_worker._kongtaskd_heartbeats (pool_id, hostname, pid, version, "
        "concurrency, last_beat_at) values "
        "('pool-stale00000000000001', 'gone-host', 1, 'x', 2, now() - interval '5 minutes'), "
        "('pool-late000000000000001', 'slow-host', 2, 'x', 2, now() - interval '25 seconds')",
    )
    [held] = add(web_dsn, "queued", queue_name="stuck-queue")
    query(
        web_dsn,
        "update graphile_worker._private_job_queues set locked_by = 'pool-x', "
        "locked_at = now() - interval '20 minutes'",
    )
    alerts = re.findall(r'<p class="alert">(.*?)</p>', web.get("/").text)
    assert any("pool-stale00000000000001" in a and "stale" in a for a in alerts), alerts
    assert any("pool-late000000000000001" in a and "late" in a for a in alerts), alerts
    assert any("queue stuck-queue" in a and "20m" in a for a in alerts), alerts
    assert held


def _stats_attempts(dsn: str) -> int:
    rows = query(
        dsn,
        "select coalesce(sum(succeeded + failed + retried), 0) "
        "from graphile_worker._kongtaskd_stats",
    )
    return int(rows[0][0])


def test_statistics_of_a_daemons_jobs_fill_the_overview(
    web: Web, web_dsn: str, tmp_path: Path
) -> None:
    # A real daemon runs 10 "noop" jobs and 25 "fail" ones (new this hour: usual rate 0).
    config = write_config(tmp_path, web_dsn, heartbeat_interval=1, stale_after=10)
    add(web_dsn, "noop", 10)
    add(web_dsn, "fail", 25, max_attempts=1)
    with Daemon(config) as daemon:
        daemon.wait_ready()
        wait_for(
            lambda: _stats_attempts(web_dsn) >= 35,
            timeout=60,
            what="the daemon to record 35 attempts in the statistics",
        )
        daemon.stop()
    page = web.get("/?stats=1")
    assert page.status == 200, page.text[:2000]
    no_traceback(page)
    text = page.text
    assert "no statistics" not in text
    assert "Counts kongtaskd&#39;s work only" in text or "Counts kongtaskd's work only" in text
    rows = dict(
        re.findall(
            r'<tr>\s*<td><a href="[^"]*">(noop|fail)</a></td>\s*<td class="n">([\d,]+)</td>',
            text,
        )
    )
    assert rows == {"noop": "10", "fail": "25"}, rows
    assert "25 (100.0%)" in text
    assert text.count('aria-label="attempts per minute') == 2
    assert 'aria-label="failed attempts per minute, last hour"' in text
    alerts = re.findall(r'<p class="alert">(.*?)</p>', text)
    assert any(
        "task fail is failing above its usual rate: 25 of 25 attempts" in a for a in alerts
    ), alerts
    assert not any("noop" in a for a in alerts), alerts


def test_a_task_failing_at_its_usual_rate_is_no_red_line(web: Web, web_dsn: str) -> None:
    # Statistics rows as the supervisors write them: "usual" failed half its attempts all
    # day and still does; "worse" failed 1 in 20 and now fails 15 of 20.
    query(
        web_dsn,
        "insert into graphile_worker._kongtaskd_stats (minute, task_identifier, succeeded, "
        "failed, retried, run_seconds_sum, histogram) values "
        "(date_trunc('minute', now()) - interval '5 hours', 'usual', 20, 20, 0, 1, '{}'), "
        "(date_trunc('minute', now()) - interval '5 minutes', 'usual', 10, 10, 0, 1, '{}'), "
        "(date_trunc('minute', now()) - interval '5 hours', 'worse', 19, 1, 0, 1, '{}'), "
        "(date_trunc('minute', now()) - interval '5 minutes', 'worse', 5, 0, 15, 1, '{}')",
    )
    alerts = re.findall(r'<p class="alert">(.*?)</p>', web.get("/?usual=1").text)
    assert any("task worse is failing above its usual rate: 15 of 20" in a for a in alerts), alerts
    assert not any(a.startswith("task usual ") for a in alerts), alerts


def test_a_finished_job_is_found_in_the_history(web: Web, web_dsn: str, tmp_path: Path) -> None:
    config = write_config(
        tmp_path, web_dsn, heartbeat_interval=1, stale_after=10, keep_completed="1h"
    )
    [job] = add(web_dsn, "remember", job_key="history-key")
    with Daemon(config) as daemon:
        daemon.wait_ready()
        wait_for(
            lambda: query(
                web_dsn,
                "select 1 from graphile_worker._kongtaskd_completed_jobs where id=%s",
                (job,),
            ),
            timeout=30,
            what="the job's history record",
        )
        host = query(web_dsn, "select hostname from graphile_worker._kongtaskd_heartbeats")[0][0]
        found = web.get(f"/jobs/{job}")
        daemon.stop()
    assert found.status == 200, found.text[:2000]
    assert re.search(
        rf"Job {job} \(remember\) finished [^<]* ago on {re.escape(host)} in [\d.e-]+ s\.",
        found.text,
    ), found.text
    assert "history-key" in found.text
    listed = web.get("/jobs?task=remember").text
    assert "Recently finished" in listed and f'href="/jobs/{job}"' in listed
    # The search by id leads there.
    answer = web.get(f"/jobs?id={job}")
    assert answer.status in (302, 303) and (answer.header("Location") or "").endswith(
        f"/jobs/{job}"
    )
    never = web.get("/jobs/999999999")
    assert never.status == 404 and "no record of it" in never.text


def test_daemons_page_names_the_childs_job_and_cron_its_next_run(
    web: Web, web_dsn: str, tmp_path: Path
) -> None:
    config = write_config(
        tmp_path,
        web_dsn,
        heartbeat_interval=1,
        stale_after=10,
        concurrency=2,
        crontab="0 3 * * * remember ?id=nightly\n",
    )
    [job] = add(web_dsn, "spin")
    with Daemon(config) as daemon:
        daemon.wait_ready()

        def published() -> bool:
            rows = query(
                web_dsn,
                "select 1 from graphile_worker._kongtaskd_heartbeats, "
                "jsonb_array_elements(details->'children') as c where (c->>'job_id')::bigint = %s",
                (job,),
            )
            return bool(rows)

        wait_for(published, timeout=30, what="the heartbeat to name the child running the job")
        query(
            web_dsn,
            "insert into graphile_worker._private_known_crontabs (identifier, known_since) "
            "values ('nightly', now()) on conflict do nothing",
        )
        page = web.get("/daemons?children=1").text
        cron = web.get("/cron?next=1").text
        daemon.stop()
    row = re.search(
        rf'<tr><td class="n">\d+</td><td class="n">\d+</td><td>busy</td>'
        rf'<td class="n"><a href="/jobs/{job}">{job}</a></td><td>spin</td>',
        page,
    )
    assert row, page
    assert "1 busy, 1 idle of 2 children" in page
    assert "Configuration summary" in page and "concurrency" in page
    assert re.search(r"<tr><td>nightly</td><td>\d{4}-\d\d-\d\dT03:00:00", cron), cron


def test_cancel_a_job_through_the_confirm_page(web: Web, web_dsn: str) -> None:
    [job] = add(web_dsn, "t")
    token = web.get(f"/jobs/{job}").csrf(f"/jobs/{job}/cancel")
    assert web.post(f"/jobs/{job}/cancel", {}).status == 403
    confirm = web.post(f"/jobs/{job}/cancel", {"csrf": token})
    assert confirm.status == 200 and "cancel job" in confirm.text
    done = web.post(
        f"/jobs/{job}/cancel",
        {"csrf": confirm.csrf(f"/jobs/{job}/cancel"), "confirmed": "yes"},
    )
    assert done.status == 200 and f"cancelled job {job}" in done.text, done.text
    [(attempts, max_attempts, error)] = query(
        web_dsn,
        "select attempts, max_attempts, last_error from graphile_worker._private_jobs "
        "where id = %s",
        (job,),
    )
    assert attempts == max_attempts and error.startswith("cancelled by anonymous@"), error
    # A second cancel is refused by name (already permanently failed), not a 500.
    token = web.get(f"/jobs/{job}").csrf(f"/jobs/{job}/cancel")
    again = web.post(f"/jobs/{job}/cancel", {"csrf": token, "confirmed": "yes"})
    assert again.status == 200 and "already permanently failed" in again.text


def _pauses(dsn: str) -> set[tuple[str, str]]:
    from kongtaskd import steer

    return {(p.kind, p.name) for p in steer.pauses(dsn)}


def test_pause_and_resume_a_task_and_a_queue(web: Web, web_dsn: str) -> None:
    add(web_dsn, "slow<b>?#%", queue_name="q/one")
    path = "/tasks/slow%3Cb%3E%3F%23%25"  # the task's name, percent-encoded in the path
    overview = web.get("/?pause=1")
    token = overview.csrf(path + "/pause")
    assert web.post(path + "/pause", {"csrf": "forged", "confirmed": "yes"}).status == 403
    assert _pauses(web_dsn) == set()
    confirm = web.post(path + "/pause", {"csrf": token})
    assert confirm.status == 200 and "pause task slow&lt;b&gt;?#%" in confirm.text
    token = confirm.csrf(path + "/pause")
    done = web.post(path + "/pause", {"csrf": token, "confirmed": "yes"})
    assert done.status == 200 and "paused task slow&lt;b&gt;?#%" in done.text, done.text
    queues = web.get("/queues?pause=1")
    done = web.post(
        "/queues/q/one/pause", {"csrf": queues.csrf("/queues/q/one/pause"), "confirmed": "yes"}
    )
    assert done.status == 200, done.text
    assert _pauses(web_dsn) == {("task", "slow<b>?#%"), ("queue", "q/one")}
    overview = web.get("/?paused=1")
    assert "<h2>Paused</h2>" in overview.text and "queue q/one" in overview.text
    assert "Paused: queue q/one" in web.get("/queues?paused=1").text
    # A replayed form does nothing.
    assert web.post(path + "/pause", {"csrf": token, "confirmed": "yes"}).status == 403
    resume = overview.csrf(path + "/resume")
    assert web.post(path + "/resume", {"csrf": resume, "confirmed": "yes"}).status == 200
    assert _pauses(web_dsn) == {("queue", "q/one")}
