"""The dashboard in a real browser (headless Chromium through Selenium) with a real daemon:
open the overview, filter to a failing task, open a job, retry it and see it run;
bulk-retry a filter of 50 failed jobs; a logged-out browser is refused."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import wait_for
from tests.support.browser import missing, quit_browser, start_browser
from tests.support.daemon import Daemon, prepare_database, query, write_config
from tests.support.web import Web, free_port, write_web_config

pytestmark = pytest.mark.skipif(missing() is not None, reason=str(missing()))

TASKS = {"flaky_import": "handlers:remember", "bulk_import": "handlers:remember"}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    driver = start_browser()
    yield driver
    quit_browser(driver)


def failed_jobs(dsn: str, task: str, count: int) -> list[int]:
    rows = query(
        dsn,
        "select (graphile_worker.add_job(%s, %s::json, max_attempts => 3)).id "
        "from generate_series(1, %s)",
        (task, json.dumps({"from": "browser test"}), count),
    )
    ids = [row[0] for row in rows]
    query(
        dsn,
        "update graphile_worker._private_jobs set attempts = 3, last_error = %s where id = any(%s)",
        (
            "ConnectionError: partner API timed out\nTraceback (most recent call last):\n"
            '  File "app/jobs.py", line 12, in flaky_import\n'
            "ConnectionError: partner API timed out",
            ids,
        ),
    )
    return ids


def shown(browser: Any, selector: str) -> str:
    """The text of ``selector`` once the page that has it has loaded (a click that submits
    a form may return before the next page is there)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    located = (By.CSS_SELECTOR, selector)
    return (
        WebDriverWait(browser, 30)
        .until(expected_conditions.presence_of_element_located(located))
        .text
    )


def runs(dsn: str) -> set[int]:
    return {row[0] for row in query(dsn, "select job_id from kt_runs")}


def test_overview_filter_job_retry_and_bulk_retry(browser: Any, dsn: str, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    prepare_database(dsn)
    [job] = failed_jobs(dsn, "flaky_import", 1)
    bulk = failed_jobs(dsn, "bulk_import", 50)
    config = write_config(tmp_path, dsn, tasks=TASKS, task_modules=[])
    web_dir = tmp_path / "web"
    web_dir.mkdir()
    with (
        Daemon(config) as daemon,
        Web(write_web_config(web_dir, dsn, refresh=1), free_port()) as web,
    ):
        daemon.wait_ready()
        base = f"http://127.0.0.1:{web.port}"
        browser.get(base + "/")
        assert "flaky_import" in browser.find_element(By.TAG_NAME, "main").text
        # The failing task's failed count links to its failed jobs.
        row = browser.find_element(By.XPATH, "//tr[td/a[text()='flaky_import']]")
        row.find_element(By.XPATH, "./td/a[contains(@href, 'state=failed')]").click()
        assert "state=failed" in browser.current_url and "task=flaky_import" in browser.current_url
        browser.find_element(By.LINK_TEXT, str(job)).click()
        assert "partner API timed out" in browser.find_element(By.CSS_SELECTOR, "pre.error").text
        browser.find_element(By.XPATH, "//button[text()='Retry now']").click()
        browser.switch_to.alert.accept()  # app.js asks before the POST
        assert f"retried job {job}" in shown(browser, "p.done")
        wait_for(lambda: job in runs(dsn), timeout=30, what="the retried job to run")
        browser.get(f"{base}/jobs/{job}")
        assert "completed" in browser.find_element(By.CSS_SELECTOR, "p.problem").text

        # Bulk: the failed jobs of one task, all 50, through the confirm page.
        browser.get(f"{base}/jobs?task=bulk_import&state=failed")
        Select(browser.find_element(By.NAME, "action")).select_by_value("retry")
        browser.find_element(By.XPATH, "//button[starts-with(text(), 'Continue')]").click()
        question = shown(browser, "p.question")
        assert "50 jobs" in question, question
        browser.find_element(By.XPATH, "//button[starts-with(text(), 'Yes')]").click()
        assert "retried 50 of the 50 jobs" in shown(browser, "p.done")
        wait_for(lambda: set(bulk) <= runs(dsn), timeout=60, what="the 50 retried jobs to run")
        daemon.stop()


def test_a_logged_out_browser_is_refused(browser: Any, dsn: str, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    prepare_database(dsn)
    query(dsn, "select graphile_worker.add_job('private_task', '{}')")
    token = tmp_path / "web.token"
    token.write_text("ops:correct-horse-battery-staple\n")
    token.chmod(0o600)
    config = write_web_config(tmp_path, dsn, auth={"token_file": str(token)})
    with Web(config, free_port()) as web:
        base = f"http://127.0.0.1:{web.port}"
        browser.delete_all_cookies()
        browser.get(base + "/jobs")
        assert browser.find_elements(By.NAME, "token")
        assert "private_task" not in browser.page_source
        box = browser.find_element(By.NAME, "token")
        box.send_keys("correct-horse-battery-staple")
        box.submit()
        assert "private_task" in shown(browser, "main")
        browser.find_element(By.XPATH, "//button[text()='Log out']").click()
        shown(browser, "input[name=token]")
        browser.get(base + "/jobs")
        assert browser.find_elements(By.NAME, "token")
        assert "private_task" not in browser.page_source
