"""examples/: the shop's handlers, its enqueue-on-insert trigger and the Python snippet that
enqueues inside the application's transaction, each run for real (conf/kongtask.yaml, as the
README runs it, with DATABASE_URL pointing at a fresh database)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg2
import pytest

from tests.support.daemon import prepare_database, query

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
CONFIG = REPO / "conf" / "kongtask.yaml"

sys.path.insert(0, str(EXAMPLES))
import signup  # noqa: E402 - the example module itself, from examples/

sys.path.remove(str(EXAMPLES))


def jobs(dsn: str) -> list[tuple[object, ...]]:
    return query(
        dsn,
        "select t.identifier, j.key, j.payload::text from graphile_worker._private_jobs j "
        "join graphile_worker._private_tasks t on t.id = j.task_id order by j.id",
    )


@pytest.fixture()
def shop(fresh_dsn: str) -> str:
    """A fresh database with the queue schema and examples/schema.sql applied."""
    prepare_database(fresh_dsn)
    query(fresh_dsn, (EXAMPLES / "schema.sql").read_text())
    return fresh_dsn


def environment(dsn: str, outbox: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "NOTIFY_SOCKET")}
    env["DATABASE_URL"] = dsn
    env["EXAMPLE_OUTBOX"] = str(outbox)
    return env


def run_daemon_once(env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "kongtaskd", "-c", str(CONFIG), "--once"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stderr


def test_the_trigger_enqueues_in_the_inserting_transaction(shop: str) -> None:
    conn = psycopg2.connect(shop)
    try:
        with conn.cursor() as cur:
            cur.execute("insert into shop_orders (customer_email, items) values ('a@x', '{mug}')")
        conn.rollback()  # a rolled-back order leaves no job behind
        assert jobs(shop) == []
        with conn, conn.cursor() as cur:
            cur.execute(
                "insert into shop_orders (customer_email, items) values ('a@x', '{mug}') "
                "returning id"
            )
            (order_id,) = cur.fetchone()
    finally:
        conn.close()
    assert jobs(shop) == [
        ("order_placed", f"order-placed-{order_id}", f'{{"order_id" : {order_id}}}')
    ]
    assert query(shop, "select max_attempts from graphile_worker.jobs") == [(10,)]


def test_an_order_fans_out_into_an_email_and_thumbnails(shop: str, tmp_path: Path) -> None:
    query(
        shop,
        "insert into shop_orders (customer_email, items) values ('ada@example.com', %s)",
        (["mug", "teapot"],),
    )
    log = run_daemon_once(environment(shop, tmp_path))
    assert "order 1 confirmed: 1 email and 2 thumbnails queued" in log
    assert "sent 'Order 1 confirmed' to ada@example.com" in log
    assert jobs(shop) == []  # every job, follow-ups included, ran and succeeded
    assert query(shop, "select confirmed_at is not null from shop_orders") == [(True,)]
    email = (tmp_path / "order-1.eml").read_text()
    assert email.startswith("To: ada@example.com\nSubject: Order 1 confirmed\n")
    assert "You ordered: mug, teapot" in email
    for sku in ("mug", "teapot"):
        header, _, pixels = (tmp_path / f"{sku}-thumb.pgm").read_bytes().partition(b"255\n")
        assert header == b"P5\n64 64\n" and len(pixels) == 64 * 64
    # Deterministic: the same SKU always renders the same picture.
    assert (tmp_path / "mug-thumb.pgm").read_bytes() != (tmp_path / "teapot-thumb.pgm").read_bytes()
    assert "thumbnail of mug: 512x512 -> 64x64" in log


def test_a_repeated_order_job_replaces_its_follow_ups(shop: str, tmp_path: Path) -> None:
    """order_placed is safe to repeat: its job keys replace, they do not duplicate."""
    query(shop, "insert into shop_orders (customer_email, items) values ('b@x', '{cup}')")
    query(shop, "select graphile_worker.add_job('order_placed', '{\"order_id\": 1}')")
    env = environment(shop, tmp_path)
    env["KONGTASK_CONCURRENCY"] = "1"
    log = run_daemon_once(env)
    assert log.count("order 1 confirmed") == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cup-thumb.pgm", "order-1.eml"]


def test_signup_commits_the_user_and_the_email_together(shop: str, tmp_path: Path) -> None:
    env = environment(shop, tmp_path)
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "signup.py"), "grace@example.com"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "user 1 signed up; welcome email queued"
    assert [job[0] for job in jobs(shop)] == ["send_email"]
    # Signing up the same address again fails on the unique email: no second job either.
    conn = psycopg2.connect(shop)
    try:
        with pytest.raises(psycopg2.errors.UniqueViolation), conn:
            signup.sign_up(conn, "grace@example.com")
    finally:
        conn.close()
    assert len(jobs(shop)) == 1
    log = run_daemon_once(env)
    assert "sent 'Welcome!' to grace@example.com" in log
    assert "your account number is 1" in (tmp_path / "welcome-1.eml").read_text()
