"""examples/django_shop end to end: migrate, a view that enqueues in its transaction (once
committed, once rolled back), then `manage.py kongtaskd --once` runs the jobs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from psycopg2.extensions import parse_dsn

from kongtaskd.enqueue import add_job
from tests.support.daemon import REPO, query

SHOP = REPO / "examples" / "django_shop"

PLACE_ORDERS = """
import json
from django.test import Client
client = Client(raise_request_exception=False)
ok = client.get("/orders/?item=pen")
failed = client.get("/orders/?item=ink&fail=1")
print(json.dumps({"ok": ok.status_code, "body": ok.json(), "failed": failed.status_code}))
"""


def _shop_env(dsn: str) -> dict[str, str]:
    params = parse_dsn(dsn)
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "DJANGO_"))}
    environ.pop("DATABASE_URL", None)
    environ.pop("NOTIFY_SOCKET", None)
    environ["SHOP_DB_NAME"] = params["dbname"]
    environ["PGHOST"] = params.get("host", "127.0.0.1")
    environ["PGPORT"] = params.get("port", "5432")
    environ["PGUSER"] = params.get("user", "postgres")
    environ["PYTHONPATH"] = os.pathsep.join(
        [str(REPO), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    )
    return environ


def _manage(environ: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=SHOP,
        env=environ,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, f"manage.py {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done


def test_the_shop_enqueues_in_its_views_transaction_and_the_daemon_runs_it(dsn: str) -> None:
    environ = _shop_env(dsn)
    migrated = _manage(environ, "migrate")
    assert "kongtaskd: schema graphile_worker is up to date (applied" in migrated.stdout
    _manage(environ, "check")
    placed = json.loads(_manage(environ, "shell", "-c", PLACE_ORDERS).stdout.splitlines()[-1])
    assert (placed["ok"], placed["failed"]) == (200, 500)
    order = placed["body"]["order"]
    # Only the committed view's order and jobs exist; the failed view left nothing.
    assert query(dsn, "select id, item from orders_order") == [(order, "pen")]
    jobs = query(dsn, "select id::text, task_identifier from graphile_worker.jobs order by id")
    assert jobs == [
        (placed["body"]["jobs"][0], "django.tasks:default"),
        (placed["body"]["jobs"][1], "django.tasks:emails"),
    ]
    add_job(dsn, "orders.audit")  # the plain kongtaskd handler of KONGTASKD["tasks"]

    ran = _manage(environ, "kongtaskd", "--once")
    assert "orders so far: 1" in ran.stderr
    # confirm_order ran and its follow-up ship_order too; email_receipt got its context.
    assert query(dsn, "select item, confirmed, shipped from orders_order") == [("pen", True, True)]
    assert query(dsn, "select order_id, attempt from orders_receipt") == [(order, 1)]
    assert query(dsn, "select count(*) from graphile_worker.jobs") == [(0,)]
