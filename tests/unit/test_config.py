"""Configuration loading: every mistake is one line naming file, line and key; precedence."""

from __future__ import annotations

import dataclasses
import os
import pickle
from pathlib import Path
from typing import Any

import pytest
import yaml

from kongtaskd.config import (
    KEYS,
    Config,
    LogConfig,
    MetricsConfig,
    Rate,
    Section,
    TaskSpec,
    env_variables,
    load_config,
)
from kongtaskd.errors import ConfigError, ExitCode

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str, name: str = "kongtask.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load(tmp_path: Path, text: str, **kwargs: Any) -> Config:
    kwargs.setdefault("environ", {})
    return load_config(write(tmp_path, text), **kwargs)


def error_of(tmp_path: Path, text: str, **kwargs: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text, **kwargs)
    message = caught.value.message
    assert "\n" not in message, message
    assert caught.value.exit_code == ExitCode.USAGE
    return message


# --- file mistakes ---------------------------------------------------------------------------


def test_unknown_key_names_file_line_and_suggests(tmp_path: Path) -> None:
    message = error_of(tmp_path, "schema: x\nconcurency: 4\n")
    path = tmp_path / "kongtask.yaml"
    assert message == f"{path}:2: unknown key 'concurency' (did you mean 'concurrency'?)"


def test_unknown_key_without_close_match_has_no_suggestion(tmp_path: Path) -> None:
    message = error_of(tmp_path, "wibble: 1\n")
    assert message.endswith(":1: unknown key 'wibble'")


def test_unknown_nested_key_names_its_path(tmp_path: Path) -> None:
    message = error_of(tmp_path, "metrics:\n  host: 0.0.0.0\n  prot: 9000\n")
    assert message.endswith(":3: unknown key 'metrics.prot' (did you mean 'metrics.port'?)")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "concurrency: four",
            ":1: concurrency: expected an integer between 1 and 1024, got 'four'",
        ),
        # YAML's true is a bool, which Python would happily treat as 1.
        ("concurrency: true", ":1: concurrency: expected an integer between 1 and 1024, got true"),
        ("concurrency: 2.5", ":1: concurrency: expected an integer between 1 and 1024, got 2.5"),
        ("poll_interval: fast", ":1: poll_interval: expected a number of seconds > 0, got 'fast'"),
        ("migrate: maybe", ":1: migrate: expected true or false, got 'maybe'"),
        ("schema: [a, b]", ":1: schema: expected a string, got a list"),
        ("task_modules: myapp.jobs", ":1: task_modules: expected a list of module names"),
        ("forbidden_flags: [ok, 3]", ":1: forbidden_flags[1]: expected a non-empty string, got 3"),
        ("log: loud", ":1: log: expected a mapping, got 'loud'"),
        ("metrics: 9464", ":1: metrics: expected a mapping or null, got 9464"),
        ("tasks: [a, b]", ":1: tasks: expected a mapping of task identifier"),
    ],
)
def test_wrong_types(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in error_of(tmp_path, text + "\n")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("concurrency: 0", "concurrency: expected an integer between 1 and 1024, got 0"),
        ("concurrency: 1025", "concurrency: expected an integer between 1 and 1024, got 1025"),
        ("poll_interval: 0", "poll_interval: expected a number of seconds > 0, got 0"),
        ("shutdown_timeout: -1", "shutdown_timeout: expected a number of seconds >= 0, got -1"),
        ("job_timeout: 0", "job_timeout: expected a number of seconds > 0 or null, got 0"),
        ("max_jobs_per_child: 0", "max_jobs_per_child: expected an integer >= 1 or null, got 0"),
        ("max_memory_per_child: -5", "max_memory_per_child: expected an integer >= 1 or null"),
        ("stale_after: .nan", "stale_after: expected a number of seconds > 0, got nan"),
        ("schema: ''", "schema: must not be empty"),
        ("schema: " + "s" * 64, "schema: must be at most 63 bytes"),
    ],
)
def test_impossible_values(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in error_of(tmp_path, text + "\n")


def test_nested_range_error_names_path_and_line(tmp_path: Path) -> None:
    message = error_of(tmp_path, "metrics:\n  port: 70000\n")
    assert message.endswith(":2: metrics.port: expected an integer between 1 and 65535, got 70000")


def test_log_level_must_be_known(tmp_path: Path) -> None:
    message = error_of(tmp_path, "log:\n  format: text\n  level: verbose\n")
    assert message.endswith(
        ":3: log.level: expected one of debug, info, warning, error, got 'verbose'"
    )


def test_bad_timezone_suggests_the_right_spelling(tmp_path: Path) -> None:
    message = error_of(tmp_path, "timezone: europe/paris\n")
    assert message.endswith(
        ":1: timezone: unknown time zone 'europe/paris' (did you mean 'Europe/Paris'?)"
    )
    assert "unknown time zone 'Mars/Olympus_Mons'" in error_of(
        tmp_path, "timezone: Mars/Olympus_Mons\n"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("tasks:\n  send: nocolon\n", ":2: tasks.send: expected a handler of the form"),
        ("tasks:\n  send: 'mod:'\n", ":2: tasks.send: expected a handler of the form"),
        ("tasks:\n  send: 'my-app.x:f'\n", ":2: tasks.send: expected a handler of the form"),
        ("tasks:\n  send: 5\n", ":2: tasks.send: expected a handler of the form"),
        (
            "tasks:\n  send:\n    handler: nope\n",
            ":3: tasks.send.handler: expected a handler of the form 'module:function', got 'nope'",
        ),
        ("tasks:\n  send:\n    timeout: 3\n", ":2: tasks.send: missing 'handler: module:function'"),
        (
            "tasks:\n  send:\n    handler: m:f\n    timout: 3\n",
            ":4: unknown key 'tasks.send.timout' (did you mean 'tasks.send.timeout'?)",
        ),
        (
            "tasks:\n  send:\n    handler: m:f\n    timeout: -1\n",
            ":4: tasks.send.timeout: expected a number of seconds > 0 or null, got -1",
        ),
        ("tasks:\n  " + "t" * 129 + ": m:f\n", "graphile-worker allows at most 128"),
        ("task_modules: [ok.mod, 'bad-mod']\n", ":1: task_modules[1]: 'bad-mod' is not a Python"),
    ],
)
def test_bad_handler_specs(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in error_of(tmp_path, text)


def test_crontab_and_crontab_file_are_exclusive(tmp_path: Path) -> None:
    message = error_of(tmp_path, "crontab: '0 4 * * * cleanup'\ncrontab_file: crontab\n")
    assert "crontab and crontab_file are mutually exclusive" in message
    assert str(tmp_path / "kongtask.yaml") in message


def test_heartbeat_must_be_under_half_of_stale_after(tmp_path: Path) -> None:
    message = error_of(tmp_path, "stale_after: 60\nheartbeat_interval: 30\n")
    assert ":2: heartbeat_interval (30 s) must be less than half of stale_after (60 s)" in message


def test_broken_yaml_gives_line_and_column(tmp_path: Path) -> None:
    message = error_of(tmp_path, "schema: x\ntasks: [a,\nconcurrency: 4\n")
    path = tmp_path / "kongtask.yaml"
    assert message.startswith(f"{path}:")
    assert "invalid YAML" in message
    assert message.split(":")[1] in {"3", "4"}  # the line where the parser gave up


def test_tab_indentation_is_a_yaml_error_with_position(tmp_path: Path) -> None:
    message = error_of(tmp_path, "log:\n\tlevel: info\n")
    assert f"{tmp_path / 'kongtask.yaml'}:2:1: invalid YAML" in message


def test_duplicate_keys_are_refused(tmp_path: Path) -> None:
    message = error_of(tmp_path, "concurrency: 2\nschema: s\nconcurrency: 3\n")
    assert message.endswith(":3: duplicate key 'concurrency' (first set at line 1)")


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    message = error_of(tmp_path, "- concurrency\n- 4\n")
    assert message.endswith(":1: expected a mapping of configuration keys, got a list")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "nope.yaml", environ={})
    assert caught.value.message == (
        f"cannot read config file {tmp_path / 'nope.yaml'}: no such file or directory"
    )


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path, environ={})
    assert caught.value.message == f"cannot read config file {tmp_path}: it is a directory"


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "concurrency: 2\n")
    if os.geteuid() == 0:
        # root reads files whatever their mode; make the read fail as it would for a user.
        def denied(self: Path, *args: Any, **kwargs: Any) -> str:
            raise PermissionError(13, "Permission denied", str(self))

        monkeypatch.setattr(Path, "read_text", denied)
    else:
        path.chmod(0)
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert caught.value.message == f"cannot read config file {path}: permission denied"


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "kongtask.yaml"
    path.write_bytes(b"schema: caf\xe9\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert caught.value.message.startswith(f"{path}: not UTF-8 text (byte 0xe9")


def test_python_tags_are_not_executed(tmp_path: Path) -> None:
    message = error_of(tmp_path, "schema: !!python/object/apply:os.system ['true']\n")
    assert ":1:9: invalid YAML" in message


# --- what a good file gives ------------------------------------------------------------------


def test_defaults_without_a_file() -> None:
    config = load_config(None, environ={})
    for key in KEYS:
        if isinstance(key.type, Section) or key.name in {"tasks", "task_modules"}:
            continue
        expected = key.default if not isinstance(key.default, list) else tuple(key.default)
        assert getattr(config, key.name) == expected, key.name
    assert config.tasks == {}
    assert config.metrics is None
    assert config.log == LogConfig(level="info", format="text")
    assert config.source is None
    assert config.base_dir == Path.cwd()
    assert config.dsn == ""


def test_empty_file_means_defaults(tmp_path: Path) -> None:
    config = load(tmp_path, "# nothing set yet\n")
    defaults = load_config(None, environ={})
    expected = dataclasses.replace(defaults, source=str(tmp_path / "kongtask.yaml"))
    assert dataclasses.replace(config, base_dir=defaults.base_dir) == expected


def test_full_file(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """
connection: postgresql://app@db/app
schema: jobs
concurrency: 8
poll_interval: 0.5
tasks:
  send_email: myapp.tasks:send_email
  report:
    handler: myapp.reports:Builder.run
    timeout: 600
task_modules: [myapp.jobs]
forbidden_flags: [slow]
migrate: false
shutdown_timeout: 0
job_timeout: 30
max_jobs_per_child: 1000
max_memory_per_child: 512
crontab: "0 4 * * * cleanup ?max=3"
timezone: Europe/Paris
metrics: {port: 9000}
log: {level: DEBUG, format: json}
stale_after: 30
heartbeat_interval: 5
""",
    )
    assert config.connection == "postgresql://app@db/app"
    assert config.schema == "jobs"
    assert config.concurrency == 8
    assert config.poll_interval == 0.5
    assert config.tasks == {
        "send_email": TaskSpec("send_email", "myapp.tasks:send_email", None),
        "report": TaskSpec("report", "myapp.reports:Builder.run", 600.0),
    }
    assert config.timeout_for("report") == 600.0
    assert config.timeout_for("send_email") == 30.0
    assert config.task_modules == ("myapp.jobs",)
    assert config.forbidden_flags == ("slow",)
    assert config.migrate is False
    assert config.shutdown_timeout == 0.0
    assert config.max_jobs_per_child == 1000
    assert config.max_memory_per_child == 512
    assert config.crontab == "0 4 * * * cleanup ?max=3"
    assert config.timezone == "Europe/Paris"
    assert config.metrics == MetricsConfig(host="127.0.0.1", port=9000)
    assert config.log == LogConfig(level="debug", format="json")
    assert (config.stale_after, config.heartbeat_interval) == (30.0, 5.0)


def test_json_config_works(tmp_path: Path) -> None:
    config = load(tmp_path, '{"concurrency": 3, "tasks": {"a": "m:f"}, "metrics": null}')
    assert config.concurrency == 3
    assert config.tasks == {"a": TaskSpec("a", "m:f", None)}


def test_json_config_errors_name_the_line(tmp_path: Path) -> None:
    message = error_of(tmp_path, '{\n  "concurrency": 3,\n  "concurrenc": 4\n}\n')
    assert message.endswith(":3: unknown key 'concurrenc' (did you mean 'concurrency'?)")


def test_python_path_and_crontab_file_resolve_against_the_file(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    path = write(tmp_path / "conf", "python_path: [lib, ../src, /opt/x]\ncrontab_file: crontab\n")
    config = load_config(path, environ={})
    base = (tmp_path / "conf").resolve()
    assert config.python_path == (str(base / "lib"), str(base / "../src"), "/opt/x")
    assert config.crontab_file == base / "crontab"
    assert config.base_dir == base
    assert config.source == str(path)


def test_null_collections_mean_empty(tmp_path: Path) -> None:
    config = load(tmp_path, "tasks:\ntask_modules:\npython_path: null\nforbidden_flags: ~\n")
    assert (config.tasks, config.task_modules, config.python_path) == ({}, (), ())
    assert config.forbidden_flags == ()


def test_metrics_switches(tmp_path: Path) -> None:
    assert load(tmp_path, "metrics: {}\n").metrics == MetricsConfig("127.0.0.1", 9464)
    assert load(tmp_path, "metrics: true\n").metrics == MetricsConfig("127.0.0.1", 9464)
    assert load(tmp_path, "metrics: null\n").metrics is None
    assert load(tmp_path, "metrics: false\n").metrics is None


def test_require_tasks(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, "concurrency: 2\n").require_tasks()
    assert caught.value.message.startswith(f"{tmp_path / 'kongtask.yaml'}: no tasks to run")
    load(tmp_path, "task_modules: [myapp.jobs]\n").require_tasks()
    load(tmp_path, "tasks: {a: 'm:f'}\n").require_tasks()


def test_config_pickles_and_hides_its_password(tmp_path: Path) -> None:
    config = load(tmp_path, "connection: postgresql://app:hunter2@db/app\nmetrics: {}\n")
    assert pickle.loads(pickle.dumps(config)) == config
    assert "hunter2" not in repr(config)
    assert "postgresql://app:***@db/app" in repr(config)
    assert config.dsn == "postgresql://app:hunter2@db/app"


def test_embedded_connection_is_kept(tmp_path: Path) -> None:
    config = load(tmp_path, "connection: embedded:/var/lib/kongtaskd/pg\n")
    assert config.connection == "embedded:/var/lib/kongtaskd/pg"
    assert config.is_embedded


# --- precedence: flag > env > file > default ---------------------------------------------------


def test_precedence_for_a_scalar(tmp_path: Path) -> None:
    text = "concurrency: 2\n"
    assert load_config(None, environ={}).concurrency == 4
    assert load(tmp_path, text).concurrency == 2
    env = {"KONGTASK_CONCURRENCY": "6"}
    assert load(tmp_path, text, environ=env).concurrency == 6
    assert load(tmp_path, text, environ=env, overrides={"concurrency": 8}).concurrency == 8
    # None means "flag not given".
    assert load(tmp_path, text, environ=env, overrides={"concurrency": None}).concurrency == 6


def test_precedence_for_schema_includes_graphile_workers_variable(tmp_path: Path) -> None:
    text = "schema: from_file\n"
    assert load(tmp_path, text).schema == "from_file"
    env = {"GRAPHILE_WORKER_SCHEMA": "from_graphile"}
    assert load(tmp_path, text, environ=env).schema == "from_graphile"
    env["KONGTASK_SCHEMA"] = "from_kongtask"
    assert load(tmp_path, text, environ=env).schema == "from_kongtask"
    assert load(tmp_path, text, environ=env, overrides={"schema": "flag"}).schema == "flag"


def test_precedence_for_nested_log_keys(tmp_path: Path) -> None:
    text = "log: {level: warning, format: json}\n"
    env = {"KONGTASK_LOG_LEVEL": "error"}
    config = load(tmp_path, text, environ=env)
    assert config.log == LogConfig(level="error", format="json")
    config = load(tmp_path, text, environ=env, overrides={"log.level": "debug"})
    assert config.log == LogConfig(level="debug", format="json")


def test_precedence_for_the_connection(tmp_path: Path) -> None:
    text = "connection: postgresql://file@db/app\n"
    assert load(tmp_path, text).connection == "postgresql://file@db/app"
    env = {"DATABASE_URL": "postgresql://env@db/app"}
    assert load(tmp_path, text, environ=env).connection == "postgresql://env@db/app"
    flag = {"connection": "postgresql://flag@db/app"}
    assert load(tmp_path, text, environ=env, overrides=flag).connection == (
        "postgresql://flag@db/app"
    )
    assert load_config(None, environ={}).connection is None


def test_env_values_are_typed_like_yaml(tmp_path: Path) -> None:
    env = {
        "KONGTASK_POLL_INTERVAL": "0.25",
        "KONGTASK_MIGRATE": "0",
        "KONGTASK_JOB_TIMEOUT": "null",
        "KONGTASK_SCHEMA": "2024",  # a string key stays a string
        "KONGTASK_SHUTDOWN_TIMEOUT": "",  # empty means unset
    }
    config = load(tmp_path, "job_timeout: 5\n", environ=env)
    assert config.poll_interval == 0.25
    assert config.migrate is False
    assert config.job_timeout is None
    assert config.schema == "2024"
    assert config.shutdown_timeout == 30.0


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        (
            "KONGTASK_CONCURRENCY",
            "four",
            "environment variable KONGTASK_CONCURRENCY: "
            "expected an integer between 1 and 1024, got 'four'",
        ),
        (
            "KONGTASK_LOG_FORMAT",
            "xml",
            "environment variable KONGTASK_LOG_FORMAT: expected one of text, json, got 'xml'",
        ),
        (
            "KONGTASK_TIMEZONE",
            "Nowhere",
            "environment variable KONGTASK_TIMEZONE: unknown time zone 'Nowhere'",
        ),
    ],
)
def test_invalid_env_value_names_the_variable(variable: str, value: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, environ={variable: value})
    assert caught.value.message == expected


def test_invalid_flag_value_names_the_flag() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, environ={}, overrides={"concurrency": 0})
    assert caught.value.message == "--concurrency: expected an integer between 1 and 1024, got 0"


def test_a_bad_file_value_is_an_error_even_when_overridden(tmp_path: Path) -> None:
    message = error_of(tmp_path, "concurrency: lots\n", environ={"KONGTASK_CONCURRENCY": "2"})
    assert ":1: concurrency:" in message


def test_conflict_across_layers_blames_the_later_setting(tmp_path: Path) -> None:
    message = error_of(tmp_path, "crontab: '* * * * * x'\n", environ={"KONGTASK_CRONTAB_FILE": "c"})
    assert message.startswith("environment variable KONGTASK_CRONTAB_FILE: crontab and")


# --- the table itself --------------------------------------------------------------------------


def test_every_key_documents_its_default() -> None:
    keys = list(KEYS)
    for key in KEYS:
        if isinstance(key.type, Section):
            keys.extend(key.type.keys)
    for key in keys:
        assert "default" in key.doc.lower(), f"{key.name}: doc does not state the default"
        assert key.type.describe()


def test_env_variable_names() -> None:
    names = env_variables()
    assert names["KONGTASK_CONCURRENCY"] == "concurrency"
    assert names["KONGTASK_LOG_LEVEL"] == "log.level"
    assert names["KONGTASK_LOG_FORMAT"] == "log.format"
    assert "KONGTASK_TASKS" not in names
    assert "KONGTASK_CONNECTION" not in names  # DATABASE_URL is the environment's way


def test_example_config_loads_and_lists_every_key() -> None:
    path = REPO / "conf" / "kongtask.yaml"
    config = load_config(path, environ={})
    assert config.schema == "graphile_worker"
    listed = yaml.safe_load(path.read_text())
    assert set(listed) == {key.name for key in KEYS}


def test_where_names_the_line_of_a_key_or_of_its_section(tmp_path: Path) -> None:
    text = "schema: s\n\nmetrics:\n  host: 0.0.0.0\n  port: 19464\nlog: {}\n"
    config = load(tmp_path, text, environ={"KONGTASK_CONCURRENCY": "3"})
    file = str(tmp_path / "kongtask.yaml")
    assert config.where("metrics.port") == f"{file}:5"
    assert config.where("metrics.host") == f"{file}:4"
    assert config.where("log.level") == f"{file}:6"  # left at its default under `log: {}`
    assert config.where("concurrency") == "environment variable KONGTASK_CONCURRENCY"
    assert config.where("poll_interval") == file  # a default: blame the file
    assert load(tmp_path, "metrics: {}\n").where("metrics.port") == f"{file}:1"
    assert load_config(None, environ={}).where("metrics.port") == "configuration"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("concurrency: 0", ":4: tasks.send.concurrency: a cap must be at least 1"),
        ("concurrency: -2", ":4: tasks.send.concurrency: a cap must be at least 1"),
        ("concurrency: 1.5", ":4: tasks.send.concurrency: expected a whole number of at least 1"),
        ("concurrency: 'three'", ":4: tasks.send.concurrency: expected a whole number"),
        ("rate: 10/fortnight", ":4: tasks.send.rate: expected a rate of the form N/s"),
        ("rate: 0/s", ":4: tasks.send.rate: a rate must allow at least 1 start per window"),
        ("rate: 10", ":4: tasks.send.rate: expected a rate of the form N/s, N/min or N/h"),
        ("burst: 3", ":4: unknown key 'tasks.send.burst'"),
    ],
)
def test_bad_caps_name_the_key_and_line(tmp_path: Path, value: str, expected: str) -> None:
    assert expected in error_of(tmp_path, f"tasks:\n  send:\n    handler: m:f\n    {value}\n")


def test_caps_are_read(tmp_path: Path) -> None:
    text = (
        "tasks:\n  call_partner: {handler: 'm:f', concurrency: 3, rate: 10/s}\n"
        "  thumb: {handler: 'm:g', rate: 5 / min}\n  plain: m:h\n"
    )
    tasks = load(tmp_path, text).tasks
    assert (tasks["call_partner"].concurrency, tasks["call_partner"].rate) == (3, Rate(10, 1))
    assert tasks["thumb"].rate == Rate(5, 60) and str(tasks["thumb"].rate) == "5/min"
    assert (tasks["plain"].concurrency, tasks["plain"].rate) == (None, None)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("7d", 604800.0), ("24h", 86400.0), ("90m", 5400.0), ("45s", 45.0), ("2.5h", 9000.0)],
)
def test_retention_keys_take_durations_with_units(tmp_path: Path, text: str, seconds: float):
    path = tmp_path / "kongtask.yaml"
    path.write_text(f"keep_completed: {text}\nstats_retention: {text}\n")
    config = load_config(path, environ={})
    assert (config.keep_completed, config.stats_retention) == (seconds, seconds)


def test_retention_defaults_and_bad_durations(tmp_path: Path) -> None:
    config = load_config(None, environ={})
    assert (config.stats_retention, config.keep_completed) == (7 * 86400.0, None)
    path = tmp_path / "kongtask.yaml"
    path.write_text("tasks: {}\nkeep_completed: 3 weeks\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert str(caught.value) == (
        f"{path}:2: keep_completed: expected a duration > 0 (seconds, or a number with s, m, "
        "h or d: 24h, 7d) or null, got '3 weeks'"
    )
    with pytest.raises(ConfigError, match="KONGTASK_STATS_RETENTION: expected a duration > 0"):
        load_config(None, environ={"KONGTASK_STATS_RETENTION": "0"})
