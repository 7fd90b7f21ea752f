"""Prometheus metrics of one daemon, served from the supervisor's own event loop.

The exposition is prometheus-client's (``generate_latest``); the serving is ours: the
listening socket sits in the supervisor's selector and each scrape is answered inline.
prometheus-client's ``start_http_server`` would run a thread in the supervisor, and a
thread's locks must not be inherited by forked children. Children send nothing extra:
every count is derived from the outcome messages they already send over their pipes.

Off by default (``metrics: null``); ``metrics: {host: 127.0.0.1, port: 9464}`` turns it on.
"""

from __future__ import annotations

import logging
import os
import selectors
import socket
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from kongtaskd import tunables

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

# prometheus_client (and the http.server it pulls in) is imported only when metrics are on:
# a daemon without `metrics:` starts ~15 ms faster.

log = logging.getLogger("kongtaskd.metrics")

#: Job durations span milliseconds (no-op jobs) to hours (reports): wide buckets.
DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600)
CLAIM_BUCKETS = (0, 1, 2, 4, 8, 16, 32, 64, 128, 256)

#: Why a child is replaced (``kongtaskd_child_restarts_total{reason}``; fleet.count_restart).
RESTART_REASONS = ("start_failed", "timeout", "died", "recycled", "reload")


class NullMetrics:
    """The hooks the supervisor calls, doing nothing: metrics are off."""

    registry: CollectorRegistry | None = None

    def know_tasks(self, tasks: Iterable[str]) -> None: ...
    def job_started(self, task: str) -> None: ...
    def job_succeeded(self, task: str, seconds: float) -> None: ...
    def job_failed(self, task: str, seconds: float | None) -> None: ...
    def job_retried(self, task: str) -> None: ...
    def job_timed_out(self, task: str) -> None: ...
    def child_restarted(self, reason: str) -> None: ...
    def claimed(self, count: int) -> None: ...
    def notified(self) -> None: ...
    def reconnected(self) -> None: ...
    def set_children(self, busy: int, idle: int) -> None: ...
    def set_queue_depth(self, ready: int, scheduled: int, locked: int) -> None: ...


class Metrics(NullMetrics):
    """The same hooks, feeding a prometheus-client registry."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = r = CollectorRegistry()
        by_task = ["task"]
        self.started = Counter(
            "kongtaskd_jobs_started", "Jobs handed to a child", by_task, registry=r
        )
        self.succeeded = Counter(
            "kongtaskd_jobs_succeeded", "Jobs whose handler returned", by_task, registry=r
        )
        self.failed = Counter(
            "kongtaskd_jobs_failed",
            "Job attempts that failed (raised, died, timed out)",
            by_task,
            registry=r,
        )
        self.retried = Counter(
            "kongtaskd_jobs_retried", "Failed attempts that will be retried", by_task, registry=r
        )
        self.timed_out = Counter(
            "kongtaskd_jobs_timed_out", "Jobs stopped at their job_timeout", by_task, registry=r
        )
        self.duration = Histogram(
            "kongtaskd_job_duration_seconds",
            "Handler run time, row load to outcome",
            by_task,
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "kongtaskd_queue_depth", "Jobs in the table by state (sampled)", ["state"], registry=r
        )
        self.children = Gauge(
            "kongtaskd_children", "Child processes by state", ["state"], registry=r
        )
        self.child_restarts = Counter(
            "kongtaskd_child_restarts", "Children replaced, by reason", ["reason"], registry=r
        )
        self.claim_size = Histogram(
            "kongtaskd_claim_batch_size",
            "Jobs claimed per claim statement",
            buckets=CLAIM_BUCKETS,
            registry=r,
        )
        self.notify_wakeups = Counter(
            "kongtaskd_notify_wakeups", "jobs:insert notifications received", registry=r
        )
        self.reconnects = Counter(
            "kongtaskd_database_reconnects", "Supervisor database reconnections", registry=r
        )
        # Prometheus practice: a labelled series that is absent until its first event breaks
        # rate() and alerts, so every known label value is exported at 0 from the start.
        for reason in RESTART_REASONS:
            self.child_restarts.labels(reason)
        self.known_tasks: set[str] = set()
        self.by_task = (
            self.started,
            self.succeeded,
            self.failed,
            self.retried,
            self.timed_out,
            self.duration,
        )

    def know_tasks(self, tasks: Iterable[str]) -> None:
        """Export every per-task series of these tasks (at 0 if nothing happened yet)."""
        for task in tasks:
            if task in self.known_tasks:
                continue
            self.known_tasks.add(task)
            for series in self.by_task:
                series.labels(task)

    def job_started(self, task: str) -> None:
        self.started.labels(task).inc()

    def job_succeeded(self, task: str, seconds: float) -> None:
        self.succeeded.labels(task).inc()
        self.duration.labels(task).observe(seconds)

    def job_failed(self, task: str, seconds: float | None) -> None:
        self.failed.labels(task).inc()
        if seconds is not None:
            self.duration.labels(task).observe(seconds)

    def job_retried(self, task: str) -> None:
        self.retried.labels(task).inc()

    def job_timed_out(self, task: str) -> None:
        self.timed_out.labels(task).inc()

    def child_restarted(self, reason: str) -> None:
        self.child_restarts.labels(reason).inc()

    def claimed(self, count: int) -> None:
        self.claim_size.observe(count)

    def notified(self) -> None:
        self.notify_wakeups.inc()

    def reconnected(self) -> None:
        self.reconnects.inc()

    def set_children(self, busy: int, idle: int) -> None:
        self.children.labels("busy").set(busy)
        self.children.labels("idle").set(idle)

    def set_queue_depth(self, ready: int, scheduled: int, locked: int) -> None:
        self.queue_depth.labels("ready").set(ready)
        self.queue_depth.labels("scheduled").set(scheduled)
        self.queue_depth.labels("locked").set(locked)


class MetricsServer:
    """A tiny HTTP endpoint in the supervisor's selector: ``GET /metrics`` (any path works).

    Requests are read without blocking; the (small) response is written with a short
    timeout, so a stuck scraper costs the loop at most ``METRICS_SEND_TIMEOUT``.
    """

    def __init__(
        self,
        metrics: NullMetrics,
        host: str,
        port: int,
        selector: selectors.BaseSelector,
        refresh: Callable[[], None],
    ) -> None:
        self.metrics = metrics
        self.selector = selector
        self.refresh = refresh
        self.sock = socket.create_server((host, port), reuse_port=False)
        self.sock.setblocking(False)
        self.pending: dict[socket.socket, tuple[bytearray, float]] = {}
        selector.register(self.sock, selectors.EVENT_READ, self)
        log.info("metrics at http://%s:%d/metrics", host, self.sock.getsockname()[1])

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def on_readable(self, sock: socket.socket) -> None:
        if sock is self.sock:
            self.accept()
        else:
            self.read(sock)

    def accept(self) -> None:
        try:
            client, _ = self.sock.accept()
        except (BlockingIOError, InterruptedError):
            return
        client.setblocking(False)
        self.pending[client] = (bytearray(), time.monotonic())
        self.selector.register(client, selectors.EVENT_READ, self)

    def read(self, client: socket.socket) -> None:
        buffer, _since = self.pending[client]
        try:
            chunk = client.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        buffer += chunk
        if not chunk or len(buffer) > 16384:
            self.drop(client)
        elif b"\r\n\r\n" in buffer:
            self.answer(client, bytes(buffer))

    def answer(self, client: socket.socket, request: bytes) -> None:
        if not request.startswith((b"GET ", b"HEAD ")):
            body, status, ctype = b"only GET\n", "405 Method Not Allowed", "text/plain"
        else:
            self.refresh()
            assert self.metrics.registry is not None
            from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

            body = generate_latest(self.metrics.registry)
            status, ctype = "200 OK", CONTENT_TYPE_LATEST
        head = (
            f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
        try:
            client.setblocking(True)
            client.settimeout(tunables.METRICS_SEND_TIMEOUT)
            client.sendall(head + (b"" if request.startswith(b"HEAD ") else body))
        except OSError:
            pass
        self.drop(client)

    def drop(self, client: socket.socket) -> None:
        self.pending.pop(client, None)
        try:
            self.selector.unregister(client)
        except (KeyError, ValueError):
            pass
        client.close()

    def expire(self) -> None:
        """Close connections that never sent a whole request."""
        cutoff = time.monotonic() - tunables.METRICS_SEND_TIMEOUT
        for client, (_buffer, since) in list(self.pending.items()):
            if since < cutoff:
                self.drop(client)

    def close(self) -> None:
        for client in list(self.pending):
            self.drop(client)
        try:
            self.selector.unregister(self.sock)
        except (KeyError, ValueError):
            pass
        self.sock.close()

    def forget_in_child(self) -> None:
        """In a fresh fork: close our sockets' fds without touching the selector."""
        for sock in [self.sock, *self.pending]:
            try:
                os.close(sock.detach())
            except OSError:
                pass
