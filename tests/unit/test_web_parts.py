"""The dashboard's pure parts: password hashes, token files, sessions, one-time forms, the
rate limit, client addresses behind proxies, the cache, SVG escaping, and the bulk
action's count and batch statements agreeing on what matches."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from kongtaskd.errors import ConfigError
from kongtaskd.queries import source
from kongtaskd.web import auth, charts
from kongtaskd.web.csrf import Forms
from kongtaskd.web.data import Cache, Count, like_pattern


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_password_hashes_verify_and_differ_per_salt() -> None:
    first = auth.hash_password("s3cret password")
    assert first.startswith("scrypt$32768$8$1$") and "s3cret" not in first
    assert auth.verify_password("s3cret password", first)
    assert not auth.verify_password("s3cret passwore", first)
    assert auth.hash_password("s3cret password") != first
    assert not auth.verify_password("x", "scrypt$garbage")
    with pytest.raises(ValueError):
        auth.hash_password("")


def test_token_files_must_be_private_and_hold_good_tokens(tmp_path: Path) -> None:
    path = tmp_path / "web.token"
    path.write_text("# comment\nops:" + "a" * 20 + "\n" + "b" * 20 + "\n")
    path.chmod(0o600)
    assert auth.load_tokens(path, "kongtask.yaml:3") == {"ops": "a" * 20, "web": "b" * 20}
    path.chmod(0o640)
    with pytest.raises(ConfigError, match=r"kongtask.yaml:3: .*readable by group or others"):
        auth.load_tokens(path, "kongtask.yaml:3")
    path.chmod(0o600)
    path.write_text("ops:short\n")
    with pytest.raises(ConfigError, match=r"web.token:1: token shorter than 16"):
        auth.load_tokens(path, "x")
    with pytest.raises(ConfigError, match="cannot read it"):
        auth.load_tokens(tmp_path / "absent", "x")


def test_token_owner_compares_every_token() -> None:
    tokens = {"a": "x" * 20, "b": "y" * 20}
    assert auth.token_owner(tokens, "y" * 20) == "b"
    assert auth.token_owner(tokens, "y" * 19) is None


def test_sessions_expire_and_end() -> None:
    clock = Clock()
    sessions = auth.Sessions(lifetime=10, clock=clock)
    sid = sessions.start("ops")
    assert sessions.who(sid) == "ops" and sessions.who("forged") is None
    clock.now += 11
    assert sessions.who(sid) is None
    sid = sessions.start("ops")
    sessions.end(sid)
    assert sessions.who(sid) is None


def test_forms_are_one_time_per_viewer_and_purpose() -> None:
    clock = Clock()
    forms = Forms(lifetime=60, limit=3, clock=clock)
    token = forms.issue("alice|", "job:1:retry", {"x": 1})
    assert forms.take(token, "alice|", "job:1:retry") == (True, {"x": 1})
    assert forms.take(token, "alice|", "job:1:retry") == (False, None)  # replay
    token = forms.issue("alice|", "job:1:retry")
    assert forms.take(token, "bob|", "job:1:retry") == (False, None)  # someone else's
    assert forms.take(token, "alice|", "job:1:retry") == (False, None)  # used up by that
    token = forms.issue("alice|", "job:1:retry")
    assert forms.take(token, "alice|", "job:2:retry") == (False, None)  # another form
    token = forms.issue("alice|", "p")
    clock.now += 61
    assert forms.take(token, "alice|", "p") == (False, None)  # expired
    oldest = forms.issue("a", "p")
    for _ in range(3):
        forms.issue("a", "p")
    assert forms.take(oldest, "a", "p") == (False, None)  # pushed out by newer forms
    assert forms.take(None, "a", "p") == (False, None)


def test_the_rate_limit_blocks_after_the_limit_until_the_window_passes() -> None:
    clock = Clock()
    limiter = auth.RateLimiter(limit=3, window=60, clock=clock)
    for _ in range(3):
        assert limiter.blocked_for("1.2.3.4") == 0
        limiter.failed("1.2.3.4")
    assert limiter.blocked_for("1.2.3.4") == pytest.approx(60)
    assert limiter.blocked_for("5.6.7.8") == 0
    clock.now += 61
    assert limiter.blocked_for("1.2.3.4") == 0


def test_forwarded_for_is_believed_only_from_trusted_proxies() -> None:
    environ = {"REMOTE_ADDR": "10.0.0.5", "HTTP_X_FORWARDED_FOR": "6.6.6.6, 203.0.113.9"}
    assert auth.client_address(environ, []) == "10.0.0.5"
    assert auth.client_address(environ, ["10.0.0.5"]) == "203.0.113.9"
    # The left-most hops are the client's to write: never taken past an untrusted hop.
    assert auth.client_address(environ, ["10.0.0.5", "203.0.113.9"]) == "6.6.6.6"
    assert not auth.came_over_tls({**environ, "HTTP_X_FORWARDED_PROTO": "https"}, [])
    assert auth.came_over_tls({**environ, "HTTP_X_FORWARDED_PROTO": "https"}, ["10.0.0.5"])
    assert auth.came_over_tls({"wsgi.url_scheme": "https"}, [])


def test_the_cache_shares_one_answer_per_interval_and_computes_it_once() -> None:
    clock = Clock()
    cache = Cache(5, clock=clock)
    calls = []
    gate = threading.Event()

    def compute() -> int:
        calls.append(1)
        gate.wait(5)
        return len(calls)

    threads = [threading.Thread(target=cache.get, args=("k", compute)) for _ in range(8)]
    for thread in threads:
        thread.start()
    gate.set()
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and cache.get("k", compute) == 1
    clock.now += 6
    assert cache.get("k", compute) == 2


def test_counts_show_their_cap_and_like_patterns_are_literal() -> None:
    assert str(Count(10_000, capped=True)) == "10,000+"
    assert str(Count(3) + Count(4)) == "7"
    assert like_pattern("50%_off\\") == "%50\\%\\_off\\\\%"


def test_charts_escape_every_label() -> None:
    svg = charts.state_bars([("<script>x</script>", [1, 2])], labels=("a<b", "c"))
    assert "<script>" not in svg and "&lt;script&gt;" in svg and "a&lt;b" in svg
    assert "style=" not in svg
    assert charts.state_bars([], labels=()) == ""
    line = charts.series_line([(0, 1), (1, 3)], label='"><x')
    assert '"><x' not in line and "polyline" in line


def test_bulk_count_and_batches_match_the_same_jobs() -> None:
    def where(name: str) -> str:
        text = source(name)
        body = text[text.index("where jobs.id <= %(upto)s") :]
        return body.split("\n  and jobs.id > %(after)s")[0].split("\norder by")[0].strip()

    assert where("action_count") == where("action_select_batch")
