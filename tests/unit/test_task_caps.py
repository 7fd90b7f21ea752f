"""Caps of tasks registered in code (``@kongtaskd.task(..., concurrency=, rate=)``) and
caps-only ``tasks:`` entries: checked with the config's rules, merged with the config's."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kongtaskd import registry
from kongtaskd.config import ConfigError, Rate, TaskSpec, handler_specs, load_config
from kongtaskd.errors import TaskImportError
from kongtaskd.supervisor import caps_conflicts, caps_of


@pytest.fixture(autouse=True)
def clean_registry() -> Iterator[None]:
    decorated, caps = dict(registry._DECORATED), dict(registry._CAPS)
    yield
    registry._DECORATED.clear()
    registry._DECORATED.update(decorated)
    registry._CAPS.clear()
    registry._CAPS.update(caps)


def handler(payload: Any, ctx: Any) -> None:
    pass


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        (
            {"concurrency": 0},
            "@kongtaskd.task('t'): concurrency: a cap must be at least 1 (pause the task to "
            "stop it), got 0",
        ),
        ({"concurrency": -2}, "concurrency: a cap must be at least 1"),
        ({"concurrency": 2.5}, "concurrency: expected a whole number of at least 1, got 2.5"),
        ({"concurrency": True}, "concurrency: expected a whole number of at least 1, got true"),
        ({"concurrency": "3"}, "concurrency: expected a whole number of at least 1, got '3'"),
        (
            {"rate": "10/fortnight"},
            "@kongtaskd.task('t'): rate: expected a rate of the form N/s, N/min or N/h, "
            "got '10/fortnight'",
        ),
        ({"rate": "0/s"}, "rate: a rate must allow at least 1 start per window, got '0/s'"),
        ({"rate": 10}, "rate: expected a rate of the form N/s, N/min or N/h, got 10"),
    ],
)
def test_bad_decorator_caps_raise_at_decoration_time(kwargs: dict[str, Any], expected: str) -> None:
    with pytest.raises(ValueError) as caught:
        registry.task("t", **kwargs)(handler)
    assert expected in str(caught.value)
    assert "\n" not in str(caught.value)
    assert "t" not in registry._DECORATED and "t" not in registry._CAPS


def test_the_decorator_and_the_config_share_one_message(tmp_path: Path) -> None:
    path = tmp_path / "k.yaml"
    path.write_text("tasks:\n  t: {handler: 'm:f', rate: 10/fortnight}\n")
    with pytest.raises(ConfigError) as in_config:
        load_config(path)
    with pytest.raises(ValueError) as in_code:
        registry.task("t", rate="10/fortnight")
    problem = str(in_code.value).partition("rate: ")[2]
    assert in_config.value.message.endswith(problem)


def test_decorator_caps_are_stored_with_the_registration() -> None:
    registry.task("capped_t", concurrency=3, rate="10/s")(handler)
    registry.task("plain_t")(handler)
    assert registry.decorated_caps(["capped_t", "plain_t", "other"]) == {
        "capped_t": (3, Rate(10, 1))
    }


def test_caps_only_entries_load_and_name_no_handler(tmp_path: Path) -> None:
    path = tmp_path / "k.yaml"
    path.write_text(
        "task_modules: [m]\ntasks:\n  a: m:f\n  call_partner: {concurrency: 3, rate: 5/min}\n"
    )
    config = load_config(path)
    assert config.tasks["call_partner"] == TaskSpec("call_partner", None, None, 3, Rate(5, 60))
    assert config.tasks["call_partner"].where == f"{path}:4"
    assert handler_specs(config.tasks) == {"a": "m:f"}


@pytest.mark.parametrize(
    "entry", ["{timeout: 3}", "{}", "{concurrency: null}", "{concurrency: 0}", "{rate: 1/day}"]
)
def test_a_handlerless_entry_needs_a_valid_cap(tmp_path: Path, entry: str) -> None:
    path = tmp_path / "k.yaml"
    path.write_text(f"tasks:\n  t: {entry}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.message.startswith(f"{path}:2: tasks.t")


def test_a_cap_on_a_task_no_module_registers_names_key_and_line() -> None:
    registry.check_caps_only({"known": "k.yaml:3"}, {"known": handler})
    with pytest.raises(TaskImportError) as caught:
        registry.check_caps_only({"call_partnr": "k.yaml:4"}, {"call_partner": handler})
    assert caught.value.message == (
        "k.yaml:4: tasks.call_partnr: a cap on a task this daemon does not run: no module of "
        "task_modules registers 'call_partnr' with @kongtaskd.task"
    )


def test_config_caps_win_per_limit_and_the_conflict_is_named(tmp_path: Path) -> None:
    path = tmp_path / "k.yaml"
    path.write_text(
        "task_modules: [m]\ntasks:\n"
        "  a: {concurrency: 5}\n  b: {rate: 2/s}\n  c: {concurrency: 4}\n"
    )
    config = load_config(path)
    code = {"a": (2, Rate(10, 1)), "b": (None, Rate(2, 1)), "d": (1, None)}
    assert caps_of(config, code) == {
        "a": (5, Rate(10, 1)),  # the config's concurrency, the decorator's rate
        "b": (None, Rate(2, 1)),
        "c": (4, None),
        "d": (1, None),
    }
    assert caps_of(config) == {"a": (5, None), "b": (None, Rate(2, 1)), "c": (4, None)}
    assert caps_conflicts(config, code) == [
        f"task a: concurrency is 2 in @kongtaskd.task and 5 under tasks: at {path}:3; "
        "the configuration's wins"
    ]
