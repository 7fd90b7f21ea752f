"""Job hooks (``hooks:``), Sentry and OpenTelemetry in a real daemon's children.

The hook modules are written by each test into its tmp_path (on ``python_path``); they
report to files, since children end in ``os._exit``. Sentry posts its real envelopes to an
``http.server`` of the test (no network); OpenTelemetry's SDK exports through a batch
processor whose delay is far longer than the test, so a span reaches the file only if the
child flushed before exiting.
"""

from __future__ import annotations

import gzip
import http.server
import json
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from tests.acceptance.test_daemon import add_job, jobs_left
from tests.support import wait_for
from tests.support.daemon import FIXTURES, Daemon, prepare_database, query, write_config


@pytest.fixture()
def db(fresh_dsn: str) -> str:
    prepare_database(fresh_dsn)
    return fresh_dsn


def lines_of(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


RECORDING_HOOKS = """
import json, os

OUT = {out!r}

def _write(**record):
    with open(OUT, "a") as f:
        f.write(json.dumps(record) + "\\n")

def on_job_start(job):
    _write(hook="start", id=job.id, task=job.task_identifier, payload=job.payload)

def on_job_success(job, seconds):
    _write(hook="success", id=job.id, seconds=seconds)

def on_job_failure(job, error, will_retry):
    _write(hook="failure", id=job.id, error=repr(error), will_retry=will_retry)
"""

RAISING_HOOKS = """
def on_job_start(job):
    raise RuntimeError("start hook broke")

def on_job_success(job, seconds):
    raise RuntimeError("success hook broke")

def on_job_failure(job, error, will_retry):
    raise RuntimeError("failure hook broke")
"""


def test_hooks_see_start_success_and_failure_with_will_retry(db: str, tmp_path: Path) -> None:
    out = tmp_path / "hooks.jsonl"
    (tmp_path / "recording_hooks.py").write_text(RECORDING_HOOKS.format(out=str(out)))
    config = write_config(
        tmp_path,
        db,
        concurrency=1,
        python_path=[str(FIXTURES), str(tmp_path)],
        hooks="recording_hooks",
    )
    ok = add_job(db, "noop", {"n": 1})
    retried = add_job(db, "fail", {}, max_attempts=2)
    final = add_job(db, "fail", {}, max_attempts=1)
    with Daemon(config) as daemon:
        daemon.wait_ready()
        wait_for(lambda: len(lines_of(out)) >= 6, timeout=60, what="six hook calls")
        assert daemon.stop() == 0
    records = lines_of(out)
    by_job = {job: [r for r in records if r["id"] == job] for job in (ok, retried, final)}
    assert [r["hook"] for r in by_job[ok]] == ["start", "success"]
    assert by_job[ok][0]["payload"] == {"n": 1} and by_job[ok][0]["task"] == "noop"
    assert by_job[ok][1]["seconds"] >= 0
    assert [r["hook"] for r in by_job[retried]] == ["start", "failure"]
    assert "asked to fail (attempt 1)" in by_job[retried][1]["error"]
    assert by_job[retried][1]["will_retry"] is True
    assert [r["hook"] for r in by_job[final]] == ["start", "failure"]
    assert by_job[final][1]["will_retry"] is False


def test_a_raising_hook_is_logged_and_changes_no_outcome(db: str, tmp_path: Path) -> None:
    (tmp_path / "raising_hooks.py").write_text(RAISING_HOOKS)
    config = write_config(
        tmp_path,
        db,
        concurrency=1,
        python_path=[str(FIXTURES), str(tmp_path)],
        hooks="raising_hooks",
    )
    ok = add_job(db, "noop", {})
    failing = add_job(db, "fail", {}, max_attempts=1)
    with Daemon(config) as daemon:
        daemon.wait_ready()

        def settled() -> bool:
            rows = query(db, "select id, last_error from graphile_worker._private_jobs")
            return len(rows) == 1 and rows[0][1] is not None

        wait_for(settled, timeout=60, what="the ok job gone, the failing one failed")
        wait_for(lambda: "failure hook broke" in daemon.log(), timeout=30, what="the failure hook")
        assert daemon.stop() == 0
        log = daemon.log()
    ((job_id, last_error),) = query(db, "select id, last_error from graphile_worker._private_jobs")
    assert job_id == failing
    assert last_error.startswith("RuntimeError: asked to fail (attempt 1)")
    assert "hook broke" not in last_error
    assert f"hook raising_hooks.on_job_start raised for job {ok}" in log
    assert f"hook raising_hooks.on_job_success raised for job {ok}" in log
    assert f"hook raising_hooks.on_job_failure raised for job {failing}" in log


def test_a_hooks_module_with_a_misspelt_hook_fails_the_start(db: str, tmp_path: Path) -> None:
    (tmp_path / "typo_hooks.py").write_text("def on_job_fail(job, error, will_retry):\n    pass\n")
    config = write_config(
        tmp_path, db, python_path=[str(FIXTURES), str(tmp_path)], hooks="typo_hooks"
    )
    with Daemon(config) as daemon:
        code = daemon.wait(timeout=60)
        log = daemon.log()
    assert code != 0
    assert "hooks: module 'typo_hooks' defines on_job_fail, which is not a hook" in log


def test_a_hooks_module_that_does_not_import_fails_the_start(db: str, tmp_path: Path) -> None:
    (tmp_path / "broken_hooks.py").write_text("def on_job_start(job):\n    pass\nboom = 1 / 0\n")
    config = write_config(
        tmp_path, db, python_path=[str(FIXTURES), str(tmp_path)], hooks="broken_hooks"
    )
    with Daemon(config) as daemon:
        code = daemon.wait(timeout=60)
        log = daemon.log()
    assert code != 0
    assert "hooks: cannot import module 'broken_hooks'" in log
    assert "broken_hooks.py:3" in log and "ZeroDivisionError" in log


# --- OpenTelemetry ------------------------------------------------------------------------

OTEL_HOOKS = """
import json
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

OUT = {out!r}


class FileExporter(SpanExporter):
    def export(self, spans):
        with open(OUT, "a") as f:
            for span in spans:
                f.write(json.dumps({{
                    "name": span.name,
                    "trace_id": format(span.context.trace_id, "032x"),
                    "span_id": format(span.context.span_id, "016x"),
                    "parent": format(span.parent.span_id, "016x") if span.parent else None,
                    "attributes": dict(span.attributes),
                    "status": span.status.status_code.name,
                }}) + "\\n")
        return SpanExportResult.SUCCESS


provider = TracerProvider()
# A delay far beyond the test: only the child's flush at exit exports.
provider.add_span_processor(
    BatchSpanProcessor(FileExporter(), schedule_delay_millis=3_600_000, max_export_batch_size=512)
)
trace.set_tracer_provider(provider)


def on_job_start(job):
    # The handler (and its hooks) run with the job's span current.
    span = trace.get_current_span()
    with open(OUT + ".start", "a") as f:
        f.write(json.dumps({{"id": job.id, "recording": span.is_recording(),
                             "payload": job.payload}}) + "\\n")
"""


def test_each_job_is_a_span_child_of_the_enqueuers_flushed_at_child_exit(
    db: str, tmp_path: Path
) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    import kongtaskd

    out = tmp_path / "spans.jsonl"
    (tmp_path / "otel_hooks.py").write_text(OTEL_HOOKS.format(out=str(out)))
    config = write_config(
        tmp_path,
        db,
        concurrency=1,
        python_path=[str(FIXTURES), str(tmp_path)],
        hooks="otel_hooks",
        max_jobs_per_child=1,  # each child exits after its job: its flush must export
    )
    enqueuer = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(enqueuer))
    tracer = provider.get_tracer("test")
    conn = psycopg2.connect(db)
    try:
        with tracer.start_as_current_span("request"):
            traced = kongtaskd.add_job(conn, "noop", {"n": 1}).id
        failing = kongtaskd.add_job(conn, "fail", None, max_attempts=1, queue_name="q1").id
        conn.commit()
    finally:
        conn.close()
    (request,) = enqueuer.get_finished_spans()
    stored = query(db, "select payload from graphile_worker._private_jobs where id = %s", [traced])
    assert stored[0][0]["_kongtaskd"]["traceparent"].split("-")[1] == format(
        request.context.trace_id, "032x"
    )
    with Daemon(config) as daemon:
        daemon.wait_ready()
        wait_for(lambda: len(lines_of(out)) >= 2, timeout=60, what="both spans exported")
        assert daemon.stop() == 0
    spans = {span["attributes"]["kongtaskd.job.id"]: span for span in lines_of(out)}
    ok, bad = spans[traced], spans[failing]
    assert ok["name"] == bad["name"] == "kongtaskd.job"
    assert ok["trace_id"] == format(request.context.trace_id, "032x")
    assert ok["parent"] == format(request.context.span_id, "016x")
    assert ok["attributes"] == {
        "kongtaskd.job.id": traced,
        "kongtaskd.job.task": "noop",
        "kongtaskd.job.attempt": 1,
        "kongtaskd.job.outcome": "success",
    }
    assert bad["parent"] is None  # enqueued outside any span: a trace of its own
    assert bad["trace_id"] != ok["trace_id"]
    assert bad["attributes"]["kongtaskd.job.queue"] == "q1"
    assert bad["attributes"]["kongtaskd.job.outcome"] == "failure"
    assert bad["status"] == "ERROR"
    # The handler's world: its span is current, and the payload is the app's own.
    starts = {r["id"]: r for r in lines_of(Path(str(out) + ".start"))}
    assert starts[traced] == {"id": traced, "recording": True, "payload": {"n": 1}}
    assert starts[failing]["payload"] == {}


# --- Sentry -------------------------------------------------------------------------------


class Envelopes(http.server.BaseHTTPRequestHandler):
    received: list[bytes]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        encoding = self.headers.get("Content-Encoding", "")
        if encoding == "gzip":
            body = gzip.decompress(body)
        elif encoding == "deflate":
            body = zlib.decompress(body)
        elif encoding == "br":
            import brotli  # type: ignore[import-not-found]

            body = brotli.decompress(body)
        self.server.received.append(body)  # type: ignore[attr-defined]
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture()
def sentry_server() -> Iterator[tuple[str, list[bytes]]]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Envelopes)
    server.received = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://k7publickey@127.0.0.1:{server.server_address[1]}/42", server.received  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()


def events_in(received: list[bytes]) -> list[dict[str, Any]]:
    events = []
    for body in list(received):
        lines = body.split(b"\n")
        for header, item in zip(lines[1::2], lines[2::2], strict=False):
            if json.loads(header).get("type") == "event":
                events.append(json.loads(item))
    return events


SENTRY_HOOKS = """
import sentry_sdk

sentry_sdk.init(dsn={dsn!r}, environment="kt-test")
"""


@pytest.mark.parametrize("initialised_by", ["config", "hooks module"])
def test_a_failed_job_reaches_sentry_with_its_tags_and_context(
    db: str, tmp_path: Path, sentry_server: tuple[str, list[bytes]], initialised_by: str
) -> None:
    dsn, received = sentry_server
    if initialised_by == "config":
        sentry: dict[str, Any] = {"sentry": {"dsn": dsn, "environment": "kt-test"}}
    else:  # imported by the zygote, before the children fork from it
        (tmp_path / "sentry_hooks.py").write_text(SENTRY_HOOKS.format(dsn=dsn))
        sentry = {"hooks": "sentry_hooks", "python_path": [str(FIXTURES), str(tmp_path)]}
    config = write_config(
        tmp_path,
        db,
        concurrency=1,
        max_jobs_per_child=1,  # the event must leave before the child's os._exit
        **sentry,
    )
    failing = add_job(db, "fail", {"blob": "x" * 100}, max_attempts=3)
    add_job(db, "noop", {})
    with Daemon(config) as daemon:
        daemon.wait_ready()
        wait_for(lambda: jobs_left(db) == 1, timeout=60, what="the noop job done")
        wait_for(lambda: events_in(received), timeout=60, what="an event in the envelopes")
        assert daemon.stop() == 0
        log = daemon.log()
    failures = [e for e in events_in(received) if e.get("tags", {}).get("kongtaskd.task") == "fail"]
    assert failures, events_in(received)
    event = failures[0]
    assert event["tags"]["kongtaskd.job_id"] == str(failing)
    assert event["tags"]["kongtaskd.attempts"] == "1"
    assert event["environment"] == "kt-test"
    context = event["contexts"]["kongtaskd"]
    assert context["id"] == failing and context["will_retry"] is True
    assert context["payload_bytes"] == len(json.dumps({"blob": "x" * 100}, separators=(",", ":")))
    (exception,) = event["exception"]["values"]
    assert exception["type"] == "RuntimeError"
    assert exception["value"] == "asked to fail (attempt 1)"
    if initialised_by == "config":
        assert "k7publickey" not in log  # the DSN's key is a secret


SLOW_HOOKS = """
import json, os, time

OUT = {out!r}

def on_job_success(job, seconds):
    with open(OUT, "a") as f:
        f.write(json.dumps({{"in_hook": os.getpid()}}) + "\\n")
    deadline = time.monotonic() + 60
    while not os.path.exists(OUT + ".release") and time.monotonic() < deadline:
        time.sleep(0.01)
    with open(OUT, "a") as f:
        f.write(json.dumps({{"hook_done": os.getpid()}}) + "\\n")
"""


def test_a_sigterm_during_an_end_hook_waits_for_it(db: str, tmp_path: Path) -> None:
    import os
    import signal

    out = tmp_path / "slow.jsonl"
    (tmp_path / "slow_hooks.py").write_text(SLOW_HOOKS.format(out=str(out)))
    config = write_config(
        tmp_path,
        db,
        concurrency=1,
        python_path=[str(FIXTURES), str(tmp_path)],
        hooks="slow_hooks",
    )
    add_job(db, "noop", {})
    with Daemon(config) as daemon:
        daemon.wait_ready()
        wait_for(lambda: lines_of(out), timeout=60, what="the hook running")
        child = lines_of(out)[0]["in_hook"]
        wait_for(lambda: jobs_left(db) == 0, timeout=60, what="the outcome written first")
        os.kill(child, signal.SIGTERM)
        (tmp_path / "slow.jsonl.release").write_text("")

        def gone() -> bool:
            try:
                os.kill(child, 0)
            except ProcessLookupError:
                return True
            return False

        wait_for(gone, timeout=60, what="the child to exit after its hook")
        assert daemon.stop() == 0
    assert lines_of(out) == [{"in_hook": child}, {"hook_done": child}]
