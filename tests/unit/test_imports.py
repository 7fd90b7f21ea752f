"""Start-up pays for every import: the daemon's path must not load what only other verbs use.

Measured (perf/results/analysis.md): the admin verbs, prometheus_client and the cron module
cost ~40-50 ms of a ~145 ms start. They are imported where they are needed; this test keeps
a top-level import from creeping back.
"""

from __future__ import annotations

import json
import subprocess
import sys

ONLY_WHEN_NEEDED = ("kongtaskd.admin", "kongtaskd.cron", "prometheus_client", "http.server")

#: The dashboard (kongtaskd[web]) and the action layer: never on the daemon's path.
WEB_ONLY = ("kongtaskd.actions", "kongtaskd.web", "werkzeug", "jinja2", "waitress")


def modules_after(code: str) -> set[str]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    return set(json.loads(done.stdout.splitlines()[-1]))


def test_the_run_path_imports_no_admin_cron_or_metrics_code() -> None:
    loaded = modules_after("import kongtaskd.cli, kongtaskd.supervisor, kongtaskd.child")
    assert "kongtaskd.supervisor" in loaded  # the probe did import what it should
    assert sorted(loaded & set(ONLY_WHEN_NEEDED)) == []
    assert (
        sorted(name for name in loaded if name.split(".")[0] in WEB_ONLY or name in WEB_ONLY) == []
    )


def test_the_admin_verbs_still_find_their_modules() -> None:
    loaded = modules_after(
        "import kongtaskd.admin, kongtaskd.cron, kongtaskd.metrics as m\nm.Metrics()"
    )
    assert set(ONLY_WHEN_NEEDED) <= loaded


def test_the_dashboard_and_the_jobs_verbs_find_their_modules() -> None:
    loaded = modules_after("import kongtaskd.web.serve")
    assert set(WEB_ONLY) <= loaded


#: Drivers an application may or may not use: kongtaskd detects them by class name.
DRIVERS = ("psycopg", "sqlalchemy", "asyncpg", "django", "psycopg_pool")


def test_import_kongtaskd_imports_no_optional_driver() -> None:
    loaded = modules_after(
        "import kongtaskd, kongtaskd.drivers\n"
        "try:\n"
        "    kongtaskd.add_job(object(), 't')\n"
        "except TypeError:\n"
        "    pass"
    )
    assert "kongtaskd.drivers" in loaded  # detection ran, and still imported none of them
    assert sorted(name for name in loaded if name.split(".")[0] in DRIVERS) == []


def test_a_psycopg3_caller_imports_no_other_driver() -> None:
    loaded = modules_after(
        "import kongtaskd, psycopg\n"
        "try:\n"
        "    kongtaskd.add_job(psycopg.connect('host=/nonexistent connect_timeout=1'), 't')\n"
        "except psycopg.Error:\n"
        "    pass"
    )
    assert "psycopg" in loaded
    assert (
        sorted({name.split(".")[0] for name in loaded} & {"sqlalchemy", "asyncpg", "django"}) == []
    )


def test_run_and_run_jobs_load_on_first_use() -> None:
    loaded = modules_after("import kongtaskd")
    assert sorted(loaded & {"kongtaskd.inline", "kongtaskd.library", "kongtaskd.supervisor"}) == []
    used = modules_after(
        "import kongtaskd\nkongtaskd.run_jobs, kongtaskd.run, kongtaskd.RunSummary"
    )
    assert {"kongtaskd.inline", "kongtaskd.library"} <= used


#: What the hooks' integrations use, when the app does: kongtaskd never imports them first.
INTEGRATIONS = ("sentry_sdk", "opentelemetry")


def test_a_child_and_an_enqueue_import_no_integration_the_app_does_not_use() -> None:
    loaded = modules_after(
        "import kongtaskd, kongtaskd.child, kongtaskd.hooks\n"
        "hooks = kongtaskd.hooks.build(None)\n"
        "assert not hooks\n"
        "from kongtaskd.enqueue import _check_spec, JobSpec\n"
        "_check_spec('', JobSpec('t', {'a': 1}))"
    )
    assert "kongtaskd.integrations.otel" in loaded  # the child's payload split is there
    assert sorted(name for name in loaded if name.split(".")[0] in INTEGRATIONS) == []
