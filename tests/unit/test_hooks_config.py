"""The ``hooks`` and ``sentry`` keys, the hooks' guard, and the trace-context payload key."""

from __future__ import annotations

import logging

import pytest

from kongtaskd import redact
from kongtaskd.config import SentryConfig, load_config_mapping
from kongtaskd.errors import ConfigError
from kongtaskd.hooks import Hooks
from kongtaskd.integrations.otel import TRACE_KEY, split_trace_context, with_trace_context
from kongtaskd.job import Job


def load(**data: object):  # type: ignore[no-untyped-def]
    return load_config_mapping({"tasks": {"t": "m:f"}, **data}, "settings.KONGTASKD", environ={})


def test_hooks_and_sentry_default_to_off() -> None:
    config = load()
    assert config.hooks is None and config.sentry is None


def test_sentry_section_and_its_dsn_is_a_secret() -> None:
    config = load(sentry={"dsn": "https://f00dkey1234@sentry.example/7", "environment": "x"})
    assert config.sentry == SentryConfig("https://f00dkey1234@sentry.example/7", "x")
    assert "f00dkey1234" not in redact.scrub("event for https://f00dkey1234@sentry.example/7")
    assert load(sentry={}).sentry == SentryConfig(None, None)


def test_an_unknown_sentry_key_is_named() -> None:
    expected = r"unknown key 'sentry.dns' \(did you mean 'sentry.dsn'\?\)"
    with pytest.raises(ConfigError, match=expected):
        load(sentry={"dns": "https://k@h/1"})


def test_hooks_must_be_a_module_name_string() -> None:
    with pytest.raises(ConfigError, match=r"hooks: expected a string or null, got 3"):
        load(hooks=3)


def job() -> Job:
    return Job.from_row({"id": 7, "task_identifier": "t", "payload": {}, "attempts": 1})


def test_a_raising_hook_is_logged_and_the_others_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[str] = []

    class Broken:
        name = "broken"

        def on_job_failure(self, job: Job, error: BaseException, will_retry: bool) -> None:
            raise ValueError("hook bug")

    class Fine:
        name = "fine"

        def on_job_failure(self, job: Job, error: BaseException, will_retry: bool) -> None:
            seen.append(f"{error} {will_retry}")

    with caplog.at_level(logging.ERROR, logger="kongtaskd.hooks"):
        Hooks([Broken(), Fine()]).failed(job(), RuntimeError("boom"), True)
    assert seen == ["boom True"]
    assert "hook broken.on_job_failure raised for job 7" in caplog.text


def test_trace_context_travels_only_in_object_payloads_with_an_active_span() -> None:
    from opentelemetry.sdk.trace import TracerProvider

    tracer = TracerProvider().get_tracer("t")
    assert with_trace_context({"a": 1}) == {"a": 1}  # no span: unchanged
    with tracer.start_as_current_span("s") as span:
        traced = with_trace_context({"a": 1})
        assert with_trace_context([1, 2]) == [1, 2]
        assert set(with_trace_context(None)) == {TRACE_KEY}
    trace_id = format(span.get_span_context().trace_id, "032x")
    assert traced["a"] == 1 and traced[TRACE_KEY]["traceparent"].split("-")[1] == trace_id
    payload, carrier = split_trace_context(traced)
    assert payload == {"a": 1} and carrier == traced[TRACE_KEY]
    assert split_trace_context({"a": 1}) == ({"a": 1}, None)
    assert split_trace_context({TRACE_KEY: "junk", "b": 2}) == ({"b": 2}, None)
