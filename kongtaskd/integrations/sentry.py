"""Failed jobs to Sentry: with ``sentry-sdk`` initialised in the child (by the app's hook or
handler modules, or by ``sentry: {dsn: ...}`` in the config), every failed job is captured
with its exception and, as tags, ``kongtaskd.job_id``, ``kongtaskd.task``,
``kongtaskd.attempts`` and ``kongtaskd.queue``; the ``kongtaskd`` context adds
max_attempts, will_retry and payload_bytes (the payload itself is not sent: it may hold
personal data). Flushed before the child exits (``os._exit`` skips the SDK's atexit flush).
"""

from __future__ import annotations

import json
from typing import Any


def init(config: Any) -> None:
    """``sentry_sdk.init`` from the config's ``sentry`` section (a dsn of None: the SDK reads
    SENTRY_DSN itself)."""
    import sentry_sdk

    options: dict[str, Any] = {}
    if config.dsn is not None:
        options["dsn"] = config.dsn
    if config.environment is not None:
        options["environment"] = config.environment
    sentry_sdk.init(**options)


def active() -> bool:
    """A Sentry client with a DSN is set up in this process."""
    import sentry_sdk

    return bool(sentry_sdk.get_client().is_active())


def payload_bytes(payload: Any) -> int:
    try:
        return len(json.dumps(payload, separators=(",", ":"), default=str).encode())
    except (TypeError, ValueError):
        return -1


class SentryIntegration:
    name = "sentry"

    def on_job_failure(self, job: Any, error: BaseException, will_retry: bool) -> None:
        import sentry_sdk

        with sentry_sdk.new_scope() as scope:
            scope.set_tag("kongtaskd.job_id", str(job.id))
            scope.set_tag("kongtaskd.task", job.task_identifier)
            scope.set_tag("kongtaskd.attempts", str(job.attempts))
            if job.queue_name:
                scope.set_tag("kongtaskd.queue", job.queue_name)
            scope.set_context(
                "kongtaskd",
                {
                    "id": job.id,
                    "task": job.task_identifier,
                    "queue": job.queue_name,
                    "attempts": job.attempts,
                    "max_attempts": job.max_attempts,
                    "will_retry": will_retry,
                    "payload_bytes": payload_bytes(job.payload),
                },
            )
            sentry_sdk.capture_exception(error)

    def flush(self, seconds: float) -> None:
        import sentry_sdk

        sentry_sdk.flush(timeout=seconds)


def secrets(config: Any, environ: Any) -> list[str]:
    """What no log line may show: the DSN (the section's, SENTRY_DSN) and its keys."""
    found: list[str] = []
    # SENTRY_DSN too, with or without the section: a hook module may init the SDK from it.
    for dsn in (getattr(config, "dsn", None), environ.get("SENTRY_DSN")):
        if not dsn:
            continue
        found.append(dsn)
        # https://<public key>[:<secret>]@host/project: the key is the credential.
        credentials = dsn.partition("://")[2].partition("@")
        if credentials[1]:
            key, _, secret = credentials[0].partition(":")
            found += [part for part in (key, secret) if part]
    return found
