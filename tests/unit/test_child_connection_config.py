"""The ``child_connection`` key: default, environment, checks at load, its secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from kongtaskd import redact
from kongtaskd.config import Config, load_config
from kongtaskd.errors import ConfigError

PASSWORD = "Chi1dS3cretPW"


def load(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> Config:
    path = tmp_path / "kongtask.yaml"
    path.write_text(text)
    return load_config(path, environ=environ or {})


def test_children_use_connection_by_default_and_prepare(tmp_path: Path) -> None:
    config = load(tmp_path, "connection: host=db dbname=app\n")
    assert config.child_connection is None
    assert config.child_dsn == "host=db dbname=app" and not config.pooled_children


def test_a_child_connection_is_the_childrens_dsn_and_means_pooled(tmp_path: Path) -> None:
    config = load(
        tmp_path, "connection: host=db dbname=app\nchild_connection: host=bouncer port=6432\n"
    )
    assert config.child_dsn == "host=bouncer port=6432" and config.pooled_children
    assert config.dsn == "host=db dbname=app"  # the supervisor's stays direct


def test_the_environment_sets_it(tmp_path: Path) -> None:
    config = load(tmp_path, "", {"KONGTASK_CHILD_CONNECTION": "postgresql://bouncer:6432/app"})
    assert config.child_dsn == "postgresql://bouncer:6432/app" and config.pooled_children


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("'host=bouncer port'", 'child_connection: not a valid connection string: missing "="'),
        ("embedded", "child_connection: 'embedded' is only for `connection`"),
        ("''", "child_connection: must not be empty"),
        ("6432", "child_connection: expected a connection string or null, got 6432"),
    ],
)
def test_a_bad_value_is_an_error_naming_file_line_and_key(
    tmp_path: Path, value: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, f"concurrency: 2\nchild_connection: {value}\n")
    assert caught.value.message.startswith(f"{tmp_path / 'kongtask.yaml'}:2: {expected}")


def test_an_unparsable_value_never_shows_its_password(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, f"child_connection: host=bouncer password={PASSWORD} port\n")
    assert "child_connection: not a valid connection string" in caught.value.message
    assert PASSWORD[:6] not in caught.value.message and PASSWORD[-6:] not in caught.value.message


def test_its_password_is_registered_as_a_secret_and_masked_in_repr(tmp_path: Path) -> None:
    config = load(tmp_path, f"child_connection: postgresql://app:{PASSWORD}@bouncer:6432/app\n")
    assert PASSWORD not in repr(config)
    assert PASSWORD not in redact.scrub(f"connecting with {PASSWORD}")
