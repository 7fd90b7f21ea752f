"""Make the README's dashboard screenshots: ``python docs/screenshots.py``.

Creates a throwaway database on the local PostgreSQL (``--admin-dsn``), fills it with a
small, plausible queue (a few tasks, one of them failing with a traceback, a held named
queue, a daemon's heartbeat), starts ``kongtaskd web`` on it and photographs the overview,
a filtered jobs list and a failed job's page with headless Chromium (Debian's chromium and
chromium-driver, through Selenium) into ``docs/screenshots/``. Run by hand, not by CI.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg2

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from perf.web_bench import _admin, _free_port, _with_db  # noqa: E402
from tests.support.browser import quit_browser, start_browser  # noqa: E402

OUT = REPO / "docs" / "screenshots"

DEMO = """
select graphile_worker.add_job('send_email',
  json_build_object('to', 'user' || n || '@example.com')) from generate_series(1, 240) as n;
select graphile_worker.add_job('resize_image', json_build_object('image', n),
  run_at => now() + interval '20 minutes') from generate_series(1, 60) as n;
select graphile_worker.add_job('sync_partner',
  json_build_object('partner', 'acme', 'order', 1000 + n), queue_name => 'partner-acme',
  max_attempts => 5)
  from generate_series(1, 35) as n;
select graphile_worker.add_job('nightly_report', '{"day": "2026-11-30"}');
update graphile_worker._private_jobs set attempts = case when id % 3 = 0 then 5 else 2 end,
  run_at = now() + interval '3 minutes',
  last_error = E'ConnectionError: partner API timed out after 30 s\\n'
    'Traceback (most recent call last):\\n'
    '  File "/srv/app/jobs/partner.py", line 41, in sync_partner\\n'
    '    response = client.post("/orders", json=payload, timeout=30)\\n'
    '  File "/srv/app/partner/client.py", line 88, in post\\n'
    '    raise ConnectionError(f"partner API timed out after {timeout} s")\\n'
    'ConnectionError: partner API timed out after 30 s'
  where task_id = (select id from graphile_worker._private_tasks where identifier = 'sync_partner')
    and id % 2 = 0;
insert into graphile_worker._kongtaskd_heartbeats
  (pool_id, hostname, pid, version, concurrency, busy, jobs_done, started_at, last_beat_at)
  values ('pool-3f9c2a71b04de8a615', 'worker-1', 81234, '0.1.0', 8, 2, 48211,
          now() - interval '3 hours', now() - interval '4 seconds');
update graphile_worker._private_jobs set locked_at = now() - interval '40 seconds',
  locked_by = 'pool-3f9c2a71b04de8a615'
  where id in (select id from graphile_worker._private_jobs
               where task_id = (select id from graphile_worker._private_tasks
                                where identifier = 'send_email') order by id limit 2);
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--admin-dsn", default="host=127.0.0.1 port=5432 user=postgres dbname=postgres"
    )
    args = parser.parse_args()
    from psycopg2 import sql

    from kongtaskd.schema import migrate
    from tests.support.web import Web, write_web_config

    name = f"kt_screens_{uuid.uuid4().hex[:8]}"
    _admin(args.admin_dsn, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = _with_db(args.admin_dsn, name)
    try:
        conn = psycopg2.connect(dsn)
        migrate(conn)
        with conn, conn.cursor() as cur:
            cur.execute(DEMO)
            cur.execute(
                "select id from graphile_worker._private_jobs where last_error is not null "
                "order by id limit 1"
            )
            (failed,) = cur.fetchone()
        conn.close()
        os.environ.setdefault("PYTHONPATH", str(REPO))
        config = write_web_config(Path(tempfile.mkdtemp()), dsn, log_level="warning")
        OUT.mkdir(parents=True, exist_ok=True)
        with Web(config, _free_port()) as web:
            driver = start_browser()
            try:
                base = f"http://127.0.0.1:{web.port}"
                for path, file in (
                    ("/", "overview.png"),
                    ("/jobs?task=sync_partner", "jobs.png"),
                    (f"/jobs/{failed}", "job.png"),
                ):
                    driver.get(base + path)
                    if file == "job.png":
                        driver.find_element("css selector", "details").click()
                    time.sleep(0.3)  # let fonts settle before the picture
                    driver.save_screenshot(str(OUT / file))
                    print(f"wrote {OUT / file}")
            finally:
                quit_browser(driver)
    finally:
        _admin(
            args.admin_dsn,
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)),
        )


if __name__ == "__main__":
    main()
