"""The secrets registry: what registering hides, and how much of the text around it stays."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from kongtaskd import redact
from kongtaskd.config import load_config
from kongtaskd.redact import register_secret, scrub


@pytest.fixture(autouse=True)
def _empty_registry() -> Iterator[None]:
    redact.forget_secrets()
    yield
    redact.forget_secrets()


def test_nothing_registered_changes_nothing() -> None:
    assert scrub("host retPW@db, password S3cret") == "host retPW@db, password S3cret"


def test_every_run_of_four_or_more_characters_is_hidden() -> None:
    register_secret("S3c@retPW")
    # The host name libpq quotes from 'postgresql://u:S3c@retPW@host/db'.
    assert scrub('could not translate host name "retPW@host"') == (
        'could not translate host name "***@host"'
    )
    assert scrub("S3c@retPW") == "***"
    assert scrub("xS3c@zz") == "x***zz"  # "S3c@" is four characters of it
    assert scrub("S3c or PW") == "S3c or PW"  # three are not


def test_overlapping_and_adjacent_runs_become_one_mask() -> None:
    register_secret("abcdefgh")
    assert scrub("[abcdefghabcd]") == "[***]"
    assert scrub("cdef-efgh") == "***-***"


def test_spellings_percent_json_and_repr() -> None:
    register_secret("p@ss wörd\"'x")
    assert scrub("postgresql://u:p%40ss%20w%C3%B6rd%22%27x@h/d") == "postgresql://u:***@h/d"
    assert scrub(json.dumps({"msg": "p@ss wörd\"'x"})) == '{"msg": "***"}'
    assert scrub(json.dumps({"msg": "p@ss wörd\"'x"}, ensure_ascii=True)) == '{"msg": "***"}'
    assert scrub(repr("p@ss wörd\"'x")) == "'***'"


def test_a_decoded_secret_is_hidden_when_registered_encoded() -> None:
    register_secret("p%40ss%2Fword")
    assert scrub("it was p@ss/word") == "it was ***"


def test_short_secrets_hide_only_the_quoted_fragment_that_holds_them() -> None:
    register_secret("ab")
    assert scrub('bad token "xaby" in "host"') == 'bad token "***" in "host"'
    assert scrub("a cab drove by") == "a cab drove by"


def test_extra_secrets_count_for_one_call() -> None:
    assert scrub("token Zx9!Zx9!", ["Zx9!Zx9!"]) == "token ***"
    assert scrub("token Zx9!Zx9!") == "token Zx9!Zx9!"


def test_load_config_registers_the_connection_password(tmp_path: Path) -> None:
    path = tmp_path / "kongtask.yaml"
    path.write_text("connection: \"host=db password='S3cret PW' user=app\"\n")
    load_config(path, environ={"PGPASSWORD": "fromEnv!"})
    assert scrub("S3cret PW and fromEnv!") == "*** and ***"
    redact.forget_secrets()
    # The flag wins over the file: its password is the one in play.
    load_config(path, overrides={"connection": "postgresql://a:fl%40g@h/d"}, environ={})
    assert scrub("fl@g or S3cret") == "*** or S3cret"


def test_registering_scrubs_the_process_title() -> None:
    from setproctitle import getproctitle, setproctitle

    before = getproctitle()
    try:
        setproctitle("kongtaskd --connection postgresql://u:Ti7le%40pw@h/d migrate")
        register_secret("Ti7le@pw")
        assert getproctitle() == "kongtaskd --connection postgresql://u:***@h/d migrate"
    finally:
        setproctitle(before)
