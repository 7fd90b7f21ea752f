"""The dashboard is safe to expose: binds, auth (token sessions and HTTP basic), the
failed-login rate limit, read-only, hidden payloads, CSRF, and start-up refusals that name
the key and the line. Real ``kongtaskd web`` processes, real HTTP."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kongtaskd.errors import ExitCode
from tests.support.daemon import prepare_database, query
from tests.support.web import Web, free_port, write_web_config

SECRET_TASK = "secret_task_name"
TOKEN = "ops:" + "t0ken-" + "x" * 30


@pytest.fixture(scope="module")
def web_dsn(dsn: str) -> str:
    prepare_database(dsn)
    query(dsn, f"select graphile_worker.add_job('{SECRET_TASK}', '{{\"card\": \"4111\"}}')")
    return dsn


def token_file(directory: Path, mode: int = 0o600, text: str = TOKEN) -> Path:
    path = directory / "web.token"
    path.write_text(text + "\n")
    path.chmod(mode)
    return path


def run_web(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    environ = dict(os.environ)
    environ.pop("NOTIFY_SOCKET", None)
    return subprocess.run(
        [sys.executable, "-m", "kongtaskd", "-c", str(config), "web", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=environ,
    )


def one_line(result: subprocess.CompletedProcess[str], code: int) -> str:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if "kongtaskd:" in line]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


# --- start-up refusals ---------------------------------------------------------------------


def test_a_non_loopback_bind_without_auth_is_refused(web_dsn: str, tmp_path: Path) -> None:
    config = write_web_config(tmp_path, web_dsn, "info", host="0.0.0.0", port=free_port())
    line = one_line(run_web(config), ExitCode.USAGE)
    assert re.search(r"kongtask\.yaml:\d+: web\.host 0\.0\.0\.0 is not a loopback", line), line
    assert "--insecure-no-auth" in line
    line = one_line(run_web(write_web_config(tmp_path, web_dsn, "info"), "--host", "0.0.0.0"), 2)
    assert "--host: web.host 0.0.0.0" in line


def test_insecure_no_auth_or_auth_lets_a_non_loopback_bind_start(
    web_dsn: str, tmp_path: Path
) -> None:
    port = free_port()
    config = write_web_config(tmp_path, web_dsn, host="0.0.0.0")
    server = Web(config, port, "--insecure-no-auth")
    try:
        assert server.get("/").status == 200
    finally:
        server.close()
    config = write_web_config(
        tmp_path, web_dsn, host="0.0.0.0", auth={"token_file": str(token_file(tmp_path))}
    )
    with Web(config, free_port()) as server:
        assert server.get("/").status == 401


def test_a_taken_port_names_web_port_and_its_line(web_dsn: str, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_web_config(tmp_path, web_dsn, "info", port=port)
        line = one_line(run_web(config), ExitCode.USAGE)
    assert re.search(rf"kongtask\.yaml:\d+: web\.port {port}: address already in use", line)


def test_a_token_file_others_can_read_is_refused(web_dsn: str, tmp_path: Path) -> None:
    path = token_file(tmp_path, mode=0o644)
    config = write_web_config(tmp_path, web_dsn, "info", auth={"token_file": str(path)})
    line = one_line(run_web(config), ExitCode.USAGE)
    assert "readable by group or others (mode 0644)" in line and "chmod 600" in line
    assert "x" * 20 not in line


def test_bad_web_config_names_key_and_line(web_dsn: str, tmp_path: Path) -> None:
    path = tmp_path / "kongtask.yaml"
    path.write_text(
        yaml.safe_dump({"connection": web_dsn, "web": {"auth": {"basic": {"user": "ops"}}}})
    )
    line = one_line(run_web(path), ExitCode.USAGE)
    assert re.search(r"kongtask\.yaml:\d+: web\.auth\.basic\.password_hash: expected a hash", line)
    path.write_text(yaml.safe_dump({"connection": web_dsn, "web": {"refresh": "soon"}}))
    assert "web.refresh" in one_line(run_web(path), ExitCode.USAGE)


# --- token logins --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def token_web(web_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Web:
    directory = tmp_path_factory.mktemp("token")
    config = write_web_config(
        directory, web_dsn, auth={"token_file": str(token_file(directory))}, base_path="/kt"
    )
    server = Web(config, free_port(), prefix="/kt")
    yield server  # type: ignore[misc]
    server.close()


def login(web: Web, token: str = TOKEN.partition(":")[2]) -> dict[str, str]:
    answer = web.post("/login", {"token": token})
    assert answer.status == 303, answer.text[:1000]
    return answer.cookies()


def test_without_a_session_every_page_is_401_and_shows_no_data(token_web: Web) -> None:
    for path in ("/", "/jobs", "/jobs/1", "/daemons", "/queues", "/cron", "/jobs?task=x"):
        answer = token_web.get(path)
        assert answer.status == 401, path
        assert SECRET_TASK not in answer.text and "4111" not in answer.text
        assert 'name="token"' in answer.text  # the login form
    assert token_web.post("/jobs/1/remove", {"csrf": "x", "confirmed": "yes"}).status == 401
    assert token_web.get("/static/style.css").status == 200  # the login page needs it


def test_a_token_login_gives_a_strict_session_cookie_and_logout_ends_it(token_web: Web) -> None:
    wrong = token_web.post("/login", {"token": "not-the-token-at-all"})
    assert wrong.status == 401 and "wrong token" in wrong.text
    answer = token_web.post("/login", {"token": TOKEN.partition(":")[2]})
    cookie = answer.header("Set-Cookie") or ""
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/kt" in cookie
    assert "Secure" not in cookie  # plain HTTP from a client that is no trusted proxy
    cookies = answer.cookies()
    page = token_web.get("/", cookies=cookies)
    assert page.status == 200 and SECRET_TASK in page.text
    out = token_web.post("/logout", {"csrf": page.csrf("/kt/logout")}, cookies=cookies)
    assert out.status == 303
    assert token_web.get("/", cookies=cookies).status == 401


def test_actions_are_audited_with_the_token_name(token_web: Web, web_dsn: str) -> None:
    [(job,)] = query(web_dsn, "select (graphile_worker.add_job('audited', '{}')).id")
    cookies = login(token_web)
    page = token_web.get(f"/jobs/{job}", cookies=cookies)
    token = page.csrf(f"/kt/jobs/{job}/fail")
    done = token_web.post(f"/jobs/{job}/fail", {"csrf": token, "confirmed": "yes"}, cookies=cookies)
    assert done.status == 200, done.text[:1000]
    assert re.search(rf"audit: ops fail ids {job}: 1 changed", token_web.log())
    # The same form from another session (another viewer) is refused.
    other = login(token_web)
    token = token_web.get(f"/jobs/{job}", cookies=cookies).csrf(f"/kt/jobs/{job}/retry")
    refused = token_web.post(
        f"/jobs/{job}/retry", {"csrf": token, "confirmed": "yes"}, cookies=other
    )
    assert refused.status == 403


def test_failed_logins_are_rate_limited_per_client_and_forwarded_for_is_not_believed(
    web_dsn: str, tmp_path: Path
) -> None:
    config = write_web_config(tmp_path, web_dsn, auth={"token_file": str(token_file(tmp_path))})
    with Web(config, free_port()) as server:
        for attempt in range(5):
            # A spoofed X-Forwarded-For from an untrusted client changes nothing.
            answer = server.post(
                "/login",
                {"token": f"wrong-{attempt}"},
                headers={"X-Forwarded-For": f"10.9.9.{attempt}"},
            )
            assert answer.status == 401
        blocked = server.post("/login", {"token": TOKEN.partition(":")[2]})
        assert blocked.status == 429 and blocked.header("Retry-After")
        assert "too many failed logins" in blocked.text


# --- HTTP basic ----------------------------------------------------------------------------


def test_basic_auth_with_a_hash_from_hash_password(web_dsn: str, tmp_path: Path) -> None:
    made = subprocess.run(
        [sys.executable, "-m", "kongtaskd", "web", "hash-password"],
        input="correct horse battery\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    hashed = made.stdout.strip()
    assert hashed.startswith("scrypt$") and "correct" not in hashed
    config = write_web_config(
        tmp_path, web_dsn, auth={"basic": {"user": "alice", "password_hash": hashed}}
    )
    import base64

    def basic(user: str, password: str) -> dict[str, str]:
        raw = base64.b64encode(f"{user}:{password}".encode()).decode()
        return {"Authorization": f"Basic {raw}"}

    with Web(config, free_port()) as server:
        nothing = server.get("/")
        assert nothing.status == 401 and "Basic" in (nothing.header("WWW-Authenticate") or "")
        wrong = server.get("/", headers=basic("alice", "wrong horse"))
        assert wrong.status == 401 and SECRET_TASK not in wrong.text
        assert server.get("/", headers=basic("mallory", "correct horse battery")).status == 401
        right = server.get("/", headers=basic("alice", "correct horse battery"))
        assert right.status == 200 and SECRET_TASK in right.text
        [(job,)] = query(web_dsn, "select (graphile_worker.add_job('by_alice', '{}')).id")
        page = server.get(f"/jobs/{job}", headers=basic("alice", "correct horse battery"))
        server.post(
            f"/jobs/{job}/remove",
            {"csrf": page.csrf(f"/jobs/{job}/remove"), "confirmed": "yes"},
            headers=basic("alice", "correct horse battery"),
        )
        assert re.search(rf"audit: alice remove ids {job}: 1 changed", server.log())
        assert hashed not in server.log()


# --- read-only, payloads -------------------------------------------------------------------


def test_read_only_hides_and_refuses_every_action(web_dsn: str, tmp_path: Path) -> None:
    [(job,)] = query(web_dsn, "select (graphile_worker.add_job('ro', '{}')).id")
    config = write_web_config(tmp_path, web_dsn, read_only=True, show_payloads=False)
    with Web(config, free_port()) as server:
        page = server.get(f"/jobs/{job}")
        assert page.status == 200 and '<form method="post"' not in page.text
        assert "Hidden (web.show_payloads: false)" in page.text
        assert 'action="/jobs/bulk"' not in server.get("/jobs?task=ro").text
        for action in ("retry", "reschedule", "fail", "remove"):
            refused = server.post(f"/jobs/{job}/{action}", {"csrf": "x", "confirmed": "yes"})
            assert refused.status == 403 and "read-only" in refused.text
        refused = server.post("/jobs/bulk", {"csrf": "x", "action": "remove", "task": "ro"})
        assert refused.status == 403
    assert query(
        web_dsn, "select count(*) from graphile_worker._private_jobs where id=%s", (job,)
    ) == [(1,)]


def test_payloads_are_shown_folded_by_default(web_dsn: str, tmp_path: Path) -> None:
    [(job,)] = query(web_dsn, "select (graphile_worker.add_job('pl', '{\"card\": \"4111\"}')).id")
    with Web(write_web_config(tmp_path, web_dsn), free_port()) as server:
        text = server.get(f"/jobs/{job}").text
        assert "<details><summary>show payload</summary>" in text and "4111" in text
