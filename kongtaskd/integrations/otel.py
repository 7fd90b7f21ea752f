"""OpenTelemetry: each job run is a span ``kongtaskd.job``, a child of the enqueuer's trace.

Where the trace context travels: ``kongtaskd.add_job``/``add_jobs`` (every driver, and
``ctx.add_job``), when the app has imported ``opentelemetry`` and a span is recording,
add a reserved key to an object payload (or to a null one)::

    {"...the app's keys...": ..., "_kongtaskd": {"traceparent": "00-<trace>-<span>-01"}}

A payload is the one place of graphile-worker's ``jobs`` row that graphile-worker itself
never interprets: ``flags`` take part in claiming (``forbidden_flags``), ``key``/``queue_name``
have meaning, and there is no spare column. kongtaskd's children take the key out before the
hooks and the handler see the payload; a Node worker's task sees it (and can ignore it).
Array and scalar payloads carry no trace context. The W3C propagator is used directly,
not the globally configured one, so the stored form is always ``traceparent``.

The span's attributes: ``kongtaskd.job.id``, ``kongtaskd.job.task``, ``kongtaskd.job.queue``
(when the job has one), ``kongtaskd.job.attempt`` and ``kongtaskd.job.outcome`` (success or
failure; a failure also records the exception and sets the status to ERROR). The handler runs
with the span current, so the spans it makes are children of the job's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

#: The reserved payload key (an object: ``traceparent``, ``tracestate``).
TRACE_KEY = "_kongtaskd"


def with_trace_context(payload: Any) -> Any:
    """``payload`` plus the current span's W3C trace context (a copy; unchanged when there is
    no valid current span, or the payload is not an object)."""
    if payload is not None and not isinstance(payload, dict):
        return payload
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    if not trace.get_current_span().get_span_context().is_valid:
        return payload
    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    if not carrier:
        return payload
    return {**(payload or {}), TRACE_KEY: carrier}


def split_trace_context(payload: Any) -> tuple[Any, Mapping[str, str] | None]:
    """The payload as the app enqueued it, and the trace context kongtaskd added (or None)."""
    if not isinstance(payload, dict) or TRACE_KEY not in payload:
        return payload, None
    rest = {key: value for key, value in payload.items() if key != TRACE_KEY}
    carrier = payload[TRACE_KEY]
    if not isinstance(carrier, dict):
        return rest, None
    return rest, {str(k): str(v) for k, v in carrier.items()}


class OtelIntegration:
    name = "opentelemetry"

    def __init__(self) -> None:
        from opentelemetry import trace

        from kongtaskd import __version__

        self.tracer = trace.get_tracer("kongtaskd", __version__)

    @contextlib.contextmanager
    def around(self, job: Any, trace_context: Mapping[str, str] | None) -> Iterator[None]:
        from opentelemetry.trace import SpanKind, Status, StatusCode
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        parent = TraceContextTextMapPropagator().extract(trace_context) if trace_context else None
        attributes: dict[str, Any] = {
            "kongtaskd.job.id": job.id,
            "kongtaskd.job.task": job.task_identifier,
            "kongtaskd.job.attempt": job.attempts,
        }
        if job.queue_name:
            attributes["kongtaskd.job.queue"] = job.queue_name
        with self.tracer.start_as_current_span(
            "kongtaskd.job",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                yield
            except BaseException as exc:  # JobInterrupted too: the run failed
                span.set_attribute("kongtaskd.job.outcome", "failure")
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
                raise
            span.set_attribute("kongtaskd.job.outcome", "success")

    def flush(self, seconds: float) -> None:
        from opentelemetry import trace

        provider = trace.get_tracer_provider()
        force_flush = getattr(provider, "force_flush", None)
        if force_flush is not None:
            force_flush(int(seconds * 1000))
