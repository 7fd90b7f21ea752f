"""``kongtaskd.testing``: the pytest plugin, run by pytester on a small app's own suite."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

APP = """
import kongtaskd

def signup(conn, email):
    with conn.cursor() as cur:
        cur.execute("insert into users (email) values (%s)", (email,))
    kongtaskd.add_job(conn, "send_welcome", {"to": email})

def send_welcome(payload, ctx):
    with ctx.connection.cursor() as cur:
        cur.execute("insert into sent (email) values (%s)", (payload["to"],))
    ctx.add_job("audit", {"sent": payload["to"]})

def audit(payload, ctx):
    if payload.get("fail"):
        raise RuntimeError("audit down")
"""

CONFTEST = """
import pytest

@pytest.fixture(scope="session")
def kongtaskd_template_setup():
    def setup(conn):
        with conn.cursor() as cur:
            cur.execute("create table users (email text primary key)")
            cur.execute("create table sent (email text)")
            # A trigger that enqueues through graphile-worker's own SQL function.
            cur.execute(
                "create function users_audit() returns trigger language plpgsql as $$"
                " begin perform graphile_worker.add_job('audit', json_build_object("
                "'new_user', new.email)); return new; end $$"
            )
            cur.execute(
                "create trigger users_audit after insert on users"
                " for each row execute function users_audit()"
            )
    return setup
"""

TESTS = """
import pytest
import app

TASKS = {"send_welcome": app.send_welcome, "audit": app.audit}

def test_signup_enqueues_and_the_handler_runs(kongtaskd_db):
    with kongtaskd_db.connect() as conn:
        app.signup(conn, "a@example.com")
    kongtaskd_db.assert_enqueued("send_welcome", payload={"to": "a@example.com"})
    kongtaskd_db.assert_enqueued("audit", payload={"new_user": "a@example.com"})  # trigger
    summary = kongtaskd_db.drain(TASKS)
    assert (len(summary.succeeded), summary.failed) == (3, [])  # the follow-up ran too
    assert kongtaskd_db.jobs() == []
    with kongtaskd_db.connect() as conn, conn.cursor() as cur:
        cur.execute("select email from sent")
        assert cur.fetchall() == [("a@example.com",)]

def test_each_test_starts_empty(kongtaskd_db):
    assert kongtaskd_db.jobs() == []

def test_inside_a_rolled_back_transaction(kongtaskd_db):
    conn = kongtaskd_db.connect()
    app.signup(conn, "b@example.com")
    kongtaskd_db.assert_enqueued("send_welcome", count=1, conn=conn)
    kongtaskd_db.assert_enqueued("send_welcome", count=0)  # not committed
    assert len(kongtaskd_db.drain(TASKS, conn=conn).succeeded) == 3
    conn.rollback()
    assert kongtaskd_db.jobs() == []

def test_a_failure_is_the_daemons_failure(kongtaskd_db):
    import kongtaskd
    kongtaskd.add_job(kongtaskd_db.dsn, "audit", {"fail": True})
    summary = kongtaskd_db.drain(TASKS)
    assert len(summary.failed) == 1
    (job,) = kongtaskd_db.assert_enqueued("audit", payload={"fail": True})
    assert job["attempts"] == 1

def test_assert_enqueued_says_what_is_there(kongtaskd_db):
    with kongtaskd_db.connect() as conn:
        app.signup(conn, "c@example.com")
    with pytest.raises(AssertionError) as info:
        kongtaskd_db.assert_enqueued("send_welcome", payload={"to": "x@example.com"})
    message = str(info.value)
    assert message.startswith("no job of task 'send_welcome' with payload")
    assert 'send_welcome {"to": "c@example.com"}' in message
"""


@pytest.fixture(autouse=True)
def _only_the_plugin_under_test(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where kongtaskd is installed (CI's ``pip install -e``), its ``pytest11`` entry point
    loads the plugin by itself, and the explicit ``-p kongtaskd.testing`` below would register
    it twice: the inner runs load only what they name."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")


def test_an_app_suite_uses_the_plugin(pytester: pytest.Pytester, admin_dsn: str) -> None:
    pytester.makepyfile(app=APP, conftest=CONFTEST, test_app=TESTS)
    result = pytester.runpytest_subprocess(
        "-p", "kongtaskd.testing", f"--kongtaskd-dsn={admin_dsn}"
    )
    result.assert_outcomes(passed=5)


def test_without_a_server_the_fixture_says_how_to_name_one(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KONGTASKD_TEST_DSN", raising=False)
    pytester.makepyfile(test_x="def test_x(kongtaskd_db):\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "kongtaskd.testing")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*kongtaskd_db needs a PostgreSQL server: pass --kongtaskd-dsn*"])


def test_the_plugin_loads_nothing_until_used(pytester: pytest.Pytester) -> None:
    # The plugin loads in every pytest run of every project that installs kongtaskd: it
    # may cost what ``import kongtaskd`` costs (tests/unit/test_imports.py), nothing more.
    pytester.makepyfile(
        test_x="import sys\n"
        "def test_x():\n"
        "    assert 'kongtaskd.testing' in sys.modules\n"
        "    heavy = ('kongtaskd.inline', 'kongtaskd.schema', 'kongtaskd.library',\n"
        "             'kongtaskd.supervisor', 'kongtaskd.child', 'kongtaskd.config',\n"
        "             'psycopg', 'sqlalchemy', 'django', 'asyncpg')\n"
        "    assert sorted(set(heavy) & set(sys.modules)) == []\n"
    )
    result = pytester.runpytest_subprocess("-p", "kongtaskd.testing")
    result.assert_outcomes(passed=1)
